"""In CI, the parity suite must run: a missing dependency fails the run instead of skipping it.

The parity tests (tests/integration/test_parity.py, the CPU benchmark checks) compare the
lean engine with ``transformers`` and skip, via ``pytest.importorskip``, where it is not
installed - right on a laptop, wrong in CI, where a skip would pass silently. When the
``CI`` environment variable is set (GitHub Actions, GitLab and most CI services set it),
a skip because ``transformers`` could not be imported, or because any of
:data:`CI_REQUIRED` could not be imported in the parity suite (:data:`PARITY_SUITE`),
is reported as a failure that says what to install. Elsewhere a missing torch still
skips (a torch-free CI job runs the ONNX tests). tests/conftest.py installs these hooks.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

CI_REQUIRED = ("transformers", "torch", "skimage")
ALWAYS_REQUIRED = ("transformers",)  # the reference only the parity checks use
PARITY_SUITE = ("tests/integration/test_parity.py",)
_IMPORT_SKIP = re.compile(r"could not import '([\w.]+)'")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def ci_failure(reason: str, nodeid: str = "") -> str | None:
    """The failure message for a skip (of the test or module ``nodeid``) that CI must not
    accept, else None."""
    match = _IMPORT_SKIP.search(reason)
    if not in_ci() or match is None:
        return None
    module = match.group(1).split(".")[0]
    in_parity = nodeid.split("::")[0] in PARITY_SUITE
    if module not in ALWAYS_REQUIRED and not (in_parity and module in CI_REQUIRED):
        return None
    return (
        f"{reason}. CI (the CI environment variable is set) must run the parity suite: "
        "install the test dependencies (pip install -e '.[dev,torch]'), "
        "or unset CI to let the suite skip"
    )


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_if_required(report: Any) -> None:
    if report.skipped:
        message = ci_failure(_skip_reason(report), report.nodeid)
        if message is not None:
            report.outcome = "failed"
            report.longrepr = message


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module-level importorskip: the module's collection fails."""
    outcome = yield
    _fail_if_required(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """An importorskip in a test or a fixture: the test fails."""
    outcome = yield
    _fail_if_required(outcome.get_result())
