"""The feature endpoints: alt text (images and HTML fragments), documents (real OCR), search."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from blipcap.options import resolve_options

pytest.importorskip("fastapi")

from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app  # noqa: E402
from blipcap.text import to_alt_text  # noqa: E402
from tests.helpers import LiveServer as Live  # noqa: E402
from tests.helpers import image_bytes  # noqa: E402


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, captioner):
    """A SQLite index of three photos, captioned by the tiny model."""
    from blipcap.index import Indexer, IndexOptions, open_store

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / name)
    db = root / "index.db"
    with open_store(db) as store:
        Indexer(
            store,
            captioner,
            options=IndexOptions(caption_options=resolve_options(max_new_tokens=4)),
        ).run([root])
    return root, db


@pytest.fixture(scope="module")
def live(captioner, indexed):
    srv = Live(create_app(ServerConfig(db=str(indexed[1])), captioner=captioner))
    yield srv
    srv.close()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_features_are_listed(live):
    features = live.client.get("/v1/info").json()["features"]
    assert features[:3] == ["captions", "social", "alt-text"]
    assert "search" in features
    paths = live.client.get("/openapi.json").json()["paths"]
    assert {"/v1/alt-text", "/v1/search", "/v1/thumbnails/{sha256}"} <= set(paths)


def test_alt_text_for_images(live, captioner):
    r = live.client.post(
        "/v1/alt-text",
        files=[("files", ("a.png", image_bytes(8), "image/png"))],
        data={"max_chars": "40"},
    )
    assert r.status_code == 200, r.text
    [record] = r.json()["results"]
    caption = captioner.caption([image_bytes(8)])[0].caption
    assert record["caption"] == caption
    assert record["alt_text"] == to_alt_text(caption, 40)
    assert len(record["alt_text"]) <= 40 and record["random_weights"] is True


def test_alt_text_checks_an_html_fragment(live, captioner):
    png = image_bytes(9)
    html = (
        '<p>Our team</p>\n<img src="' + data_uri(png) + '">\n'
        '<img src="IMG_1234.jpg" alt="IMG_1234.jpg">\n'
        '<img src="file:///etc/passwd">\n'
        '<img src="spacer.gif" alt="">\n'
    )
    r = live.client.post("/v1/alt-text", json={"html": html})
    assert r.status_code == 200, r.text
    body = r.json()
    findings = body["findings"]
    assert [f["line"] for f in findings] == [2, 3, 4, 5]
    first, local, file_url, spacer = findings
    caption = captioner.caption([png])[0].caption
    assert first["caption"] == caption and first["proposed_alt"] == to_alt_text(caption)
    assert first["problems"][0]["rule"] == "alt-missing"
    # Paths on the server's disk are never read.
    for f in (local, file_url):
        assert f["caption"] is None
        assert "the server reads only data: URIs and http(s) URLs" in f["image_error"]
        assert f["status"] == "manual"
    assert spacer["purpose"] == "decorative"
    # The fragment comes back with the proposal written in, nothing else changed.
    assert body["html"] == html.replace(
        '<img src="' + data_uri(png) + '">',
        '<img src="' + data_uri(png) + f'" alt="{to_alt_text(caption)}">',
    )
    assert body["random_weights"] is True


def test_a_fragment_is_judged_as_blipcap_alt_text_judges_the_page(live, tiny_checkpoint, tmp_path):
    """The endpoint runs the CLI's engine: SVG titles, linked images and repeats as there."""
    from blipcap.alttext.engine import AltTextOptions, run_alt_text
    from blipcap.alttext.sources import BlipCaptions

    png = data_uri(image_bytes(10))
    svg = (
        "data:image/svg+xml;base64,"
        + base64.b64encode(
            b'<svg xmlns="http://www.w3.org/2000/svg"><title>Sales by region</title></svg>'
        ).decode()
    )
    html = (
        f'<img src="{png}">\n'
        f'<img src="{svg}">\n'
        f'<a href="https://example.org/contact"><img src="{png}"></a>\n'
        f'<img src="{png}" alt="image">\n'
    )
    r = live.client.post("/v1/alt-text", json={"html": html, "max_chars": 80})
    assert r.status_code == 200, r.text
    served = r.json()["findings"]
    page = tmp_path / "page.html"
    page.write_text(html)
    captions = BlipCaptions(str(tiny_checkpoint), backend="torch", device="cpu")
    run = run_alt_text([page], AltTextOptions(max_chars=80), captions=captions)
    keys = ("status", "purpose", "proposed_alt", "reason", "caption", "image_error")
    local = [
        {
            "status": f.status,
            "purpose": f.purpose,
            "proposed_alt": f.proposed,
            "reason": f.reason,
            "caption": f.image.caption if f.image else None,
            "image_error": f.image.error if f.image else None,
        }
        for f in run.findings
    ]
    assert [{k: f[k] for k in keys} for f in served] == local
    svg_finding = served[1]
    assert svg_finding["image_error"] is None and "Sales by region" in svg_finding["proposed_alt"]


def test_alt_text_request_errors(live):
    r = live.client.post("/v1/alt-text", json={"max_chars": 100})
    assert r.status_code == 422 and "send 'html' (a fragment) or 'images'" in r.json()["detail"]


def text_image(text: str) -> bytes:
    image = Image.new("RGB", (900, 160), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 56)
    except OSError:
        font = ImageFont.load_default(size=56)
    draw.text((30, 40), text, fill="black", font=font)
    import io

    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_documents_reads_the_text(live, captioner):
    if "documents" not in live.client.get("/v1/info").json()["features"]:
        pytest.skip("no OCR engine installed (pip install 'blipcap[ocr]')")
    data = text_image("INVOICE")
    r = live.client.post("/v1/documents", files=[("files", ("scan.png", data, "image/png"))])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["path"] == "scan.png" and doc["kind"] == "image"
    assert doc["text"] == "INVOICE"
    caption = captioner.caption([data])[0].caption
    assert doc["pages"][0]["caption"] == caption
    assert doc["description"].endswith('that reads: "INVOICE"')
    assert doc["random_weights"] is True
    r = live.client.post("/v1/documents", files=[("files", ("x.txt", b"plain text", "text/plain"))])
    assert r.status_code == 415 and r.json()["detail"].startswith("x.txt: not an image")


@pytest.mark.parametrize(
    "name, data, status, message",
    [
        ("report.pdf", b"%PDF-1.4\nnot really a PDF\n", 422, "report.pdf: not a readable PDF"),
        ("notes.txt", b"plain text", 415, "notes.txt: not an image"),
        (None, b"%PDF-1.4\nnot really a PDF\n", 422, "document: not a readable PDF"),
    ],
)
def test_document_errors_name_the_upload_never_a_server_path(live, name, data, status, message):
    if "documents" not in live.client.get("/v1/info").json()["features"]:
        pytest.skip("no OCR engine installed (pip install 'blipcap[ocr]')")
    files = [("files", (name, data, "application/octet-stream"))] if name else None
    if name is None:  # a part without a file name
        body = (
            b'--b\r\nContent-Disposition: form-data; name="files"; filename=""\r\n\r\n'
            + data
            + b"\r\n--b--\r\n"
        )
        headers = {"Content-Type": "multipart/form-data; boundary=b"}
        r = live.client.post("/v1/documents", content=body, headers=headers)
    else:
        r = live.client.post("/v1/documents", files=files)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail.startswith(message)
    assert "blipcap-doc-" not in detail and "/tmp" not in detail and "upload" not in detail


def test_search_with_thumbnails(live, indexed):
    root, db = indexed
    from blipcap.index import open_store

    with open_store(db, create=False) as store:
        expected = store.search("a", limit=3, mode="text")
    caption_word = None
    with open_store(db, create=False) as store:
        record = store.get_image(hashlib.sha256((root / "a.jpg").read_bytes()).hexdigest())
    caption_word = record["caption"].split()[0]
    r = live.client.get("/v1/search", params={"q": caption_word, "mode": "text", "limit": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results, expected
    top = results[0]
    assert top["random_weights"] is True
    assert top["thumbnail"] == f"/v1/thumbnails/{top['sha256']}"
    thumb = live.client.get(top["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff"
    assert live.client.get("/v1/thumbnails/" + "0" * 64).status_code == 404
    assert live.client.get("/v1/thumbnails/not-a-hash").status_code == 422
    assert live.client.get("/v1/search", params={"q": ""}).status_code == 422


def test_missing_index_fails_the_start_with_the_fix(captioner, tmp_path):
    import time

    failures = []
    db = tmp_path / "none.db"
    srv = Live(
        create_app(ServerConfig(db=str(db)), captioner=captioner, on_fatal=failures.append),
        ready=False,
    )
    try:
        deadline = time.monotonic() + 30
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = srv.client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "failed"
        assert r.json()["detail"] == (
            f"the search index cannot be opened: no index at {db}. "
            f"Build one first: blipcap index PHOTOS_DIR --db {db}"
        )
    finally:
        srv.close()
