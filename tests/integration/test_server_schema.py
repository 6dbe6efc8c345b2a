"""Schemathesis against /openapi.json with every check it has: the document is the contract.

All of ``schemathesis.checks`` run (no server errors, status codes, content
types, response headers and bodies as documented, schema-invalid requests
refused, schema-valid ones accepted, ...). Bounded: 40 generated requests per
operation and mode, a couple of minutes on two busy cores. URLs in generated
bodies never leave the machine: DNS answers "no such name". Schemathesis is a
test dependency: without it this module fails, it does not skip.
"""

from __future__ import annotations

import socket

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

pytest.importorskip("fastapi")
from test_server_features import indexed  # noqa: E402, F401  (a fixture: a tiny search index)

from blipcap import fetch  # noqa: E402
from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app  # noqa: E402
from tests.helpers import LiveServer as Live  # noqa: E402

EXAMPLES = 40
# A request can match the schema and still be refused for what its data is, which no schema
# can say: file bytes that are not an image (415), an image that is too large or a bomb (413),
# an undecodable image or a URL that cannot be fetched (422), a hash not in the index (404).
# Everything else must be 2xx.
ACCEPTED = ["2xx", "404", "413", "415", "422"]
# A schema-invalid request is refused with a 4xx; with too many files the count is checked first.
REFUSED = ["400", "401", "404", "405", "406", "413", "415", "422", "429"]
# ... a schema-valid one never for its shape, which the schema does say: these 422s mean the schema is wrong.
SHAPE_ERRORS = ("no images", "invalid JSON body", "invalid form fields", "invalid request")


def valid_shape_is_never_refused(ctx, response, case) -> None:
    """A schema-valid request may fail on its data, not with a 422 about its shape."""
    if case.meta.generation.mode.is_positive and response.status_code == 422:
        detail = response.json()["detail"]
        assert not detail.startswith(SHAPE_ERRORS), f"schema-valid request refused: {detail}"


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def live(captioner, indexed):  # noqa: F811
    original = fetch._system_resolver

    def no_dns(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fetch._system_resolver = no_dns
    # Small limits keep generated requests cheap: few tokens, one beam, one caption.
    config = ServerConfig(
        max_new_tokens=4, max_beams=1, max_captions=2, fetch_timeout=1.0, db=str(indexed[1])
    )
    srv = Live(create_app(config, captioner=captioner))
    yield srv
    srv.close()
    fetch._system_resolver = original


def operations(url):
    config = SchemathesisConfig.from_dict(
        {
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ACCEPTED},
                "negative_data_rejection": {"expected-statuses": REFUSED},
            }
        }
    )
    schema = schemathesis.openapi.from_url(url + "/openapi.json", config=config)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_check_passes_against_the_openapi_document(live, mode):
    from schemathesis import GenerationMode

    load_all_checks()
    checks = [*CHECKS.get_all(), valid_shape_is_never_refused]
    ops = operations(live.url)
    labels = sorted(op.label for op in ops)
    expected = [
        "GET /livez",
        "GET /metrics",
        "GET /readyz",
        "GET /v1/info",
        "GET /v1/search",
        "GET /v1/thumbnails/{sha256}",
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
            max_examples=EXAMPLES,
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
    assert len(calls) >= EXAMPLES
