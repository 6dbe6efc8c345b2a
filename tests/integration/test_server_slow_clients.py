"""Slow uploads: cut off with 408, bounded, and never in the way of complete requests.

A handful of raw sockets send a multipart header and then nothing more; the
server is configured with a short body deadline (8 s, room to see them open first). The
waits below are hang-guards only: the tests assert statuses, never timings.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

pytest.importorskip("fastapi")

from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app  # noqa: E402
from tests.helpers import LiveServer as Live  # noqa: E402
from tests.helpers import image_bytes  # noqa: E402

PNG = image_bytes(5)
HEAD = (
    "POST /v1/captions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
)
PART = b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="slow.png"\r\n\r\n'
FAST = '{"max_new_tokens": 3}'


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


@contextlib.contextmanager
def serve(captioner, **settings):
    """A live server with ``settings`` and the port of its socket."""
    live = Live(create_app(ServerConfig(max_wait_ms=1, **settings), captioner=captioner))
    try:
        yield live, int(live.url.rsplit(":", 1)[1])
    finally:
        live.close()


def start_slow_upload(port: int) -> socket.socket:
    """A connection that sends its headers and the start of a multipart body, then stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(HEAD.encode() + PART + PNG[:10])
    return sock


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body the server sends on ``sock`` (it closes the connection after)."""
    response = b""
    try:
        while data := sock.recv(65536):
            response += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    assert response.startswith(b"HTTP/1.1 "), response
    return int(response.split(b" ", 2)[1]), response.split(b"\r\n\r\n", 1)[-1]


def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def caption(live: Live) -> int:
    files = [("files", ("cat.png", PNG, "image/png"))]
    return live.client.post("/v1/captions", files=files, data={"options": FAST}).status_code


def test_slow_uploads_hold_no_request_place_and_get_408(captioner):
    # Places for 3 requests in the server (max_queue + max_batch_size); 6 slow uploads.
    settings = dict(body_timeout=8.0, max_queue=2, max_batch_size=1, max_images_per_request=1)
    with serve(captioner, **settings) as (live, port):
        slow = [start_slow_upload(port) for _ in range(6)]
        until(lambda: live.state.uploads.in_use == 6)
        assert live.client.get("/readyz").status_code == 200
        assert caption(live) == 200  # a complete request is served while all six are open
        for sock in slow:
            status, body = answer(sock)
            assert status == 408, body
            assert b"arrived too slowly" in body and b"--body-timeout" in body
        assert live.state.uploads.in_use == 0
        metrics = live.client.get("/metrics").text
        assert 'blipcap_rejected_total{reason="slow_body"} 6.0' in metrics


def test_uploads_past_the_bound_get_503_but_complete_requests_are_served(captioner):
    with serve(captioner, body_timeout=60.0, max_uploads=2) as (live, port):
        holding = [start_slow_upload(port) for _ in range(2)]
        until(lambda: live.state.uploads.in_use == 2)
        status, body = answer(start_slow_upload(port))
        assert status == 503, body
        assert b"receiving 2 uploads already" in body and b"--max-uploads" in body
        assert caption(live) == 200  # its body came whole: it needs no upload place
        for sock in holding:
            sock.close()
        until(lambda: live.state.uploads.in_use == 0)  # a client that leaves frees its place


def test_minimum_rate_cuts_off_a_dripping_body_before_its_deadline(captioner):
    # A 10-minute deadline, but a rate the client does not keep: 408 once the grace is over.
    with serve(captioner, body_timeout=600.0, min_body_rate=1_000_000.0) as (live, port):
        status, body = answer(start_slow_upload(port))
        assert status == 408, body
        assert b"1000 kB/s" in body and b"--min-body-rate" in body


def test_body_settings_are_checked():
    for bad in ({"body_timeout": 0}, {"min_body_rate": -1}, {"max_uploads": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerConfig(**bad)
