"""The SSRF-safe fetcher against a real local HTTP(S) server.

The server listens on 127.0.0.1 only. To exercise the "public host" paths
without the internet, a test resolver maps made-up names to a public address
(93.184.216.34) and the connection seam routes that one address to the local
server; every other address goes through the real policy untouched.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from blipcap import fetch
from blipcap.errors import FetchError
from blipcap.fetch import FetchResult, check_url, fetch_url, forbidden_reason
from blipcap.images import expand_inputs, load_image, load_input
from tests.helpers import free_port, solid_image_bytes

PUBLIC = "93.184.216.34"


PNG = solid_image_bytes((6, 4), (10, 20, 250))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep test output clean
        pass

    def send(self, status, body=b"", headers=(), length=True):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drip(self, payload: bytes, every: float) -> None:
        try:
            for i in range(len(payload)):
                self.wfile.write(payload[i : i + 1])
                self.wfile.flush()
                time.sleep(every)
        except OSError:
            pass  # the client hung up: that is the point

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = url.path
        if route == "/img.png":
            self.send(200, PNG, [("Content-Type", "image/png")])
        elif route == "/redirect":
            self.send(302, headers=[("Location", query["to"])])
        elif route == "/loop":
            self.send(301, headers=[("Location", "/loop")])
        elif route == "/host":
            self.send(200, self.headers["Host"].encode(), [("Content-Type", "text/plain")])
        elif route == "/big":
            self.send(200, b"x" * int(query["n"]))
        elif route == "/big-unannounced":
            self.send(200, b"x" * int(query["n"]), length=False)
        elif route == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
        elif route == "/gzip":
            self.send(200, b"\x1f\x8b...", [("Content-Encoding", "gzip")])
        elif route == "/drip-body":
            self.send_response(200)
            self.end_headers()
            self.drip(b"x" * 60, 0.1)  # 6 s in all
        elif route == "/drip-headers":
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            self.drip(b"X-Slow: " + b"a" * 60 + b"\r\n\r\n", 0.1)
        else:
            self.send(404, b"not here")


class Server:
    def __init__(self, tls: ssl.SSLContext | None = None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def public(monkeypatch):
    """Route connections to PUBLIC to the local server; record every connection made."""
    connected = []
    real = fetch._create_connection

    def create_connection(address, port, timeout):
        connected.append(address)
        return real("127.0.0.1" if address == PUBLIC else address, port, timeout)

    monkeypatch.setattr(fetch, "_create_connection", create_connection)
    return connected


def resolver_for(table):
    calls = []

    def resolve(host, port):
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    resolve.calls = calls
    return resolve


def no_dns(host, port):
    raise AssertionError(f"DNS lookup for {host!r}: IP literals must not be resolved")


# --------------------------------------------------------------------------- refused URLs

REFUSED = {
    "http://127.0.0.1/": "127.0.0.1, a loopback address",
    "http://127.1/": "127.1 means 127.0.0.1, a loopback address",
    "http://0177.0.0.1/": "0177.0.0.1 means 127.0.0.1, a loopback address",
    "http://0x7f.1/": "0x7f.1 means 127.0.0.1, a loopback address",
    "http://0x7f000001/": "0x7f000001 means 127.0.0.1, a loopback address",
    "http://2130706433/": "2130706433 means 127.0.0.1, a loopback address",
    "http://127.0.0.1:8080/admin": "127.0.0.1, a loopback address",
    "https://127.0.0.1/": "127.0.0.1, a loopback address",
    "http://[::1]/": "::1, a loopback address",
    "http://[::ffff:127.0.0.1]/": "a loopback address (127.0.0.1 wrapped in IPv6)",
    "http://[::ffff:7f00:1]/": "a loopback address (127.0.0.1 wrapped in IPv6)",
    "http://[64:ff9b::7f00:1]/": "a loopback address (127.0.0.1 wrapped in IPv6)",
    "http://[2002:7f00:1::]/": "a loopback address (127.0.0.1 wrapped in IPv6)",
    "http://[::ffff:0:127.0.0.1]/": "a loopback address (127.0.0.1 wrapped in IPv6)",
    "http://[::ffff:0:a9fe:a9fe]/": "the cloud metadata service (169.254.169.254 wrapped in IPv6)",
    "http://[64:ff9b::10.0.0.1]/": "a private address (10.0.0.1 wrapped in IPv6)",
    "http://[64:ff9b:1::808:808]/": "a local-use NAT64 address",
    "http://[2002:a00:1::1]/": "a private address (10.0.0.1 wrapped in IPv6)",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/": "a loopback address (127.0.0.1 wrapped",
    "http://[2001:0:a00:1:8000:63bf:f7f7:f7f7]/": "a private address (10.0.0.1 wrapped in IPv6)",
    "http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/": "a Teredo tunnel address",
    "http://0.0.0.0/": "an unspecified ('this host') address",
    "http://0/": "0 means 0.0.0.0, an unspecified ('this host') address",
    "http://[::]/": "an unspecified address",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254, the cloud metadata service",
    "http://2852039166/": "2852039166 means 169.254.169.254, the cloud metadata service",
    "http://[::ffff:169.254.169.254]/": "the cloud metadata service (169.254.169.254 wrapped in IPv6)",
    "http://[fd00:ec2::254]/": "the cloud metadata service (AWS IPv6)",
    "http://169.254.1.1/": "a link-local address",
    "http://10.0.0.1/": "a private address",
    "http://012.0.0.1/": "012.0.0.1 means 10.0.0.1, a private address",
    "http://172.16.0.1/": "a private address",
    "http://172.31.255.255/": "a private address",
    "http://192.168.1.1/": "a private address",
    "http://100.64.0.1/": "a carrier-grade NAT (shared) address",
    "http://100.127.255.254/": "a carrier-grade NAT (shared) address",
    "http://[fc00::1]/": "a unique-local (private) address",
    "http://[fd12:3456::1]/": "a unique-local (private) address",
    "http://[fe80::1]/": "a link-local address",
    "http://224.0.0.1/": "a multicast address",
    "http://[ff02::1]/": "a multicast address",
    "http://255.255.255.255/": "the broadcast address",
    "http://240.0.0.1/": "a reserved address",
    "http://198.18.0.1/": "a benchmarking address",
}


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_internal_addresses_refused_in_every_spelling(url):
    with pytest.raises(FetchError) as info:
        fetch_url(url, resolver=no_dns, timeout=2)
    msg = str(info.value)
    assert msg.startswith(f"{url}: refused: ")
    assert REFUSED[url] in msg
    assert msg.endswith("(protection against server-side request forgery).")


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "::ffff:0:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_allowed(address):
    assert forbidden_reason(address) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http:// and https:// URLs can be fetched, not file scheme"),
        (
            "gopher://127.0.0.1:25/_HELO",
            "only http:// and https:// URLs can be fetched, not gopher scheme",
        ),
        (
            "ftp://example.com/a.png",
            "only http:// and https:// URLs can be fetched, not ftp scheme",
        ),
        (
            "data:image/png;base64,AAAA",
            "only http:// and https:// URLs can be fetched, not data scheme",
        ),
        ("//example.com/a.png", "only http:// and https:// URLs can be fetched, not no scheme"),
        (
            "http://example.com@127.0.0.1/",
            "URLs with a user name or password (user@host) are refused",
        ),
        (
            "http://user:pass@example.com/",
            "URLs with a user name or password (user@host) are refused",
        ),
        ("http://example.com\\@127.0.0.1/", "backslashes are refused"),
        ("http://exa mple.com/", "spaces, control characters or backslashes are refused"),
        ("http:///a.png", "the URL has no host name"),
        ("http://[::1/", "malformed URL"),
        ("http://example.com:99999/", "malformed URL"),
        ("http://[fe80::1%25eth0]/", "IPv6 zone identifiers are refused"),
    ],
)
def test_malformed_and_disguised_urls_refused_before_dns(url, message):
    with pytest.raises(FetchError) as info:
        fetch_url(url, resolver=no_dns)
    assert message in str(info.value)


def test_names_resolving_to_internal_addresses_refused():
    resolve = resolver_for(
        {
            "loopback.example": ["127.0.0.1"],
            "mixed.example": [PUBLIC, "10.0.0.7"],  # ANY bad answer is enough
            "v6.example": ["2606:2800:220:1:248:1893:25c8:1946", "::1"],
            "metadata.example": ["169.254.169.254"],
        }
    )
    expected = {
        "loopback.example": "loopback.example resolves to 127.0.0.1, a loopback address",
        "mixed.example": "mixed.example resolves to 10.0.0.7, a private address",
        "v6.example": "v6.example resolves to ::1, a loopback address",
        "metadata.example": "metadata.example resolves to 169.254.169.254, the cloud metadata service",
    }
    for host, message in expected.items():
        with pytest.raises(FetchError) as info:
            fetch_url(f"http://{host}/cat.jpg", resolver=resolve)
        assert message in str(info.value)


def test_localhost_via_system_resolver_refused():
    with pytest.raises(
        FetchError, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback address"
    ):
        fetch_url("http://localhost/")


def test_check_url():
    assert check_url(
        "http://img.example/a.png", resolver=resolver_for({"img.example": [PUBLIC]})
    ) == [PUBLIC]
    with pytest.raises(FetchError, match="a private address"):
        check_url("http://192.168.0.10/")
    assert check_url("http://192.168.0.10/", allow_private=True) == ["192.168.0.10"]


# --------------------------------------------------------------------------- the local server


def test_local_server_refused_by_default_allowed_when_private_allowed(server):
    url = f"http://127.0.0.1:{server.port}/img.png"
    with pytest.raises(FetchError, match="a loopback address"):
        fetch_url(url)
    result = fetch_url(url, allow_private=True)
    assert result == FetchResult(url=url, final_url=url, content_type="image/png", data=PNG)
    assert load_image(result.data).getpixel((0, 0)) == (10, 20, 250)


def test_url_items_load_through_the_safe_fetcher(server):
    [item] = expand_inputs([f"http://127.0.0.1:{server.port}/img.png"])
    with pytest.raises(FetchError, match="a loopback address"):
        load_input(item)


def test_public_name_pinned_to_the_checked_address(server, public):
    resolve = resolver_for({"img.example": [PUBLIC]})
    result = fetch_url(f"http://img.example:{server.port}/host", resolver=resolve)
    assert result.data == f"img.example:{server.port}".encode()  # Host header carries the name
    assert public == [PUBLIC]


def test_dns_rebinding_cannot_swap_the_address(server, public):
    answers = iter([[PUBLIC], ["127.0.0.1"], ["127.0.0.1"]])
    calls = []

    def rebinding(host, port):
        calls.append(host)
        return next(answers)

    result = fetch_url(f"http://rebind.example:{server.port}/img.png", resolver=rebinding)
    assert result.data == PNG
    assert calls == ["rebind.example"]  # resolved once...
    assert public == [PUBLIC]  # ...and connected to exactly what was checked


def test_redirect_hops_are_checked_again(server, public):
    port = server.port
    resolve = resolver_for({"img.example": [PUBLIC], "internal.example": ["127.0.0.1"]})
    base = f"http://img.example:{port}"
    cases = {
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254, the cloud metadata service",
        f"http://127.0.0.1:{port}/img.png": "127.0.0.1, a loopback address",
        f"http://[::1]:{port}/img.png": "::1, a loopback address",
        f"http://0x7f.1:{port}/img.png": "0x7f.1 means 127.0.0.1, a loopback address",
        f"http://internal.example:{port}/img.png": "internal.example resolves to 127.0.0.1",
        "file:///etc/passwd": "not file scheme",
        "http://user@img.example/": "user name or password",
    }
    for target, message in cases.items():
        public.clear()
        with pytest.raises(FetchError) as info:
            fetch_url(f"{base}/redirect?to={target}", resolver=resolve)
        assert str(info.value).startswith(target)
        assert message in str(info.value)
        assert public == [PUBLIC]  # never connected to the redirect target


def test_safe_redirects_are_followed(server, public):
    resolve = resolver_for({"img.example": [PUBLIC], "cdn.example": [PUBLIC]})
    base = f"http://img.example:{server.port}"
    start = f"{base}/redirect?to=/redirect%3Fto%3Dhttp://cdn.example:{server.port}/img.png"
    result = fetch_url(start, resolver=resolve)
    assert result.url == start
    assert result.final_url == f"http://cdn.example:{server.port}/img.png"
    assert result.data == PNG


def test_redirect_limit(server):
    url = f"http://127.0.0.1:{server.port}/loop"
    with pytest.raises(
        FetchError, match=r"more than 5 redirects; the last one pointed to .*/loop$"
    ):
        fetch_url(url, allow_private=True)
    with pytest.raises(FetchError, match="more than 0 redirects"):
        fetch_url(
            f"http://127.0.0.1:{server.port}/redirect?to=/img.png",
            allow_private=True,
            max_redirects=0,
        )


def test_byte_cap(server):
    base = f"http://127.0.0.1:{server.port}"
    with pytest.raises(FetchError, match=r"the body is 2000 bytes, over the 1000-byte limit"):
        fetch_url(f"{base}/big?n=2000", max_bytes=1000, allow_private=True)
    with pytest.raises(FetchError, match=r"over the 1000-byte limit; refusing to download more"):
        fetch_url(f"{base}/big-unannounced?n=5000", max_bytes=1000, allow_private=True)
    assert len(fetch_url(f"{base}/big?n=1000", max_bytes=1000, allow_private=True).data) == 1000
    assert (
        len(fetch_url(f"{base}/big-unannounced?n=1000", max_bytes=1000, allow_private=True).data)
        == 1000
    )


@pytest.mark.parametrize("route", ["/drip-body", "/drip-headers"])
def test_dripping_server_hits_the_total_deadline(server, route):
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"gave up after the 1 s deadline"):
        fetch_url(f"http://127.0.0.1:{server.port}{route}", timeout=1.0, allow_private=True)
    elapsed = time.monotonic() - start
    # Each byte arrives well within any per-read timeout; only a total deadline stops it.
    # The drip lasts 6 s, so finishing near 1 s proves the deadline cut it.
    assert 0.9 <= elapsed < 3.0


def test_http_errors(server):
    base = f"http://127.0.0.1:{server.port}"
    with pytest.raises(FetchError, match=r"/missing: the server answered HTTP 404 Not Found$"):
        fetch_url(f"{base}/missing", allow_private=True)
    with pytest.raises(
        FetchError, match="the connection closed after 10 bytes, before the whole body arrived"
    ):
        fetch_url(f"{base}/short", allow_private=True)
    with pytest.raises(FetchError, match="gzip-encoded body"):
        fetch_url(f"{base}/gzip", allow_private=True)


def test_connection_refused():
    port = free_port()  # closed again before the fetch: nothing listens
    with pytest.raises(
        FetchError, match=rf"cannot connect to 127\.0\.0\.1 port {port} \(connection refused\)"
    ):
        fetch_url(f"http://127.0.0.1:{port}/", allow_private=True)


def test_dns_failure_is_a_fetch_error():
    with pytest.raises(FetchError, match=r"cannot resolve host 'nowhere\.example'"):
        fetch_url("http://nowhere.example/", resolver=resolver_for({}))


def test_slow_dns_hits_the_deadline():
    def slow(host, port):
        time.sleep(3)
        return [PUBLIC]

    start = time.monotonic()
    with pytest.raises(FetchError, match="deadline"):
        fetch_url("http://slow.example/", resolver=slow, timeout=0.5)
    assert time.monotonic() - start < 2.0


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=img.example",
         "-addext", "subjectAltName=DNS:img.example", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    srv = Server(tls=context)
    srv.cafile = str(d / "cert.pem")
    srv.sni = names
    yield srv
    srv.close()


def test_https_checks_the_certificate(tls_server, public):
    url = f"https://img.example:{tls_server.port}/img.png"
    with pytest.raises(FetchError, match="TLS certificate check failed"):
        fetch_url(url, resolver=resolver_for({"img.example": [PUBLIC]}))


def test_https_sends_sni_and_host_for_the_name(tls_server, public, monkeypatch):
    real = ssl.create_default_context
    monkeypatch.setattr(fetch.ssl, "create_default_context", lambda: real(cafile=tls_server.cafile))
    tls_server.sni.clear()
    resolve = resolver_for({"img.example": [PUBLIC]})
    result = fetch_url(f"https://img.example:{tls_server.port}/host", resolver=resolve)
    assert result.data == f"img.example:{tls_server.port}".encode()
    assert tls_server.sni == ["img.example"]
    assert public == [PUBLIC]
