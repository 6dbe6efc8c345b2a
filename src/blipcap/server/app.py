"""The FastAPI application: one shared Captioner behind a micro-batcher.

``create_app(config)`` builds the app; the model loads in the background when
the app starts (``/livez`` answers at once, ``/readyz`` turns 200 only after
the model is loaded *and* has captioned one warm-up image). Every caption
request - captions, social, and the features that caption internally - goes
through the same :class:`~blipcap.server.batcher.MicroBatcher`, so concurrent
requests share model batches and the model runs in exactly one thread.
The routes are one router per feature, in :mod:`blipcap.server.routes`.

Shutdown (SIGTERM): ``state.draining`` flips at once (``/readyz`` 503, new
work 503), uvicorn stops accepting connections and waits for requests in
flight, then the batcher runs what is queued and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..engine import split_good
from ..errors import BlipcapError, DecodeBusyError, MissingDependencyError
from ..images import CancelToken, set_decode_memory_budget
from ..memory import return_large_frees_to_the_os
from ..options import CaptionOptions, resolve_options
from ..results import Caption
from ..version import __version__
from . import schemas
from .batcher import DeadlineError, MicroBatcher, QueueFullError, ShuttingDownError
from .captioning import BatchedCaptioner, failed_record
from .config import ServerConfig
from .inputs import (
    Loaded,
    status_for,
)
from .limits import (
    ApiKeys,
    BodyMiddleware,
    BodyRules,
    ClientLimiter,
    TooManyRequestsError,
    UploadSlots,
    retry_after_header,
)
from .metrics import Metrics, MetricsMiddleware
from .routes import install_routes

log = logging.getLogger("blipcap.server")


class UnauthorizedError(BlipcapError):
    pass


class NotReadyError(BlipcapError):
    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class ServerState:
    """Everything the routes share. Lives on ``app.state.blipcap``."""

    def __init__(self, config: ServerConfig, captioner: Any = None):
        self.config = config
        self.captioner = captioner
        self.status = "starting"
        self.load_error: str | None = None
        self.draining = False
        self.in_flight = 0
        self.metrics = Metrics()
        self.api_keys = ApiKeys(config.api_keys)
        self.limiter = ClientLimiter(config.max_client_requests)
        self.uploads = UploadSlots(config.max_uploads)
        """Request bodies being received (they hold no place in ``admit`` until complete)."""
        self.features: list[str] = []
        """The features this server offers, as ``GET /v1/info`` lists them (see routes/)."""
        self.startup_checks: list[Callable[[], None]] = []
        """Run before readiness (e.g. the search index opens); a failure fails the start."""
        self.batcher = MicroBatcher(
            self._run_batch,
            max_batch_size=config.max_batch_size,
            max_wait=config.max_wait_ms / 1000.0,
            max_queue=config.max_queue,
            observe=self.metrics.observe_batch,
        )
        self.metrics.bind(
            queue_depth=lambda: self.batcher.queued_images,
            uploads=lambda: self.uploads.in_use,
            images_per_second=lambda: self.batcher.stats.images_per_second(time.monotonic()),
            ready=lambda: self.ready,
        )

    @property
    def ready(self) -> bool:
        return self.status == "ready" and not self.draining

    def _run_batch(self, images: list[Any], options: CaptionOptions) -> list[Caption]:
        # Runs in the batcher's single model thread.
        return self.captioner.caption(images, options=options, batch_size=len(images))

    # -- per-request checks ------------------------------------------------------------
    def client_of(self, request: Request) -> str:
        if self.api_keys.enabled:
            client = self.api_keys.client_of(request.headers.get("authorization"))
            if client is None:
                raise UnauthorizedError(
                    "missing or wrong API key: send the header 'Authorization: Bearer KEY'"
                )
            return client
        return "ip:" + (request.client.host if request.client else "unknown")

    @contextlib.contextmanager
    def admit(self, client: str):
        """Hold a place for one request from its complete body to its answer, or refuse it now.

        Besides the image queue, the number of requests in the server at once
        (decoding, queued, in the model) is bounded by ``max_queue +
        max_batch_size``: a request let in can only find that many ahead of
        it, so its wait is bounded too; the rest get 503 at once. Bodies still
        arriving hold no place here (:class:`~blipcap.server.limits.BodyMiddleware`
        receives them first, under their own bound).
        """
        with self.limiter.hold(client):
            self.check_accepting()
            limit = self.config.max_queue + self.config.max_batch_size
            if self.in_flight >= limit:
                raise QueueFullError(
                    f"the server is full ({self.in_flight} requests in progress); retry later",
                    self.batcher.retry_after(),
                )
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    def check_accepting(self) -> None:
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry on another instance")
        if self.status != "ready":
            if self.status == "failed":
                raise NotReadyError(f"the model failed to load: {self.load_error}", 60)
            raise NotReadyError(f"the model is not ready yet ({self.status}); retry shortly")
        if self.batcher.queued_images >= self.config.max_queue:
            raise QueueFullError(
                f"the caption queue is full ({self.config.max_queue} images waiting); retry later",
                self.batcher.retry_after(),
            )

    # -- captioning through the batcher --------------------------------------------------
    def model_sized(self, image: Any) -> Any:
        """``image`` at the model's input size (what preprocessing does first), when known."""
        preprocess = getattr(self.captioner, "preprocess", None)
        to_model_size = getattr(preprocess, "to_model_size", None)
        return to_model_size(image) if to_model_size is not None else image

    async def caption_loaded(
        self, loaded: list[Loaded], options: CaptionOptions, deadline: float, client: str
    ) -> list[Caption]:
        """Captions for decoded inputs, in order; failed inputs become error records.

        When every input failed, the first failure is raised (its HTTP status
        answers the request); otherwise good work is never thrown away.
        """
        inputs = split_good(loaded, lambda item: item.image is not None)
        if not inputs.good:
            first = next(item for item in loaded if item.error is not None)
            raise first.error  # type: ignore[misc]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineError("the request deadline passed before captioning started")
        results = await self.batcher.caption(
            [item.image for item in inputs.good], options, timeout=remaining, client=client
        )
        provenance = self.captioner.provenance_for(options)
        return inputs.merge(
            results,
            bad=lambda item: failed_record(item, provenance),
            good=lambda item, result: dataclasses.replace(result, path=item.name),
        )

    def blocking_captioner(
        self, loop: asyncio.AbstractEventLoop, client: str, cancel: CancelToken
    ) -> BatchedCaptioner:
        """A Captioner-like object for feature modules that run in worker threads.

        ``cancel`` (see :func:`~.inputs.decode_token`) carries the request's
        deadline and stops its decodes once the request stops waiting.
        """
        return BatchedCaptioner(self, loop, client, cancel)


def create_app(
    config: ServerConfig | None = None,
    *,
    captioner: Any = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    web_bundle: str | Path | None = None,
) -> FastAPI:
    """The blipcap HTTP service. ``captioner``: use this object instead of loading ``config.model``.

    ``web_bundle``: a directory written by ``blipcap export web``, served at ``/web/``.
    """
    config = config or ServerConfig()
    state = ServerState(config, captioner)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        set_decode_memory_budget(config.decode_memory_bytes)
        return_large_frees_to_the_os()  # so the process's memory is what the budget counts
        await state.batcher.start()
        loader = asyncio.create_task(_load_model(state, on_fatal))
        try:
            yield
        finally:
            state.draining = True
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            await state.batcher.stop()

    app = FastAPI(
        title="blipcap",
        version=__version__,
        description=(
            "Turn images into useful text with BLIP: captions, alt text, social-media "
            "descriptions, documents and search. Every caption is machine-generated and says "
            "which model made it."
        ),
        lifespan=lifespan,
    )
    app.state.blipcap = state
    _install_errors(app, state)
    installed = install_routes(app, state)
    if web_bundle is not None:
        from ..web.serving import mount

        mount(app, web_bundle)
    schemas.install_openapi(app, installed.bodies)
    routes = installed.paths
    # Bodies are received whole (size, deadline, rate, upload bound) before any route runs.
    app.add_middleware(
        BodyMiddleware,
        rules=BodyRules(config.max_body_bytes, config.body_timeout, config.min_body_rate),
        slots=state.uploads,
        on_reject=lambda reason: state.metrics.rejected.labels(reason).inc(),
    )
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=lambda: routes)
    return app


async def _load_model(state: ServerState, on_fatal: Callable[[BaseException], None] | None) -> None:
    config = state.config
    try:
        if state.captioner is None:
            state.status = "loading the model"
            from ..captioner import get_captioner

            state.captioner = await run_in_threadpool(
                get_captioner, config.model, config.backend, config.device, config.dtype
            )
        for check in state.startup_checks:
            await run_in_threadpool(check)
        state.status = "warming up"
        from PIL import Image

        warm = Image.new("RGB", (64, 64), (127, 127, 127))
        await state.batcher.caption(
            [warm], resolve_options(), timeout=max(600.0, config.request_timeout)
        )
        state.status = "ready"
        if getattr(state.captioner, "random_weights", False):
            log.warning(
                "the model has random weights (a test checkpoint): its captions are meaningless"
            )
        log.info("ready: %s", getattr(state.captioner, "model_id", "model"))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # reported on /readyz and to the CLI, which exits
        state.status = "failed"
        state.load_error = str(exc) or type(exc).__name__
        log.error("the model could not be loaded: %s", state.load_error)
        if on_fatal is not None:
            on_fatal(exc)


def error_response(
    status: int, detail: str, headers: dict[str, str] | None = None, errors=None
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def _install_errors(app: FastAPI, state: ServerState) -> None:
    rejected = state.metrics.rejected

    @app.exception_handler(BlipcapError)
    async def blipcap_error(request: Request, exc: BlipcapError) -> JSONResponse:
        if isinstance(exc, QueueFullError):
            rejected.labels("queue_full").inc()
            return error_response(503, str(exc), retry_after_header(exc.retry_after))
        if isinstance(exc, TooManyRequestsError):
            rejected.labels("client_limit").inc()
            return error_response(429, str(exc), retry_after_header(exc.retry_after))
        if isinstance(exc, ShuttingDownError):
            rejected.labels("draining").inc()
            return error_response(503, str(exc), retry_after_header(5))
        if isinstance(exc, NotReadyError):
            rejected.labels("not_ready").inc()
            return error_response(503, str(exc), retry_after_header(exc.retry_after))
        if isinstance(exc, DeadlineError):
            rejected.labels("deadline").inc()
            return error_response(504, str(exc))
        if isinstance(exc, UnauthorizedError):
            return error_response(401, str(exc), {"WWW-Authenticate": "Bearer"})
        if isinstance(exc, MissingDependencyError):
            return error_response(501, str(exc))
        status = status_for(exc)
        if status == 500:
            log.error("request failed: %s: %s", type(exc).__name__, exc)
        if isinstance(exc, DecodeBusyError):
            rejected.labels("decode_busy").inc()
            return error_response(status, str(exc), retry_after_header(1))
        return error_response(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid request: " + "; ".join(parts))
