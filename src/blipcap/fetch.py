"""Fetch an image over http(s) without letting the URL reach inside the network (SSRF).

Used by the CLI, the alt-text tool and the server for every user-supplied URL.
The rules:

* only ``http`` and ``https``; URLs with ``user:pass@`` (a classic way to
  disguise the real host) are refused;
* the host is resolved once (A and AAAA) and refused if *any* answer is not a
  public address: loopback, private, link-local, cloud metadata, CGNAT,
  unique-local, multicast, reserved, unspecified - also when written as
  ``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1`` or wrapped in IPv6
  (``[::ffff:127.0.0.1]``, ``[::ffff:0:127.0.0.1]``, 6to4, NAT64, Teredo);
* the connection goes to the address that was checked, never through a second
  DNS lookup (which an attacker's DNS server could answer differently: DNS
  rebinding); the Host header and TLS SNI/certificate check use the name;
* redirects are followed by hand, and every hop is checked again;
* the body is streamed under a byte cap and one *total* deadline that covers
  DNS, connect, TLS, headers and body, so a server that drips a byte at a time
  cannot hold a worker;
* environment proxies are ignored (a proxy would make the address checks moot).
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from .errors import FetchError
from .files import read_upto
from .version import __version__

__all__ = ["DEFAULT_MAX_BYTES", "FetchResult", "check_url", "fetch_url", "forbidden_reason"]

DEFAULT_MAX_BYTES = 50 * 2**20  # the same cap as images.DEFAULT_LIMITS.max_bytes
DEFAULT_TIMEOUT = 10.0
MAX_URL_LENGTH = 8192
_REDIRECTS = {301, 302, 303, 307, 308}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""``resolver(host, port) -> addresses`` (strings); the default uses getaddrinfo (A and AAAA)."""


@dataclass(frozen=True)
class FetchResult:
    """A fetched body. ``final_url`` differs from ``url`` after redirects."""

    url: str
    final_url: str
    content_type: str | None
    data: bytes


# --------------------------------------------------------------------------- address policy

# Checked in order, so the specific entries (cloud metadata) win over the
# ranges that contain them. The last resort is ipaddress's is_global.
_BLOCKED: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = [
    (ipaddress.ip_network(net), why)
    for net, why in [
        ("169.254.169.254/32", "the cloud metadata service"),
        ("fd00:ec2::254/128", "the cloud metadata service (AWS IPv6)"),
        ("0.0.0.0/8", "an unspecified ('this host') address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible (deprecated) address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/32", "a Teredo tunnel address"),
        ("2001:db8::/32", "a documentation address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    ]
]


def _embedded_ipv4s(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address wraps, which decide where it really leads.

    IPv4-mapped (``::ffff:0:0/96``), IPv4-translated (``::ffff:0:0:0/96``),
    NAT64 (``64:ff9b::/96``; the local-use ``64:ff9b:1::/48`` is refused
    outright), 6to4 (``2002::/16``) and Teredo (``2001::/32``: its server and
    its client; Teredo is refused outright too, the wrapped address only makes
    the message precise).
    """
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _IPV4_TRANSLATED or ip in _NAT64:
        return [low32]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [client, server]
    return []


_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden_reason(address: str | Address) -> str | None:
    """Why blipcap will not connect to ``address``, or None for a public address.

    >>> forbidden_reason("127.0.0.1")
    'a loopback address'
    >>> forbidden_reason("64:ff9b::a9fe:a9fe")
    'the cloud metadata service (169.254.169.254 wrapped in IPv6)'
    >>> forbidden_reason("93.184.216.34") is None
    True
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped (interface-local) IPv6 address"
        wrapped = _embedded_ipv4s(ip)
        for inner in wrapped:
            why = forbidden_reason(inner)
            if why:
                return f"{why} ({inner} wrapped in IPv6)"
        if wrapped and ip.teredo is None:
            return None  # a translation to a public IPv4 address; Teredo goes on to be refused
    for network, why in _BLOCKED:
        if ip.version == network.version and ip in network:
            return why
    if not ip.is_global or ip.is_multicast:
        return "not a public address"
    return None


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse the shorthand IPv4 spellings that C libraries accept (127.1, 0x7f.1, 0177.0.0.1, 2130706433)."""
    if not re.fullmatch(r"[0-9a-fx.]+", host) or not re.search(r"[0-9]", host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _legacy_ipv4(host)


# --------------------------------------------------------------------------- URL checks


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # the name for the Host header, SNI and certificate check (IDNA, no brackets)
    port: int
    path: str  # request target: path and query
    addresses: tuple[str, ...]


def _parse(url: str) -> tuple[SplitResult, str, int]:
    if not isinstance(url, str):
        raise FetchError(f"not a URL: {url!r}")
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(f"URL is longer than {MAX_URL_LENGTH} characters: {url[:80]}...")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise FetchError(
            f"{url!r}: URLs with spaces, control characters or backslashes are refused"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"{url}: malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(
            f"{url}: only http:// and https:// URLs can be fetched, not {scheme or 'no'} scheme"
        )
    if "@" in parts.netloc:
        raise FetchError(
            f"{url}: URLs with a user name or password (user@host) are refused; remove the part before '@'"
        )
    host = parts.hostname
    if not host:
        raise FetchError(f"{url}: the URL has no host name")
    if "%" in host:
        raise FetchError(f"{url}: IPv6 zone identifiers are refused")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise FetchError(f"{url}: {host!r} is not a valid host name") from None
    return parts, host.rstrip(".") or host, port or (443 if scheme == "https" else 80)


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _resolve(host: str, port: int, resolver: Resolver, deadline: _Deadline, url: str) -> list[str]:
    # getaddrinfo has no timeout of its own: run it aside and stop waiting at the deadline.
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["answer"] = list(resolver(host, port))
        except Exception as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, name="blipcap-resolve", daemon=True)
    worker.start()
    worker.join(deadline.remaining(url))
    if worker.is_alive():
        raise deadline.expired(url)
    if "error" in box:
        exc = box["error"]
        raise FetchError(
            f"{url}: cannot resolve host {host!r} ({exc}). Check the URL and your network."
        )
    answer = box["answer"]
    if not answer:
        raise FetchError(f"{url}: host {host!r} has no addresses")
    return answer  # type: ignore[return-value]


def _check(url: str, allow_private: bool, resolver: Resolver, deadline: _Deadline) -> _Target:
    parts, host, port = _parse(url)
    literal = _ip_literal(host)
    written = host
    if literal is not None:
        addresses = [str(literal)]
        host = str(literal)  # normalized: 0x7f.1 -> 127.0.0.1
    else:
        addresses = _resolve(host, port, resolver, deadline, url)
    if not allow_private:
        for address in addresses:
            why = forbidden_reason(address)
            if why:
                if literal is None:
                    shown = f"{host} resolves to {address}"
                else:
                    legacy = written != host and literal.version == 4
                    shown = f"{written} means {host}" if legacy else written
                raise FetchError(
                    f"{url}: refused: {shown}, {why}. blipcap only fetches from public internet "
                    "addresses (protection against server-side request forgery)."
                )
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return _Target(url, parts.scheme.lower(), host, port, path, tuple(addresses))


def check_url(
    url: str,
    *,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Validate ``url`` as :func:`fetch_url` would and return the addresses it may connect to.

    Raises :class:`FetchError` when the URL is refused. Useful to reject a URL
    up front (e.g. in a web form) before queueing work; the fetch checks again.
    """
    return list(
        _check(url, allow_private, resolver or _system_resolver, _Deadline(timeout)).addresses
    )


# --------------------------------------------------------------------------- connection


class _Deadline:
    """One wall-clock deadline for the whole fetch, with a watchdog that cuts the socket."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.hit = False
        self._timer: threading.Timer | None = None
        self._watched: socket.socket | None = None

    def remaining(self, url: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired(url)
        return left

    def expired(self, url: str) -> FetchError:
        return FetchError(
            f"{url}: gave up after the {self.seconds:g} s deadline (the server is too slow or "
            "stalled). Try again later or raise the timeout."
        )

    def watch(self, sock: socket.socket) -> None:
        # Socket timeouts apply per call, and http.client reads headers (and
        # ssl its handshake) with many calls, so a server dripping bytes could
        # outlast them. At the deadline, shut the connection down: any blocked
        # read returns at once. A duplicate descriptor keeps working after
        # ssl takes the original socket object over.
        self.cancel()
        watched = sock.dup()

        def cut() -> None:
            self.hit = True
            try:
                watched.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        self._watched = watched
        self._timer = threading.Timer(max(self.end - time.monotonic(), 0.0), cut)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watched is not None:
            self._watched.close()
            self._watched = None


def _create_connection(address: str, port: int, timeout: float) -> socket.socket:
    """Open a TCP connection to an already-checked address (tests patch this seam)."""
    sock = socket.create_connection((address, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect(target: _Target, deadline: _Deadline) -> http.client.HTTPConnection:
    sock = None
    last: BaseException | None = None
    for address in target.addresses:  # all of them passed the checks
        try:
            sock = _create_connection(address, target.port, deadline.remaining(target.url))
            break
        except OSError as exc:
            last = exc
    if sock is None:
        if deadline.hit or time.monotonic() >= deadline.end:
            raise deadline.expired(target.url)
        raise FetchError(
            f"{target.url}: cannot connect to {target.host} port {target.port} ({_reason(last)})"
        )
    deadline.watch(sock)
    conn: http.client.HTTPConnection
    try:
        if target.scheme == "https":
            context = ssl.create_default_context()
            sock.settimeout(deadline.remaining(target.url))
            sock = context.wrap_socket(sock, server_hostname=target.host)
            conn = http.client.HTTPSConnection(target.host, target.port, context=context)
        else:
            conn = http.client.HTTPConnection(target.host, target.port)
    except OSError as exc:
        sock.close()
        if deadline.hit or time.monotonic() >= deadline.end:
            raise deadline.expired(target.url) from None
        raise FetchError(f"{target.url}: {_reason(exc)}") from None
    except BaseException:
        sock.close()
        raise
    # Already connected to the checked address: http.client must not resolve or connect again.
    conn.sock = sock
    return conn


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed: {exc.verify_message or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- fetch


def fetch_url(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    max_redirects: int = 5,
    allow_private: bool = False,
    resolver: Resolver | None = None,
) -> FetchResult:
    """GET ``url`` and return its body, refusing anything that is not a public web address.

    ``timeout`` is one total wall-clock deadline in seconds for everything
    (DNS, connect, TLS, redirects, headers, body). The body may not exceed
    ``max_bytes``. Redirects are followed up to ``max_redirects`` times, each
    hop checked like the first. ``allow_private=True`` turns the address checks
    off: only for tests and trusted setups (e.g. a service fetching from its own
    intranet), never for URLs that come from users. ``resolver(host, port)``
    replaces DNS resolution (tests use it to simulate rebinding).

    Raises :class:`FetchError` with a message that says what went wrong.
    """
    resolver = resolver or _system_resolver
    deadline = _Deadline(timeout)
    current = url
    try:
        for _hop in range(max_redirects + 1):
            target = _check(current, allow_private, resolver, deadline)
            status, location, content_type, data = _get(target, max_bytes, deadline)
            if status in _REDIRECTS:
                if not location:
                    raise FetchError(f"{current}: HTTP {status} redirect without a Location header")
                current = urljoin(current, location)
                continue
            return FetchResult(url=url, final_url=current, content_type=content_type, data=data)
        raise FetchError(
            f"{url}: more than {max_redirects} redirects; the last one pointed to {current}"
        )
    finally:
        deadline.cancel()


def _get(
    target: _Target, max_bytes: int, deadline: _Deadline
) -> tuple[int, str | None, str | None, bytes]:
    url = target.url
    conn = _connect(target, deadline)
    sock = conn.sock  # http.client hands the socket to the response and forgets it
    try:
        sock.settimeout(deadline.remaining(url))
        conn.putrequest("GET", target.path, skip_accept_encoding=True)
        conn.putheader("User-Agent", f"blipcap/{__version__}")
        conn.putheader(
            "Accept", "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.1"
        )
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        conn.endheaders()
        response = conn.getresponse()
        if response.status in _REDIRECTS:
            return response.status, response.getheader("Location"), None, b""
        if not 200 <= response.status < 300:
            raise FetchError(
                f"{url}: the server answered HTTP {response.status} {response.reason}".rstrip()
            )
        encoding = (response.getheader("Content-Encoding") or "identity").lower()
        if encoding != "identity":
            raise FetchError(
                f"{url}: the server sent a {encoding}-encoded body, which blipcap does not unpack"
            )
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(
                f"{url}: the body is {int(declared)} bytes, over the {max_bytes}-byte limit"
            )

        def read(n: int) -> bytes:
            sock.settimeout(deadline.remaining(url))
            return response.read1(n)

        data = read_upto(read, max_bytes, 65536)
        if len(data) > max_bytes:
            raise FetchError(
                f"{url}: the body is over the {max_bytes}-byte limit; refusing to download more"
            )
        if response.length:  # Content-Length promised more than arrived
            raise FetchError(
                f"{url}: the connection closed after {len(data)} bytes, before the whole body arrived"
            )
        deadline.remaining(url)
        return response.status, None, response.getheader("Content-Type"), data
    except FetchError:
        if deadline.hit:
            raise deadline.expired(url) from None
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.hit or time.monotonic() >= deadline.end:
            raise deadline.expired(url) from None
        raise FetchError(f"{url}: download failed ({_reason(exc)})") from None
    finally:
        deadline.cancel()
        conn.close()
        sock.close()
