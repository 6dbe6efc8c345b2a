"""The web page in a real browser (Debian's Chromium via Playwright) against `blipcap serve`.

Upload, paste and drop images, read the captions, copy the alt text, watch the
live counters, and check the page with axe-core (no violations).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from blipcap.social import PLATFORMS, count
from tests.helpers import free_port, image_bytes

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("BLIPCAP_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
BLIPCAP = shutil.which("blipcap", path=str(Path(sys.executable).parent))
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (scripts/system-deps.sh installs it)",
        allow_module_level=True,
    )


def png(seed: int) -> bytes:
    return image_bytes(seed, "PNG", (56, 40))


@pytest.fixture(scope="module")
def index_db(tiny_checkpoint, tmp_path_factory):
    """A search index of three photos, built by `blipcap index` with the tiny model."""
    root = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(("harbour.png", "market.png", "garden.png")):
        (root / name).write_bytes(png(10 + i))
    db = root / "index.db"
    p = subprocess.run(
        [
            BLIPCAP,
            "index",
            str(root),
            "--db",
            str(db),
            "--model",
            str(tiny_checkpoint),
            "--ocr",
            "none",
        ],
        capture_output=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr.decode()
    return db


@pytest.fixture(scope="module")
def server(tiny_checkpoint, index_db):
    assert BLIPCAP, "the blipcap console script is not installed (pip install -e .)"
    port = free_port()
    proc = subprocess.Popen(
        [BLIPCAP, "serve", "--port", str(port), "--model", str(tiny_checkpoint), "--backend", "torch",
         "--device", "cpu", "--log-level", "warning", "--db", str(index_db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(bypass_csp=True)  # axe is injected as an inline script
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server + "/")
    pg.wait_for_function("document.querySelector('#server-status').textContent.startsWith('Ready')")
    yield pg
    context.close()
    assert errors == [], errors


def api_caption(server, data: bytes) -> str:
    r = httpx.post(
        server + "/v1/captions", files=[("files", ("x.png", data, "image/png"))], timeout=60
    )
    return r.json()["results"][0]["caption"]


def wait_done(pg, n=1):
    pg.wait_for_function(
        f"document.querySelectorAll('#results .result .body:not([hidden])').length >= {n}",
        timeout=60_000,
    )


def axe_violations(pg):
    assert AXE.exists(), f"{AXE} is missing: run scripts/system-deps.sh (npm ci in tests/e2e)"
    pg.add_script_tag(path=str(AXE))
    result = pg.evaluate("async () => JSON.stringify((await axe.run(document)).violations)")
    return [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in json.loads(result)]


def test_upload_shows_caption_alt_text_and_counters(page, server, tmp_path):
    data = png(1)
    path = tmp_path / "beach.png"
    path.write_bytes(data)
    assert page.locator("#random-weights").is_visible()  # never passes random weights off as real
    page.set_input_files("#files", str(path))
    wait_done(page)
    card = page.locator("#results .result").first
    assert card.locator(".name").inner_text() == "beach.png"
    caption = card.locator(".caption").inner_text()
    assert caption == api_caption(server, data)
    alt = card.locator("textarea.alt")
    assert alt.input_value().rstrip(".").lower().startswith(caption.split()[0].lower())
    assert card.locator("img.thumb").get_attribute("alt") == "Your image: beach.png"
    # One block per checked platform (X, Mastodon, Bluesky by default) with live counters.
    assert card.locator(".platform h5").all_inner_texts() == ["X", "Mastodon", "Bluesky"]
    post = card.locator("#r1-x-post")
    post.fill("New text https://example.com/a/very/long/path \U0001f600")
    assert card.locator("#r1-x-count").inner_text() == "35 / 280"
    post.fill("x" * 281)
    counter = card.locator("#r1-x-count")
    assert counter.inner_text() == "281 / 280 - 1 over the limit"
    assert "over" in counter.get_attribute("class")
    alt.fill("Caf\u00e9")
    assert card.locator(".field .counter").first.inner_text() == "4 characters"


def test_copy_button_puts_alt_text_on_the_clipboard(page, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png(2))
    page.set_input_files("#files", str(path))
    wait_done(page)
    card = page.locator("#results .result").first
    card.locator("textarea.alt").fill("A red kite over a beach.")
    card.locator("button.copy").click()
    page.wait_for_function(
        "document.querySelector('#describe-status').textContent === 'Alt text copied.'"
    )
    assert page.evaluate("navigator.clipboard.readText()") == "A red kite over a beach."


def test_paste_and_drop_images(page):
    js = """([kind, name, bytes]) => {
        const file = new File([new Uint8Array(bytes)], name, {type: 'image/png'});
        const dt = new DataTransfer();
        dt.items.add(file);
        if (kind === 'paste') {
            document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}));
        } else {
            document.querySelector('#drop-zone').dispatchEvent(
                new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }
    }"""
    page.evaluate(js, ["paste", "pasted.png", list(png(3))])
    page.evaluate(js, ["drop", "dropped.png", list(png(4))])
    wait_done(page, 2)
    names = page.locator("#results .result .name").all_inner_texts()
    assert sorted(names) == ["dropped.png", "pasted.png"]


def test_keyboard_reaches_every_control_with_visible_focus(page):
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")  # skip link
    seen = []
    for _ in range(20):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate(
                "document.activeElement.id || document.activeElement.name || document.activeElement.textContent.trim()"
            )
        )
        # Every focused control shows an outline (focus-visible).
        style = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        label_style = page.evaluate(
            "document.activeElement.id === 'files' ? getComputedStyle(document.querySelector('label[for=files]')).outlineStyle : 'solid'"
        )
        assert style != "none" or label_style != "none", seen[-1]
    assert seen[:4] == ["files", "image-url", "Describe", "platform"]
    assert "variants" in seen and "hashtags" in seen and "attribution" in seen
    # The file chooser opens from the keyboard.
    page.locator("#files").focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    assert chooser.value.is_multiple()


def test_url_input_reports_a_refused_address(page):
    page.fill("#image-url", "http://169.254.169.254/latest/meta-data/")
    page.click("#url-form button")
    page.wait_for_function("document.querySelector('#results .result.failed') !== null")
    state = page.locator("#results .result .state").first.inner_text()
    assert state.startswith("Failed: http://169.254.169.254/latest/meta-data/: refused:")
    assert "cloud metadata service" in state


def test_no_axe_violations_light_and_dark(page, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png(5))
    page.check("input[value=instagram]")
    page.fill("#variants", "2")
    page.set_input_files("#files", str(path))
    wait_done(page)
    page.locator("#results .result").first.locator("#r1-x-post").fill(
        "y" * 300
    )  # over-limit state too
    assert axe_violations(page) == []
    page.emulate_media(color_scheme="dark")
    assert axe_violations(page) == []


def test_search_shows_results_with_thumbnails(page, index_db):
    import hashlib

    from blipcap.index import open_store

    with open_store(index_db, create=False) as store:
        caption = store.get_image(hashlib.sha256(png(10)).hexdigest())["caption"]
    assert page.locator("#search").is_visible()
    page.fill("#query", caption.split()[0])
    page.keyboard.press("Enter")
    page.wait_for_function(
        "document.querySelector('#search-status').textContent.includes('result')"
    )
    status = page.locator("#search-status").inner_text()
    items = page.locator("#search-results li")
    assert items.count() >= 1, status
    assert status.startswith(f"{items.count()} result")
    first = items.first
    assert first.locator(".name").inner_text().endswith(".png")
    assert first.locator("p").nth(1).inner_text().startswith("[random test model]")
    page.wait_for_function(
        "document.querySelector('#search-results img.thumb')?.src.startsWith('blob:')"
    )
    natural = page.evaluate("document.querySelector('#search-results img.thumb').naturalWidth")
    assert natural > 0  # the thumbnail decoded


COUNT_SAMPLES = [
    "Hello world",
    "A dog on a couch. https://example.com/some/long/path?q=1 #dog",
    "visit example.com, www.example.org and https://a.io.",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "Family \U0001f468\u200d\U0001f469\u200d\U0001f467 flag \U0001f1eb\U0001f1f7 keycap 1\ufe0f\u20e3",
    "cafe\u0301 na\u00efve \u2014 \u201cquoted\u201d",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "tabs\tand\nnewlines\r\n",
    "email me@example.com and http://x.y/z",
]


def test_page_counts_exactly_like_the_server(page):
    for key, platform in PLATFORMS.items():
        info = page.evaluate(
            f"fetch('/v1/info').then(r => r.json()).then(i => i.platforms['{key}'])"
        )
        for text in COUNT_SAMPLES:
            for kind in ("post", "alt"):
                js = page.evaluate(
                    "([t, p, k]) => window.blipcapCount(t, p, k)", [text, info, kind]
                )
                assert js == count(text, platform, kind), (key, kind, text)
