"""Serve a web bundle with cross-origin isolation: in ``blipcap serve`` or on its own.

``blipcap serve --web-bundle DIR`` mounts the bundle at ``/web/`` of the API
service (:func:`mount`); :func:`serve_directory` is a standard-library server
for tests, benchmarks and a quick look (no FastAPI needed).
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import Any

from ..errors import OptionsError
from . import BUNDLE_MANIFEST, CONTENT_TYPES, ISOLATION_HEADERS

MOUNT_PATH = "/web"


def check_bundle(directory: str | Path) -> Path:
    """The bundle directory, or an error that says how to make one."""
    path = Path(directory).expanduser().absolute()
    if not (path / BUNDLE_MANIFEST).is_file():
        raise OptionsError(
            f"{path} is not a blipcap web bundle (no {BUNDLE_MANIFEST}); write one with: "
            f"blipcap export web --model <ONNX export> --out {path}"
        )
    return path


def mount(app: Any, directory: str | Path) -> None:
    """Serve the bundle under ``/web/`` of a FastAPI app, cross-origin isolated."""
    from fastapi.staticfiles import StaticFiles

    path = check_bundle(directory)

    class BundleFiles(StaticFiles):
        def file_response(self, full_path, *args, **kwargs):
            response = super().file_response(full_path, *args, **kwargs)
            suffix = Path(str(full_path)).suffix
            if suffix in CONTENT_TYPES:
                response.headers["content-type"] = CONTENT_TYPES[suffix]
            response.headers.update(ISOLATION_HEADERS)
            return response

    app.mount(MOUNT_PATH, BundleFiles(directory=path, html=True), name="web-bundle")


class _Handler(http.server.SimpleHTTPRequestHandler):
    isolated = True

    def guess_type(self, path):
        return CONTENT_TYPES.get(Path(str(path)).suffix) or super().guess_type(path)

    def end_headers(self):
        if self.isolated:
            for name, value in ISOLATION_HEADERS.items():
                self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def serve_directory(
    directory: str | Path, host: str = "127.0.0.1", port: int = 0, *, isolated: bool = True
) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``directory`` in a background thread; returns the server and its base URL.

    ``isolated=False`` leaves out the COOP/COEP headers (WASM then runs on one thread).
    Stop it with ``server.shutdown()``.
    """
    handler = functools.partial(
        type("Handler", (_Handler,), {"isolated": isolated}), directory=str(directory)
    )
    server = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/"
