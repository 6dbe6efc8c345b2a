"""BLIP in the browser: the JavaScript module and example page of ``blipcap export web``.

``assets/`` holds the files copied into every bundle (the ES modules and the
page); :mod:`blipcap.export.web` writes the bundle and :mod:`.serving` serves
one with the headers that WASM threads need. Nothing here imports a runtime.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
BUNDLE_MANIFEST = "blipcap_web.json"

# Cross-origin isolation: without both headers the browser gives the page no
# SharedArrayBuffer, and onnxruntime-web runs on one thread.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# Module scripts and streaming WASM compilation are refused under other types.
CONTENT_TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
}
