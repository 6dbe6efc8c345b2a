"""Form fields and JSON fields follow the same rules: one pydantic model validates both."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi")

from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app, features, schemas  # noqa: E402
from blipcap.server.inputs import form_model  # noqa: E402
from tests.helpers import LiveServer as Live  # noqa: E402
from tests.helpers import image_bytes  # noqa: E402

PNG = image_bytes(7)
FAST = '{"max_new_tokens": 3}'


@pytest.fixture(scope="module")
def live(tiny_checkpoint):
    cap = Captioner(str(tiny_checkpoint), backend="torch", device="cpu")
    srv = Live(create_app(ServerConfig(max_wait_ms=1), captioner=cap))
    yield srv
    srv.close()


def form(live: Live, path: str, **fields) -> httpx.Response:
    files = [("files", ("cat.png", PNG, "image/png"))]
    return live.client.post(path, files=files, data=fields)


def json_body(live: Live, path: str, **fields) -> httpx.Response:
    import base64

    images = [{"base64": base64.b64encode(PNG).decode(), "name": "cat.png"}]
    return live.client.post(path, json={"images": images, **fields})


@pytest.mark.parametrize("send", [form, json_body])
def test_unknown_fields_are_refused_with_the_allowed_ones(live, send):
    r = send(live, "/v1/social", platform="mastodon")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "unknown field 'platform'" in detail
    assert "platforms" in detail and "variants" in detail
    r = send(live, "/v1/captions", option=FAST)
    assert r.status_code == 422 and "unknown field 'option'" in r.json()["detail"]


@pytest.mark.parametrize("send", [form, json_body])
@pytest.mark.parametrize(
    "fields, where",
    [
        ({"variants": "11"}, "variants"),
        ({"max_hashtags": "-1"}, "max_hashtags"),
        ({"hashtags": "maybe"}, "hashtags"),
        ({"platforms": "myspace"}, "platforms"),
    ],
)
def test_form_and_json_refuse_the_same_values(live, send, fields, where):
    if send is json_body:  # the JSON spelling of the same values
        fields = {
            k: [v] if k == "platforms" else int(v) if v.lstrip("-").isdigit() else v
            for k, v in fields.items()
        }
    r = send(live, "/v1/social", **fields)
    assert r.status_code == 422, r.text
    assert where in r.json()["detail"]


def test_form_values_are_converted_by_the_model(live):
    r = form(
        live,
        "/v1/social",
        platforms=["x", "mastodon"],
        variants="2",
        attribution="Photo: Jane",
        options=FAST,
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["platform"] for x in results] == ["x", "mastodon"]
    assert len(results[0]["variants"]) == 2
    assert "Photo: Jane" in results[0]["text"]
    r = form(live, "/v1/social", attribution="true", options=FAST)
    assert (
        r.status_code == 200 and "Machine-generated description." in r.json()["results"][0]["text"]
    )


@pytest.mark.parametrize("send", [form, json_body])
def test_document_language_is_checked_the_same_way(live, send):
    if "documents" not in live.client.get("/v1/info").json()["features"]:
        pytest.skip("no OCR engine installed")
    r = send(live, "/v1/documents", lang="Deu")
    assert r.status_code == 422, r.text
    assert "lang" in r.json()["detail"]


@pytest.mark.parametrize(
    "model, multipart",
    [
        (schemas.CaptionsRequest, schemas.MULTIPART_CAPTIONS),
        (schemas.SocialRequest, schemas.MULTIPART_SOCIAL),
        (features.DocumentJson, features.MULTIPART_DOCUMENT),
    ],
)
def test_multipart_schemas_document_the_form_models(model, multipart):
    assert set(multipart["properties"]) == {"files", *form_model(model).model_fields}
    assert multipart["required"] == ["files"] and multipart["properties"]["files"]["minItems"] == 1
