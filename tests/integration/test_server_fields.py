"""Form fields and JSON fields follow the same rules: one pydantic model validates both."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi")

from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app, schemas  # noqa: E402
from blipcap.server.inputs import form_model  # noqa: E402
from blipcap.server.schemas import multipart_schema  # noqa: E402
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


def test_document_language_is_refused_the_same_way_as_json_and_as_a_form(live):
    if "documents" not in live.client.get("/v1/info").json()["features"]:
        pytest.skip("no OCR engine installed")
    answers = [send(live, "/v1/documents", lang="Deu") for send in (form, json_body)]
    assert [r.status_code for r in answers] == [422, 422], [r.text for r in answers]
    as_form, as_json = (r.json()["detail"] for r in answers)
    assert as_form.startswith("invalid form fields: lang: ")
    assert as_json.startswith("invalid JSON body: lang: ")
    assert as_form.split(": ", 1)[1] == as_json.split(": ", 1)[1]


BODIES = {
    "/v1/captions": schemas.CaptionsRequest,
    "/v1/social": schemas.SocialRequest,
    "/v1/alt-text": schemas.AltTextRequest,
    "/v1/documents": schemas.DocumentRequest,
}


def test_every_body_is_documented_from_its_model(live):
    paths = live.client.get("/openapi.json").json()["paths"]
    posts = {path for path, ops in paths.items() if "post" in ops}
    assert posts <= set(BODIES) and {"/v1/captions", "/v1/social", "/v1/alt-text"} <= posts
    for path in posts:
        content = paths[path]["post"]["requestBody"]["content"]
        assert content["multipart/form-data"]["schema"] == multipart_schema(BODIES[path])
        name = BODIES[path].__name__
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}


@pytest.mark.parametrize("model", list(BODIES.values()))
def test_multipart_schemas_are_the_form_models_fields(model):
    schema = multipart_schema(model)
    fields = set(form_model(model).model_fields) - getattr(model, "json_only", set())
    assert set(schema["properties"]) == {"files", *fields}
    assert schema["required"] == ["files"] and schema["additionalProperties"] is False
    json_props = model.model_json_schema()["properties"]
    files = schema["properties"]["files"]
    assert files["minItems"] == json_props["images"]["minItems"] == 1
    assert files.get("maxItems") == json_props["images"].get("maxItems")
    # Each form field carries its model's constraints (a form has no null, and sends objects
    # as JSON text).
    for name in fields - {"options"}:
        form_prop, json_prop = schema["properties"][name], dict(json_props[name])
        json_prop.pop("title", None)
        if {"type": "null"} in json_prop.get("anyOf", []):
            json_prop.pop("default")
            [json_prop_only] = [b for b in json_prop.pop("anyOf") if b != {"type": "null"}]
            json_prop.update(json_prop_only)
        assert form_prop == json_prop, name


def test_a_fragment_is_json_only():
    assert "html" in schemas.AltTextRequest.model_fields
    assert "html" not in multipart_schema(schemas.AltTextRequest)["properties"]
