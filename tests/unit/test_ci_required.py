"""With CI set, a parity test skipped for a missing dependency fails the run (tests/ci_required.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.ci_required import ci_failure

ROOT = Path(__file__).resolve().parents[2]
SKIP = "could not import 'transformers': No module named 'transformers'"


def test_ci_failure_only_in_ci_and_only_for_required_modules(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert ci_failure(SKIP) is None
    monkeypatch.setenv("CI", "false")
    assert ci_failure(SKIP) is None
    monkeypatch.setenv("CI", "true")
    assert "must run the parity suite" in ci_failure(SKIP)
    assert "pip install -e '.[dev,torch]'" in ci_failure(SKIP)
    assert ci_failure("could not import 'ray': No module named 'ray'") is None
    assert ci_failure("needs a CUDA device") is None
    torch = "could not import 'torch': No module named 'torch'"
    assert ci_failure(torch, "tests/unit/test_decoding.py::test_x") is None  # torch-free jobs
    assert "parity suite" in ci_failure(torch, "tests/integration/test_parity.py")
    assert "parity suite" in ci_failure(torch, "tests/integration/test_parity.py::test_greedy")


def _run_suite(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import tests.ci_required as ci_required
            from tests.ci_required import pytest_make_collect_report, pytest_runtest_makereport

            ci_required.ALWAYS_REQUIRED += ("blipcap_missing_module",)
            """
        )
    )
    (tmp_path / "test_module_skip.py").write_text(
        "import pytest\npytest.importorskip('blipcap_missing_module')\n\n\ndef test_a():\n    pass\n"
    )
    (tmp_path / "test_function_skip.py").write_text(
        "import pytest\n\n\ndef test_b():\n    pytest.importorskip('blipcap_missing_module.sub')\n"
        "\n\ndef test_c():\n    pytest.skip('not about a module')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"]
        + ["--continue-on-collection-errors", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_skip_for_a_missing_dependency_fails_in_ci(tmp_path, ci):
    p = _run_suite(tmp_path, ci)
    if ci is None:
        assert p.returncode == 0, p.stdout + p.stderr
        assert "3 skipped" in p.stdout, p.stdout
    else:
        assert p.returncode != 0, p.stdout + p.stderr
        assert "must run the parity suite" in p.stdout, p.stdout
        assert "1 failed" in p.stdout and "1 skipped" in p.stdout and "1 error" in p.stdout, (
            p.stdout
        )
