"""Hard edges of the service: SSRF, dripping hosts, bombs, huge bodies, back-pressure, keys."""

from __future__ import annotations

import base64
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("fastapi")

from blipcap import fetch, images  # noqa: E402
from blipcap.captioner import Captioner  # noqa: E402
from blipcap.server import ServerConfig, create_app  # noqa: E402
from tests.helpers import LiveServer as Live  # noqa: E402
from tests.helpers import image_bytes  # noqa: E402

PUBLIC = "93.184.216.34"  # a public address; connections to it are routed to the local host
PNG = image_bytes(11)


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def live(captioner):
    srv = Live(create_app(ServerConfig(fetch_timeout=1.0, max_wait_ms=1), captioner=captioner))
    yield srv
    srv.close()


class ImageHost(BaseHTTPRequestHandler):
    """An image host: /img.png, /redirect?to=URL, /drip (one byte every 0.2 s for 10 s)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        route, _, query = self.path.partition("?")
        if route == "/img.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        elif route == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.removeprefix("to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "50")
            self.end_headers()
            try:
                for _ in range(50):
                    self.wfile.write(b"\x89")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def host():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ImageHost)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def public_dns(monkeypatch):
    """img.example resolves to a public address, routed to this machine's image host."""
    table = {"img.example": [PUBLIC], "inside.example": ["10.1.2.3"]}

    def resolve(host, port):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    real = fetch._create_connection
    connected = []

    def create_connection(address, port, timeout):
        connected.append(address)
        return real("127.0.0.1" if address == PUBLIC else address, port, timeout)

    monkeypatch.setattr(fetch, "_system_resolver", resolve)
    monkeypatch.setattr(fetch, "_create_connection", create_connection)
    return connected


def caption_url(live, url):
    return live.client.post(
        "/v1/captions", json={"images": [{"url": url}], "options": {"max_new_tokens": 3}}
    )


SSRF = {
    "http://127.0.0.1/": "127.0.0.1, a loopback address",
    "http://[::1]/": "::1, a loopback address",
    "http://0.0.0.0/": "an unspecified ('this host') address",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254, the cloud metadata service",
    "http://[fd00:ec2::254]/": "the cloud metadata service (AWS IPv6)",
    "http://10.0.0.1/": "a private address",
    "http://172.16.0.1/": "a private address",
    "http://192.168.1.1/": "a private address",
    "http://100.64.0.1/": "a carrier-grade NAT (shared) address",
    "http://[fc00::1]/": "a unique-local (private) address",
    "http://[fe80::1]/": "a link-local address",
    "http://2130706433/": "2130706433 means 127.0.0.1, a loopback address",
    "http://0177.0.0.1/": "0177.0.0.1 means 127.0.0.1, a loopback address",
    "http://0x7f.1/": "0x7f.1 means 127.0.0.1, a loopback address",
    "http://2852039166/": "2852039166 means 169.254.169.254, the cloud metadata service",
    "http://[::ffff:127.0.0.1]/": "a loopback address (127.0.0.1 wrapped in IPv6)",
    "http://img.example@127.0.0.1/": "user name or password",
    "file:///etc/passwd": "not file",
    "gopher://127.0.0.1:70/": "not gopher",
}


@pytest.mark.parametrize("url", sorted(SSRF))
def test_ssrf_refused_in_every_spelling(live, url):
    r = caption_url(live, url)
    assert r.status_code == 422, r.text
    assert SSRF[url] in r.json()["detail"]


def test_name_resolving_to_loopback_is_refused(live):
    r = caption_url(live, "http://localhost/cat.png")
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("http://localhost/cat.png: refused: localhost resolves to ")
    assert "a loopback address" in detail


def test_public_url_is_fetched_and_captioned(live, host, public_dns, captioner):
    r = caption_url(live, f"http://img.example:{host}/img.png")
    assert r.status_code == 200, r.text
    [record] = r.json()["results"]
    assert record["path"] == f"http://img.example:{host}/img.png"
    assert record["caption"] == captioner.caption([PNG], max_new_tokens=3)[0].caption
    assert public_dns == [PUBLIC]


@pytest.mark.parametrize(
    "target, message",
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, the cloud metadata service"),
        ("http://127.0.0.1:{port}/img.png", "127.0.0.1, a loopback address"),
        ("http://inside.example:{port}/img.png", "inside.example resolves to 10.1.2.3"),
    ],
)
def test_redirect_to_a_private_address_is_refused(live, host, public_dns, target, message):
    r = caption_url(live, f"http://img.example:{host}/redirect?to={target.format(port=host)}")
    assert r.status_code == 422
    assert message in r.json()["detail"]
    assert public_dns == [PUBLIC]  # never connected to the redirect target


def test_dripping_host_hits_the_total_deadline(live, host, public_dns):
    started = time.monotonic()
    r = caption_url(live, f"http://img.example:{host}/drip")
    elapsed = time.monotonic() - started
    assert r.status_code == 422
    assert "img.example" in r.json()["detail"]
    assert elapsed < 3.0  # the drip lasts 10 s; fetch_timeout is 1 s


def test_decompression_bomb_upload(live):
    from test_server_api import bomb_png

    r = live.client.post("/v1/captions", files=[("files", ("bomb.png", bomb_png(), "image/png"))])
    assert r.status_code == 413
    assert r.json()["detail"].startswith("bomb.png: ")
    assert "20000x20000" in r.json()["detail"] or "bomb" in r.json()["detail"]


def raw_post(port, headers: dict, chunks, chunked: bool) -> tuple[int, int, bytes]:
    """POST over a raw socket, stop sending when the server answers; (status, bytes sent, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = "POST /v1/captions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    sent = 0
    response = b""
    try:
        for chunk in chunks:
            sock.setblocking(False)
            try:
                response += sock.recv(65536)
            except BlockingIOError:
                pass
            sock.setblocking(True)
            if response:
                break
            framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
            sock.sendall(framed)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in response or not response.split(b"\r\n\r\n", 1)[1]:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1") else 0
    return status, sent, response.split(b"\r\n\r\n", 1)[-1]


MB = 1_000_000


def sixty_mb():
    block = b"\0" * (256 * 1024)
    for _ in range(60 * MB // len(block)):
        yield block


def test_60_mb_body_with_content_length_is_refused_unread(live):
    port = int(live.url.rsplit(":", 1)[1])
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(60 * MB)}
    status, sent, body = raw_post(port, headers, sixty_mb(), chunked=False)
    assert status == 413
    assert b"larger than the server's 25 MB limit" in body
    assert sent < 30 * MB


def test_60_mb_chunked_body_is_cut_off_while_streaming(live):
    port = int(live.url.rsplit(":", 1)[1])
    headers = {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Transfer-Encoding": "chunked",
    }
    prefix = b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'

    def chunks():
        yield prefix
        yield from sixty_mb()

    status, sent, body = raw_post(port, headers, chunks(), chunked=True)
    assert status == 413
    assert b"larger than the server's 25 MB limit" in body
    assert 25 * MB <= sent < 40 * MB  # read up to the limit, not the whole 60 MB


class Slow:
    """The real captioner, made slow, to fill queues and pass deadlines."""

    def __init__(self, inner, delay):
        self.inner = inner
        self.delay = delay

    def caption(self, images, **kw):
        time.sleep(self.delay)
        return self.inner.caption(images, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def b64_body(n=1):
    return {
        "images": [{"base64": base64.b64encode(PNG).decode()}] * n,
        "options": {"max_new_tokens": 3},
    }


def in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn()))
    t.start()
    return t, out


def until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_full_queue_gives_503_with_retry_after(captioner):
    srv = Live(
        create_app(
            ServerConfig(max_queue=2, max_batch_size=1, max_wait_ms=0, max_images_per_request=2),
            captioner=Slow(captioner, 0.8),
        )
    )
    try:
        batcher = srv.state.batcher
        first, a = in_thread(lambda: srv.client.post("/v1/captions", json=b64_body(1)))
        until(lambda: batcher.running_images == 1)  # the first image is in the model
        second, b = in_thread(lambda: srv.client.post("/v1/captions", json=b64_body(2)))
        until(lambda: batcher.queued_images == 2)  # two images wait: the queue is full
        started = time.monotonic()
        r = srv.client.post("/v1/captions", json=b64_body(1))
        assert time.monotonic() - started < 0.5  # refused at once, not queued
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert "queue is full" in r.json()["detail"]
        first.join()
        second.join()
        assert a["r"].status_code == 200 and b["r"].status_code == 200
        assert 'blipcap_rejected_total{reason="queue_full"} 1.0' in srv.client.get("/metrics").text
    finally:
        srv.close()


def test_per_client_limit_gives_429(captioner):
    srv = Live(create_app(ServerConfig(max_client_requests=1), captioner=Slow(captioner, 0.8)))
    try:
        first, a = in_thread(lambda: srv.client.post("/v1/captions", json=b64_body()))
        until(lambda: srv.state.limiter.in_flight("ip:127.0.0.1") == 1)
        r = srv.client.post("/v1/captions", json=b64_body())
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "1"
        assert "already has 1 requests in flight" in r.json()["detail"]
        first.join()
        assert a["r"].status_code == 200
    finally:
        srv.close()


def test_deadline_gives_504(captioner):
    srv = Live(create_app(ServerConfig(request_timeout=0.5), captioner=Slow(captioner, 2.5)))
    try:
        started = time.monotonic()
        r = srv.client.post("/v1/captions", json=b64_body())
        assert r.status_code == 504
        assert "request deadline" in r.json()["detail"]
        assert time.monotonic() - started < 2.0  # at the deadline, not when the batch ends
    finally:
        srv.close()


def test_draining_refuses_new_work_and_finishes_work_in_flight(captioner):
    srv = Live(create_app(ServerConfig(), captioner=Slow(captioner, 0.8)))
    try:
        first, a = in_thread(lambda: srv.client.post("/v1/captions", json=b64_body()))
        until(lambda: srv.state.batcher.running_images == 1)
        srv.state.draining = True  # what SIGTERM does first
        ready = srv.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        r = srv.client.post("/v1/captions", json=b64_body())
        assert r.status_code == 503 and "shutting down" in r.json()["detail"]
        assert r.headers["Retry-After"] == "5"
        first.join()
        assert a["r"].status_code == 200 and a["r"].json()["results"][0]["caption"]
    finally:
        srv.close()


def test_api_keys(captioner):
    srv = Live(create_app(ServerConfig(api_keys=("s3cret",)), captioner=captioner))
    try:
        c = srv.client
        assert c.get("/livez").status_code == 200 and c.get("/readyz").status_code == 200
        r = c.post("/v1/captions", json=b64_body())
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["detail"].startswith("missing or wrong API key")
        assert c.get("/v1/info", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = c.post("/v1/captions", json=b64_body(), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/v1/info", headers={"Authorization": "bearer s3cret"}).json()["auth"] is True
    finally:
        srv.close()


def test_cors_only_for_configured_origins(captioner):
    srv = Live(
        create_app(ServerConfig(cors_origins=("https://cms.example.org",)), captioner=captioner)
    )
    try:

        def preflight(origin):
            return srv.client.options(
                "/v1/captions",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )

        ok = preflight("https://cms.example.org")
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://cms.example.org"
        bad = preflight("https://evil.example")
        assert "access-control-allow-origin" not in bad.headers
    finally:
        srv.close()


def test_model_that_cannot_load_keeps_readyz_503_with_the_reason(tmp_path):
    failures = []
    srv = Live(
        create_app(ServerConfig(model=str(tmp_path / "missing")), on_fatal=failures.append),
        ready=False,
    )
    try:
        deadline = time.monotonic() + 30
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = srv.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "failed"
        assert str(tmp_path / "missing") in r.json()["detail"]
        r = srv.client.post("/v1/captions", json=b64_body())
        assert r.status_code == 503 and r.json()["detail"].startswith("the model failed to load")
    finally:
        srv.close()


def test_requests_in_the_server_at_once_are_bounded(captioner):
    from blipcap.server.app import ServerState
    from blipcap.server.batcher import QueueFullError

    state = ServerState(
        ServerConfig(max_queue=2, max_batch_size=1, max_images_per_request=2), captioner
    )
    state.status = "ready"
    with state.admit("ip:a"), state.admit("ip:b"), state.admit("ip:c"):
        assert state.in_flight == 3
        with pytest.raises(QueueFullError, match=r"the server is full \(3 requests in progress\)"):
            with state.admit("ip:d"):
                pass
    assert state.in_flight == 0


def test_a_request_whose_images_all_wait_out_the_decode_budget_is_503_with_retry_after(
    captioner,
):
    """Other images hold the whole decode-memory budget: busy, so retry later (not 422)."""
    srv = Live(create_app(ServerConfig(request_timeout=1.0), captioner=captioner))
    try:
        total, _ = images.decode_memory_budget()
        with images._DECODE_MEMORY.reserve(total, "other images", images.CancelToken()):
            r = srv.client.post("/v1/captions", files={"files": ("a.png", image_bytes(1))})
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert "decode memory" in r.json()["detail"]
    finally:
        srv.close()


def test_the_server_applies_its_decode_memory_budget(captioner):
    before, _ = images.decode_memory_budget()
    srv = Live(create_app(ServerConfig(decode_memory_bytes=300 * 2**20), captioner=captioner))
    try:
        assert images.decode_memory_budget()[0] == 300 * 2**20
    finally:
        srv.close()
        images.set_decode_memory_budget(before)


def test_feature_captioners_decode_under_the_requests_token(live):
    """Alt text and documents caption through BatchedCaptioner: its decodes stop with the
    request (here: a request that already stopped waiting)."""
    cancel = images.CancelToken()
    cancel.cancel()
    blocking = live.state.blocking_captioner(None, "test", cancel)
    (result,) = blocking.caption([image_bytes(2)])
    assert result.error is not None and result.error.type == "DecodeCancelledError"
