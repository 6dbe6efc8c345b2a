"""Schemathesis against /openapi.json: no 5xx, and every response matches the schema.

Bounded: a few dozen generated requests per operation, well under a minute.
URLs in generated bodies never leave the machine: DNS answers "no such name".
"""

from __future__ import annotations

import socket

import httpx
import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from test_server_api import Live  # noqa: E402

from blipcap import fetch  # noqa: E402
from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def live(tiny_checkpoint):
    original = fetch._system_resolver

    def no_dns(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fetch._system_resolver = no_dns
    cap = Captioner(str(tiny_checkpoint), backend="torch", device="cpu")
    # Small limits keep generated requests cheap: few tokens, one beam, one caption.
    config = ServerConfig(max_new_tokens=4, max_beams=1, max_captions=2, fetch_timeout=1.0)
    srv = Live(create_app(config, captioner=cap))
    yield srv
    srv.close()
    fetch._system_resolver = original


def operations(url):
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors_and_responses_match_the_schema(live, mode):
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    ops = operations(live.url)
    labels = sorted(op.label for op in ops)
    expected = [
        "GET /livez",
        "GET /metrics",
        "GET /readyz",
        "GET /v1/info",
        "POST /v1/alt-text",
        "POST /v1/captions",
        "POST /v1/social",
    ]
    if "documents" in httpx.get(live.url + "/v1/info").json()["features"]:
        expected.append("POST /v1/documents")
    assert labels == sorted(expected)
    calls = []
    for op in ops:
        strategy = op.as_strategy(generation_mode=GenerationMode(mode))

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=strategy)
        def run(case):
            response = case.call_and_validate(checks=checks, timeout=60)
            calls.append((case.operation.label, response.status_code))

        try:
            run()
        except Unsatisfiable:
            assert mode == "negative"  # nothing to make invalid (no parameters, no body)
    print(sorted(set(calls)))
    statuses = {status for _, status in calls}
    assert len(calls) >= 40
    assert all(status < 500 or status == 503 for status in statuses), statuses
