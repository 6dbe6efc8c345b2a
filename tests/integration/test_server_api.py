"""The HTTP API on a real uvicorn server with the tiny random checkpoint."""

from __future__ import annotations

import base64
import concurrent.futures

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app  # noqa: E402
from tests.helpers import LiveServer as Live  # noqa: E402
from tests.helpers import image_bytes  # noqa: E402


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def live(captioner):
    srv = Live(create_app(ServerConfig(max_wait_ms=5), captioner=captioner))
    yield srv
    srv.close()


FAST = {"max_new_tokens": 5}


def test_probes_and_info(live, tiny_checkpoint):
    assert live.client.get("/livez").json() == {"status": "alive"}
    ready = live.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "model": str(tiny_checkpoint),
        "random_weights": True,
    }
    info = live.client.get("/v1/info").json()
    assert info["features"][:2] == ["captions", "social"]
    assert info["random_weights"] is True and info["backend"] == "torch" and info["device"] == "cpu"
    assert info["platforms"]["x"]["post_limit"] == 280
    assert info["limits"]["max_body_bytes"] == 25_000_000


def test_multipart_records_equal_the_library_records(live, captioner):
    files = [
        ("files", ("a.png", image_bytes(1), "image/png")),
        ("files", ("b.jpg", image_bytes(2, "JPEG"), "image/jpeg")),
    ]
    r = live.client.post("/v1/captions", files=files, data={"options": '{"max_new_tokens": 5}'})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    expected = captioner.caption([image_bytes(1), image_bytes(2, "JPEG")], max_new_tokens=5)
    assert [g["caption"] for g in got] == [e.caption for e in expected]
    assert [g["path"] for g in got] == ["a.png", "b.jpg"]
    for g, e in zip(got, expected, strict=True):
        assert g == {**e.to_record(), "path": g["path"]}
    assert got[0]["random_weights"] is True and got[0]["options"]["max_new_tokens"] == 5


def test_json_base64_data_url_and_preset(live, captioner):
    raw = image_bytes(3)
    body = {
        "images": [
            {"base64": base64.b64encode(raw).decode(), "name": "one.png"},
            {"base64": "data:image/png;base64," + base64.b64encode(raw).decode()},
        ],
        "options": {"preset": "coco", "max_length": 8},
    }
    r = live.client.post("/v1/captions", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    expected = captioner.caption([raw], preset="coco", max_length=8)[0].caption
    assert [x["caption"] for x in results] == [expected, expected]
    assert [x["path"] for x in results] == ["one.png", None]
    assert (
        results[0]["options"]["num_beams"] == 3
        and results[0]["options"]["prompt"] == "a picture of "
    )


def test_some_bad_inputs_become_error_records(live):
    files = [
        ("files", ("good.png", image_bytes(4), "image/png")),
        ("files", ("text.png", b"hello, not an image", "image/png")),
        ("files", ("empty.jpg", b"", "image/jpeg")),
    ]
    r = live.client.post("/v1/captions", files=files, data={"options": '{"max_new_tokens": 5}'})
    assert r.status_code == 200
    results = r.json()["results"]
    assert results[0]["caption"] and results[0]["error"] is None
    assert results[1]["caption"] is None
    assert results[1]["error"]["type"] == "UnsupportedFormatError"
    assert results[1]["error"]["message"].startswith("text.png: not an image")
    assert results[2]["error"]["type"] == "CorruptImageError"
    assert "empty (0 bytes)" in results[2]["error"]["message"]


def bomb_png(width=20000, height=20000) -> bytes:
    """A valid 1x1 PNG whose header claims width x height pixels (nothing decoded yet)."""
    import struct
    import zlib

    raw = image_bytes(0, size=(1, 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return patched + raw[8 + 25 :]


@pytest.mark.parametrize(
    "name, data, status, message",
    [
        ("notes.png", b"just some text\n", 415, "notes.png: not an image"),
        ("cut.png", image_bytes(5)[:60], 422, "cut.png:"),
        ("bomb.png", bomb_png(), 413, "bomb.png:"),
        ("doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", 415, "doc.pdf:"),
    ],
)
def test_single_bad_image_gets_its_status(live, name, data, status, message):
    r = live.client.post("/v1/captions", files=[("files", (name, data, "image/png"))])
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(message)


def test_request_shape_errors(live):
    c = live.client
    r = c.post("/v1/captions", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = c.post("/v1/captions", json={"images": []})
    assert r.status_code == 422 and r.json()["detail"].startswith("invalid JSON body: images")
    r = c.post(
        "/v1/captions", json={"images": [{"url": "http://a.example/x.png", "base64": "AA=="}]}
    )
    assert r.status_code == 422 and "exactly one of 'url' or 'base64'" in r.json()["detail"]
    r = c.post("/v1/captions", json={"images": [{"base64": "%%%"}]})
    assert r.status_code == 422 and r.json()["detail"] == "an image's 'base64' is not valid base64"
    r = c.post(
        "/v1/captions", data={"options": "{}"}, files=[("other", ("a.png", b"x", "image/png"))]
    )
    assert r.status_code == 422
    r = c.post("/v1/captions", files=[("files", ("a.png", image_bytes(1), "image/png"))] * 17)
    assert (
        r.status_code == 413 and "17 images in one request; the limit is 16" in r.json()["detail"]
    )
    r = c.post("/v1/captions", files=[("files", ("a.png", image_bytes(1), "image/png"))] * 40)
    assert r.status_code == 413 and "more than 16 images in one request" in r.json()["detail"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_beams": 0}, "options.num_beams: Input should be greater than or equal to 1"),
        ({"bogus": 1}, "options.bogus: Extra inputs are not permitted"),
        ({"num_captions": 3}, "several captions need --sample or --beams N"),
        ({"max_new_tokens": 300}, "this server allows at most 100 new tokens (asked 300)"),
        ({"num_beams": 9}, "this server allows at most 8 beams (asked 9)"),
        ({"preset": "fancy"}, "options.preset: Input should be 'default' or 'coco'"),
    ],
)
def test_invalid_options(live, options, message):
    img = base64.b64encode(image_bytes(1)).decode()
    r = live.client.post("/v1/captions", json={"images": [{"base64": img}], "options": options})
    assert r.status_code == 422
    assert message in r.json()["detail"]


def test_social_endpoint_fits_each_platform(live):
    files = [("files", ("cat.png", image_bytes(6), "image/png"))]
    data = {
        "platforms": ["x", "bluesky"],
        "hashtags": "true",
        "attribution": "true",
        "variants": "2",
        "options": '{"max_new_tokens": 6}',
    }
    r = live.client.post("/v1/social", files=files, data=data)
    assert r.status_code == 200, r.text
    records = r.json()["results"]
    assert [(x["path"], x["platform"]) for x in records] == [
        ("cat.png", "x"),
        ("cat.png", "bluesky"),
    ]
    for record in records:
        assert record["random_weights"] is True and record["machine_generated"] is True
        assert record["alt_text"].endswith(" Machine-generated description.")
        assert record["text"].endswith("\n\nMachine-generated description.")
        assert record["text_length"] <= record["text_limit"]
        assert record["alt_text_length"] <= record["alt_text_limit"]
        assert record["options"]["do_sample"] is True and record["options"]["num_captions"] == 2
        assert 1 <= len(record["variants"]) <= 2
    assert (records[0]["text_limit"], records[1]["text_limit"]) == (280, 300)
    r = live.client.post("/v1/social", files=files, data={"platforms": ["myspace"]})
    assert r.status_code == 422
    assert "platforms.0: Input should be 'x', 'mastodon'" in r.json()["detail"]


def test_concurrent_requests_share_batches(captioner):
    srv = Live(create_app(ServerConfig(max_wait_ms=300, max_batch_size=8), captioner=captioner))
    try:
        before = srv.state.batcher.stats.batches
        body = {"images": [{"base64": base64.b64encode(image_bytes(7)).decode()}], "options": FAST}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(
                pool.map(lambda _: srv.client.post("/v1/captions", json=body), range(6))
            )
        assert [r.status_code for r in responses] == [200] * 6
        assert len({r.json()["results"][0]["caption"] for r in responses}) == 1
        batches = srv.state.batcher.stats.batches - before
        assert batches < 6  # at least some requests shared a model batch
        metrics = srv.client.get("/metrics").text
        assert 'blipcap_requests_total{route="/v1/captions",status="200"} 6.0' in metrics
        assert f"blipcap_batch_size_count {float(batches + 1)}" in metrics  # + the warm-up
        assert "blipcap_images_captioned_total 7.0" in metrics
        assert "blipcap_queue_depth 0.0" in metrics and "blipcap_ready 1.0" in metrics
    finally:
        srv.close()
