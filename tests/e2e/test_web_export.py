"""`blipcap export web` in a real browser (Debian's Chromium via Playwright).

Random checkpoints of two shapes are exported to ONNX and then to a web
bundle; the bundle's page runs in headless Chromium, served cross-origin
isolated (WASM threads). Its tokens must equal the Python ONNX backend's
(greedy, beam 3, and the coco preset with its prompt), its preprocessing
Pillow's within 1/255, and its detokenizing blipcap's Tokenizer. The WebGPU
path runs too, on Chromium's software WebGPU adapter (SwiftShader): the same
JavaScript on onnxruntime-web's WebGPU execution provider, its tokens equal the
Python backend's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blipcap.options import resolve_options
from tests.conftest import checkpoint, sample_photos

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("BLIPCAP_CHROMIUM", "/usr/bin/chromium")
ORT_DIST = Path(__file__).parent / "node_modules" / "onnxruntime-web" / "dist"
BLIPCAP = shutil.which("blipcap", path=str(Path(sys.executable).parent))
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
# WebGPU without a GPU: Chromium's SwiftShader adapter (software Vulkan), for testing.
WEBGPU_ARGS = ["--no-sandbox", "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader",
               "--enable-unsafe-swiftshader", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (scripts/system-deps.sh installs it)",
        allow_module_level=True,
    )
if not (ORT_DIST / "ort.wasm.min.mjs").exists():
    pytest.skip(
        "onnxruntime-web is not installed in tests/e2e (scripts/system-deps.sh runs npm ci)",
        allow_module_level=True,
    )


def cli(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    assert BLIPCAP, "the blipcap console script is not installed (pip install -e .)"
    return subprocess.run(
        [BLIPCAP, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )


def images() -> list[Image.Image]:
    """The sample photos and generated images, plus an upscale and a tall narrow image."""
    rng = np.random.default_rng(3)
    small = Image.fromarray(rng.integers(0, 255, (23, 31, 3), dtype=np.uint8))
    tall = Image.fromarray(rng.integers(0, 255, (401, 57, 3), dtype=np.uint8))
    return [*sample_photos(), small, tall]


def png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def playwright():
    """One Playwright driver per module: a second sync_playwright() inside it is refused."""
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
    yield b
    b.close()


class Bundle:
    """An ONNX export, its web bundle served cross-origin isolated, and the page loaded."""

    def __init__(self, onnx_dir: Path, bundle: Path, browser, query: str = ""):
        from blipcap import Captioner
        from blipcap.web.serving import serve_directory

        self.onnx_dir, self.bundle = onnx_dir, bundle
        self.captioner = Captioner(onnx_dir, backend="onnx", device="cpu")
        self.server, self.url = serve_directory(bundle)
        self.page = browser.new_page()
        self.page.goto(self.url + "index.html" + query)
        self.page.wait_for_function("window.blipcap || window.blipcapError", timeout=120_000)
        error = self.page.evaluate("window.blipcapError")
        assert error is None, error

    def close(self):
        self.page.close()
        self.server.shutdown()

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def python_tokens(self, image: Image.Image, preset: str, **overrides) -> list[list[int]]:
        from blipcap.decoding import generate

        cap = self.captioner
        opts = resolve_options(preset=preset, **overrides)
        pixels = cap.preprocess.batch([image])
        prompt = cap.tokenizer.prompt_ids(opts.prompt)
        return generate(cap.backend, pixels, prompt, opts, cap.special)[0]

    def browser_run(self, image: Image.Image, preset: str, **overrides) -> dict:
        return self.js(
            """async ([data, preset, overrides]) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const blob = new Blob([bytes], { type: "image/png" });
                const { decodeImage } = await import("./blipcap.js");
                const { rgba, width, height } = await decodeImage(blob);
                const r = await window.blipcap.captionPixels(rgba, width, height,
                                                              { preset, ...overrides });
                return r;
            }""",
            [png(image), preset, overrides],
        )


def make_bundle(tmp_path_factory, browser, shape: str, seed: int, webgpu: bool = False) -> Bundle:
    from blipcap.export import export_onnx

    root = tmp_path_factory.mktemp(f"web-{shape}")
    onnx_dir = root / "onnx"
    export_onnx(checkpoint(shape, seed=seed), onnx_dir, verify_images=1, quiet=True)
    p = cli("export", "web", "--model", str(onnx_dir), "--out", str(root / "web"),
            "--ort-dist", str(ORT_DIST), "--json", *([] if webgpu else ["--no-webgpu"]))  # fmt: skip
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["random_weights"] is True
    assert "ort/ort-wasm-simd-threaded.wasm" in report["files"]
    assert ("ort/ort.webgpu.min.mjs" in report["files"]) is webgpu
    return Bundle(onnx_dir, root / "web", browser, "?backend=webgpu" if webgpu else "")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, browser):
    b = make_bundle(tmp_path_factory, browser, "tiny", 0)
    yield b
    b.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory, browser):
    b = make_bundle(tmp_path_factory, browser, "small", 1)
    yield b
    b.close()


def test_page_is_isolated_and_says_random_weights(tiny):
    assert tiny.js("crossOriginIsolated") is True
    assert tiny.js("window.blipcap.threads") == tiny.js("navigator.hardwareConcurrency")
    assert tiny.js("window.blipcap.backend") == "wasm"
    assert tiny.page.is_visible("#random-weights")
    assert "random weights" in tiny.page.inner_text("#provenance")
    tiny.page.wait_for_selector("#file:not([disabled])")
    buf = io.BytesIO()
    images()[0].save(buf, "PNG")
    tiny.page.set_input_files(
        "#file", files=[{"name": "a.png", "mimeType": "image/png", "buffer": buf.getvalue()}]
    )
    tiny.page.wait_for_selector("#results li[data-record]", timeout=60_000)
    record = json.loads(tiny.page.get_attribute("#results li", "data-record"))
    assert record["random_weights"] is True and record["machine_generated"] is True
    assert "random weights" in tiny.page.inner_text("#results li .meta")
    expected = tiny.captioner.caption([images()[0]])[0].caption
    assert record["caption"] == expected


@pytest.mark.parametrize("shape", ["tiny", "small"])
def test_preprocessing_matches_pillow(shape, request):
    bundle = request.getfixturevalue(shape)
    pre = bundle.captioner.preprocess
    for image in images():
        got = bundle.js(
            """async (data) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const { decodeImage } = await import("./blipcap.js");
                const { rgba, width, height } = await decodeImage(new Blob([bytes]));
                const { rgb, pixels } = window.blipcap.preprocess(rgba, width, height);
                return { rgb: Array.from(rgb), pixels: Array.from(pixels) };
            }""",
            png(image),
        )
        h, w = pre.size
        want_rgb = np.asarray(pre.to_model_size(image), dtype=np.int16)
        got_rgb = np.asarray(got["rgb"], dtype=np.int16).reshape(h, w, 3)
        assert np.abs(got_rgb - want_rgb).max() <= 1  # within 1/255 of Pillow's pixels
        want = pre(image)
        got_pixels = np.asarray(got["pixels"], dtype=np.float32).reshape(want.shape)
        assert np.abs((got_pixels - want) * pre.std).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("shape", ["tiny", "small"])
@pytest.mark.parametrize(
    ("preset", "overrides"),
    [("default", {}), ("default", {"num_beams": 3}), ("coco", {})],
    ids=["greedy", "beam3", "coco"],
)
def test_tokens_equal_the_python_onnx_backend(shape, preset, overrides, request):
    bundle = request.getfixturevalue(shape)
    captions = set()
    for image in images():
        want = bundle.python_tokens(image, preset, **overrides)
        got = bundle.browser_run(image, preset, **overrides)
        assert got["tokens"] == want
        opts = resolve_options(preset=preset, **overrides)
        assert got["caption"] == bundle.captioner.caption_text(want[0], opts)
        captions.add(got["caption"])
    assert len(captions) > 1  # the captions depend on the image


@pytest.fixture(scope="module")
def tiny_webgpu(tmp_path_factory, playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=WEBGPU_ARGS)
    # The page asks for backend=webgpu: with no adapter it fails to load, saying so.
    b = make_bundle(tmp_path_factory, browser, "tiny", 0, webgpu=True)
    yield b
    b.close()
    browser.close()


def test_webgpu_tokens_equal_the_python_onnx_backend(tiny_webgpu):
    """The WebGPU execution provider (software adapter) decodes the same tokens."""
    bundle = tiny_webgpu
    assert bundle.js("window.blipcap.backend") == "webgpu"
    picked = images()
    for image, (preset, overrides) in [
        (picked[0], ("default", {})),
        (picked[-1], ("default", {"num_beams": 3})),
        (picked[1], ("coco", {})),
    ]:
        got = bundle.browser_run(image, preset, **overrides)
        assert got["backend"] == "onnxruntime-web/webgpu"
        assert got["tokens"] == bundle.python_tokens(image, preset, **overrides)


def test_detokenizing_and_prompts_equal_blipcap_tokenizer(tiny):
    tok = tiny.captioner.tokenizer
    rng = np.random.default_rng(0)
    vocab = 30524
    # Random ids, with specials and continuation pieces mixed in.
    seqs = [rng.integers(0, vocab, rng.integers(1, 12)).tolist() for _ in range(150)]
    seqs += [[0, 2003, 1037, 102, 3899], [1037, 1012, 1005, 1055, 2025, 1050, 1005, 1056]]
    prompts = ["a picture of ", "A Photo, of: the café!", "  two   words ", "naïve über",
               "well-known x-ray 3.5", "unbelievably supercalifragilistic"]  # fmt: skip
    got = tiny.js(
        """([seqs, prompts]) => {
            const t = window.blipcap.tokenizer;
            return {
                decoded: seqs.map((s) => t.decode(s)),
                continued: seqs.map((s) => t.decodeContinuation(s.slice(0, 2), s.slice(2))),
                prompts: prompts.map((p) => t.promptIds(p)),
            };
        }""",
        [seqs, prompts],
    )
    assert got["decoded"] == [tok.decode(s) for s in seqs]
    assert got["continued"] == [tok.decode_continuation(s[:2], s[2:]) for s in seqs]
    assert got["prompts"] == [tok.prompt_ids(p) for p in prompts]


def test_clean_caption_matches_python(tiny):
    from blipcap.text import clean_caption

    texts = ["arafed man sitting on a bench", "two arafed men on a boat", "a bald bald bald man",
             "a cat on a sofa", "there is arafed woman", "araffe dog", "arafed", "an arafed apple"]  # fmt: skip
    got = tiny.js(
        "(texts) => import('./tokenizer.js').then((m) => texts.map(m.cleanCaption))", texts
    )
    assert got == [clean_caption(t) for t in texts]


def test_export_web_without_onnxruntime_web_says_how_to_install(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BLIPCAP_ORT_WEB_DIST"}
    p = cli("export", "web", "--model", str(tiny.onnx_dir), "--out", str(tmp_path / "b"),
            cwd=tmp_path, env=env)  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert "npm install onnxruntime-web@" in p.stderr
    assert not (tmp_path / "b").exists()


def test_serve_mounts_the_bundle_cross_origin_isolated(tiny):
    from fastapi.testclient import TestClient

    from blipcap.server import ServerConfig, create_app

    app = create_app(ServerConfig(model=str(tiny.onnx_dir)), web_bundle=tiny.bundle)
    client = TestClient(app)  # no lifespan: the model is not loaded, the files are static
    r = client.get("/web/")
    assert r.status_code == 200 and "blipcap in the browser" in r.text
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"
    r = client.get("/web/ort/ort-wasm-simd-threaded.wasm")
    assert r.headers["content-type"] == "application/wasm"
    assert client.get("/web/blipcap.js").headers["content-type"].startswith("text/javascript")
