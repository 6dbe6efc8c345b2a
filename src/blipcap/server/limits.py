"""Hard edges of the HTTP service: body size, per-client concurrency, API keys.

FastAPI and uvicorn have no body limit of their own, and a ``Content-Length``
check alone is not enough (chunked uploads have none, and a client can lie),
so :class:`BodyLimitMiddleware` counts the bytes as they stream in and stops
reading at the limit: a 60 MB upload against a 25 MB limit is answered with
413 after about 25 MB, never buffered whole.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any

from ..errors import BlipcapError


class TooManyRequestsError(BlipcapError):
    """One client has too many requests in flight (429)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class BodyTooLargeError(BlipcapError):
    """The request body passed the configured limit while streaming (413)."""


def _fmt_mb(n: int) -> str:
    return f"{n / 1e6:g} MB"


def body_too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than the server's {_fmt_mb(limit)} limit; send fewer or "
        "smaller images per request (or start the server with a larger --max-body-mb)"
    )


class BodyLimitMiddleware:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, counting streamed chunks.

    A declared ``Content-Length`` over the limit is refused before reading.
    Otherwise ``receive`` is wrapped: the chunk that crosses the limit raises
    :class:`BodyTooLargeError` inside the application (which stops parsing),
    and the error is answered here with 413 unless a response has started.
    """

    def __init__(self, app: Any, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False  # the server rejects a malformed length itself
            if too_big:
                await _send_json(
                    send, 413, {"detail": body_too_large_message(self.max_bytes)}, close=True
                )
                return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(body_too_large_message(self.max_bytes))
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError as exc:
            if started:
                raise
            await _send_json(send, 413, {"detail": str(exc)}, close=True)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Any, status: int, body: dict, *, close: bool = False) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
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

    @contextmanager
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
