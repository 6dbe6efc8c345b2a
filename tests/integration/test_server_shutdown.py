"""SIGTERM on a real `blipcap serve` process: work in flight finishes, new work is refused."""

from __future__ import annotations

import base64
import concurrent.futures
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, image_bytes

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow

BLIPCAP = shutil.which("blipcap", path=str(Path(sys.executable).parent))


def png(seed: int) -> str:
    return base64.b64encode(image_bytes(seed, "PNG", (32, 32))).decode()


def metric(text: str, name: str) -> float:
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.split(" ")[0] == name)


def _refused_within(url: str, seconds: float) -> bool:
    """Whether connecting to ``url`` fails (the socket closed) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=5)
        except httpx.ConnectError:
            return True
        except httpx.TimeoutException:
            pass  # a busy server, not a closed socket
        time.sleep(0.1)
    return False


def test_sigterm_drains_in_flight_requests_and_exits(tiny_checkpoint):
    assert BLIPCAP, "the blipcap console script is not installed (pip install -e .)"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # One image per model batch, and slow options (8 beams, 60 tokens forced: about
    # 0.25 s a request on an idle 2-core machine), so 10 requests keep the server busy.
    # The deadlines below only guard against a hang: on a machine busy with other
    # work every request may take many times longer, and must still succeed.
    proc = subprocess.Popen(
        [BLIPCAP, "serve", "--port", str(port), "--model", str(tiny_checkpoint), "--backend", "torch",
         "--device", "cpu", "--max-batch-size", "1", "--grace-period", "600",
         "--request-timeout", "600", "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    # Read the server's log as it comes: a full pipe would stall the server.
    log: list[bytes] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, b"".join(log).decode()
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)

        def caption(i):
            options = {"num_beams": 8, "max_new_tokens": 60, "min_new_tokens": 60}
            body = {"images": [{"base64": png(i)}], "options": options}
            return httpx.post(url + "/v1/captions", json=body, timeout=900)

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(caption, i) for i in range(10)]
            # Wait until every request has reached the server (captioned, in the model or
            # queued; at most one in the model) with a real backlog still queued.
            deadline = time.monotonic() + 300
            while True:
                metrics = httpx.get(url + "/metrics", timeout=60).text
                queued = metric(metrics, "blipcap_queue_depth")
                done = metric(metrics, "blipcap_images_captioned_total")
                if queued >= 3 and queued + done >= 9:
                    break
                assert time.monotonic() < deadline, f"queued {queued}, done {done}\n{metrics}"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            # The listening socket is closed: a new client cannot get in.
            assert _refused_within(url + "/readyz", 120), "still accepting after SIGTERM"
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * 10
        assert all(r.json()["results"][0]["caption"] for r in responses)
        proc.wait(300)
        reader.join(10)
        output = b"".join(log).decode()
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "Waiting for connections to close" in output or "Shutting down" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
