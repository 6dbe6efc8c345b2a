"""Hard edges of the HTTP service: request bodies, per-client concurrency, API keys.

FastAPI and uvicorn have no body limit and no body deadline of their own (a
``Content-Length`` check alone is not enough: chunked uploads have none, and a
client can lie; uvicorn times out neither a request's headers nor its body),
so :class:`BodyMiddleware` reads every body before the application sees the
request:

* it counts the bytes as they stream in and stops reading at the size limit
  (a 60 MB upload against a 25 MB limit is answered with 413 after about
  25 MB, never buffered whole);
* the whole body must arrive within a deadline and, after a short grace, at a
  minimum average rate, else 408 (a client sending one byte every few seconds
  is cut off in seconds, not after the request timeout);
* at most ``max_uploads`` large or slow bodies are being received at once,
  so the memory they hold is bounded; a new one past that waits briefly, then
  gets 503 (a small body that arrives at once needs no place).

Only then does the route run, and only then does it take its place in the
bounded request count (``ServerState.admit``): a connection still sending its
body never holds a place that complete requests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import BlipcapError


class TooManyRequestsError(BlipcapError):
    """One client has too many requests in flight (429)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class BodyError(BlipcapError):
    """The body could not be received; answered with ``status`` before the route runs."""

    status = 400
    reason = "body"
    """The label on ``blipcap_rejected_total``."""
    headers: dict[str, str] = {}


class BodyTooLargeError(BodyError):
    """The request body passed the configured limit while streaming (413)."""

    status = 413
    reason = "body_too_large"


class SlowBodyError(BodyError):
    """The body did not arrive within its deadline or at the minimum rate (408)."""

    status = 408
    reason = "slow_body"


class UploadsFullError(BodyError):
    """Too many bodies are being received at once (503)."""

    status = 503
    reason = "uploads_full"
    headers = {"Retry-After": "1"}


class ClientGone(Exception):
    """The client disconnected before its body was complete: nobody to answer."""


def _fmt_mb(n: int) -> str:
    return f"{n / 1e6:g} MB"


def body_too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than the server's {_fmt_mb(limit)} limit; send fewer or "
        "smaller images per request (or start the server with a larger --max-body-mb)"
    )


BODY_GRACE = 5.0
"""Seconds at the start of a body before the minimum rate applies (TCP slow start, a slow link)."""
SMALL_BODY = 64 * 1024
QUICK_BODY = 1.0
"""A body of up to SMALL_BODY bytes that is complete within QUICK_BODY seconds needs no upload
place (a complete small request never waits behind slow uploads); any other holds one."""
UPLOAD_WAIT = 1.0
"""How long a new upload waits for one of the ``max_uploads`` places before 503."""


@dataclass(frozen=True)
class BodyRules:
    """What a request body must meet while it arrives."""

    max_bytes: int
    timeout: float
    """Seconds for the whole body."""
    min_rate: float
    """Bytes per second on average, from ``BODY_GRACE`` seconds on (0: no minimum)."""
    grace: float = BODY_GRACE

    def time_left(self, elapsed: float, received: int) -> float:
        """Seconds the client has, from now, to send its next bytes."""
        left = self.timeout - elapsed
        if self.min_rate > 0:
            # ``received`` bytes are worth received / min_rate seconds past the grace.
            left = min(left, self.grace + received / self.min_rate - elapsed)
        return left

    def too_slow_message(self, elapsed: float, received: int) -> str:
        rate = f" and at least {self.min_rate / 1000:g} kB/s after the first {self.grace:g} s"
        return (
            f"the request body arrived too slowly ({received} bytes in {elapsed:.1f} s); this "
            f"server needs the whole body within {self.timeout:g} s"
            f"{rate if self.min_rate > 0 else ''}. Send it on a faster connection or in smaller "
            "requests (or start the server with a larger --body-timeout or a smaller "
            "--min-body-rate)"
        )


class BodyReader:
    """Receives one body message by message, under :class:`BodyRules`."""

    def __init__(self, receive: Any, rules: BodyRules, clock: Callable[[], float] = time.monotonic):
        self._receive = receive
        self._rules = rules
        self._clock = clock
        self._start = clock()
        self._chunks: list[bytes] = []
        self.received = 0

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    async def read(self, small: int | None = None, quick: float | None = None) -> bool:
        """Receive until the body is complete (True), or (False) until it is over ``small``
        bytes or ``quick`` seconds old, whichever comes first.

        Raises :class:`SlowBodyError` (too slow), :class:`BodyTooLargeError`,
        or :class:`ClientGone` (the client disconnected).
        """
        while small is None or self.received <= small:
            elapsed = self._clock() - self._start
            left = self._rules.time_left(elapsed, self.received)
            stop = math.inf if quick is None else quick - elapsed
            try:
                message = await asyncio.wait_for(self._receive(), max(0.0, min(left, stop)))
            except asyncio.TimeoutError:
                if stop < left:
                    return False  # the quick window is over, not the client's time
                elapsed = self._clock() - self._start
                raise SlowBodyError(self._rules.too_slow_message(elapsed, self.received)) from None
            if self._take(message):
                return True
        return False

    def _take(self, message: dict) -> bool:
        """Keep one ASGI message's bytes; True when it was the last."""
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        self.received += len(chunk)
        if self.received > self._rules.max_bytes:
            raise BodyTooLargeError(body_too_large_message(self._rules.max_bytes))
        self._chunks.append(chunk)
        return not message.get("more_body", False)


class UploadSlots:
    """At most ``limit`` bodies being received at once; a newcomer waits ``wait`` s, then 503."""

    def __init__(self, limit: int, wait: float = UPLOAD_WAIT):
        if limit < 1:
            raise ValueError(f"the upload limit must be >= 1, got {limit}")
        self.limit = limit
        self.wait = wait
        self.in_use = 0
        self._free = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def hold(self):
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait)
        except asyncio.TimeoutError:
            raise UploadsFullError(
                f"the server is receiving {self.limit} uploads already; retry in a moment "
                "(the server's operator can raise --max-uploads)"
            ) from None
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self._free.release()


class BodyMiddleware:
    """ASGI middleware: receive each request body whole, under :class:`BodyRules`, then route it.

    A declared ``Content-Length`` over the limit is refused before reading.
    Requests without a body (GET, ``Content-Length: 0``) pass straight
    through. A small body that arrives at once (``SMALL_BODY``,
    ``QUICK_BODY``) needs no upload place; any other holds one of ``slots``
    until it is complete, so at most ``slots.limit`` large or slow bodies are
    held in memory. Errors are
    answered here (413, 408, 503, with ``Connection: close``, as the rest of
    the body is never read) and counted with ``on_reject(reason)``.
    """

    def __init__(
        self,
        app: Any,
        rules: BodyRules,
        slots: UploadSlots,
        on_reject: Callable[[str], None] = lambda reason: None,
    ):
        if rules.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {rules.max_bytes}")
        self.app = app
        self.rules = rules
        self.slots = slots
        self.on_reject = on_reject

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._receive_whole(scope, receive)
        except ClientGone:
            return
        except BodyError as exc:
            self.on_reject(exc.reason)
            await _send_json(send, exc.status, {"detail": str(exc)}, exc.headers, close=True)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _receive_whole(self, scope: dict, receive: Any) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.rules.max_bytes:
            raise BodyTooLargeError(body_too_large_message(self.rules.max_bytes))
        reader = BodyReader(receive, self.rules)
        if not await reader.read(small=SMALL_BODY, quick=QUICK_BODY):
            async with self.slots.hold():
                await reader.read()
        return reader.body


def _has_body(scope: dict) -> bool:
    if _header(scope, b"transfer-encoding") is not None:
        return True
    declared = _header(scope, b"content-length")
    return declared is not None and declared.strip() not in ("", "0")


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that gives ``body`` in one message, then waits on the real one."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # only http.disconnect is left

    return replay


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_json(
    send: Any, status: int, body: dict, extra: dict[str, str], *, close: bool = False
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
    ]
    if close:
        # The rest of the body is never read: the connection cannot be reused.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ClientLimiter:
    """At most ``max_in_flight`` concurrent requests per client (0 = no limit).

    A client is its API key when keys are configured, else its IP address.
    The counters live in the event loop's thread; no lock is needed.
    """

    def __init__(self, max_in_flight: int = 0):
        if max_in_flight < 0:
            raise ValueError(f"max_in_flight must be >= 0, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._in_flight: Counter[str] = Counter()

    def in_flight(self, client: str) -> int:
        return self._in_flight[client]

    @contextlib.contextmanager
    def hold(self, client: str):
        if self.max_in_flight and self._in_flight[client] >= self.max_in_flight:
            raise TooManyRequestsError(
                f"this client already has {self.max_in_flight} requests in flight; wait for "
                "them to finish before sending more",
                retry_after=1,
            )
        self._in_flight[client] += 1
        try:
            yield
        finally:
            self._in_flight[client] -= 1
            if self._in_flight[client] <= 0:
                del self._in_flight[client]


class ApiKeys:
    """Bearer-token check against a set of keys, in constant time per key."""

    def __init__(self, keys: Iterable[str] = ()):
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def client_of(self, authorization: str | None) -> str | None:
        """The client id for a valid ``Authorization: Bearer KEY`` header, else None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode()).digest()
        ok = False
        for candidate in self._digests:  # no early exit: timing does not reveal which key
            ok |= hmac.compare_digest(digest, candidate)
        return "key:" + digest.hex()[:16] if ok else None


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
