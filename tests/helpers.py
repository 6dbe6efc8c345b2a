"""Helpers the test files share: image bytes, image files, free ports, a live server.

Import them (``from tests.helpers import image_bytes``); fixtures live in conftest.py.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def image_bytes(
    seed: int, fmt: str = "PNG", size: tuple[int, int] = (48, 40), mode: str = "RGB", **save: Any
) -> bytes:
    """An image of random noise (``seed``), ``size`` = (width, height), encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.convert(mode).save(buf, fmt, **save)
    return buf.getvalue()


def solid_image_bytes(
    size: tuple[int, int] = (8, 8), colour: tuple[int, int, int] = (1, 2, 3), fmt: str = "PNG"
) -> bytes:
    """An image of one colour, encoded as ``fmt``."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def image_file(path: Path, colour: tuple[int, int, int], size=(32, 24), **save: Any) -> Path:
    """Write an image of one colour to ``path`` (its folders created); the format from its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **save)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 and a free port, in a thread; ``client`` talks to it."""

    def __init__(self, app: Any, ready: bool = True) -> None:
        import httpx
        import uvicorn

        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=60)
        if ready:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while self.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, self.client.get("/readyz").json()
            time.sleep(0.02)

    @property
    def state(self) -> Any:
        return self.app.state.blipcap

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
