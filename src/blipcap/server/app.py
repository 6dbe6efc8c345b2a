"""The FastAPI application: one shared Captioner behind a micro-batcher.

``create_app(config)`` builds the app; the model loads in the background when
the app starts (``/livez`` answers at once, ``/readyz`` turns 200 only after
the model is loaded *and* has captioned one warm-up image). Every caption
request - captions, social, and the features that caption internally - goes
through the same :class:`~blipcap.server.batcher.MicroBatcher`, so concurrent
requests share model batches and the model runs in exactly one thread.

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
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__, social
from ..engine import split_good
from ..errors import BlipcapError, DecodeBusyError, MissingDependencyError
from ..images import CancelToken, set_decode_memory_budget
from ..memory import return_large_frees_to_the_os
from ..options import CaptionOptions, resolve_options
from ..results import Caption
from . import schemas
from .batcher import DeadlineError, MicroBatcher, QueueFullError, ShuttingDownError
from .captioning import BatchedCaptioner, failed_record
from .config import ServerConfig
from .inputs import (
    Loaded,
    RequestError,
    caption_options,
    load_inputs,
    parse_request,
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

log = logging.getLogger("blipcap.server")
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


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
        self.features: dict[str, Any] = {}
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
) -> FastAPI:
    """The blipcap HTTP service. ``captioner``: use this object instead of loading ``config.model``."""
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
    _install_routes(app, state)
    from .features import install_features

    install_features(app, state)
    schemas.install_openapi(
        app,
        {
            "/v1/captions": (schemas.CaptionsRequest, schemas.MULTIPART_CAPTIONS),
            "/v1/social": (schemas.SocialRequest, schemas.MULTIPART_SOCIAL),
            **state.features.get("bodies", {}),
        },
    )
    routes = {route.path for route in app.routes}  # type: ignore[attr-defined]
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


ERRORS = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed multipart body",
        401: "Missing or wrong API key (when keys are configured)",
        413: "Body, image or image count over the limits, or a decompression bomb",
        415: "Not an allow-listed image format, or an unsupported Content-Type",
        422: "Undecodable image, refused or failed URL, or invalid options",
        429: "Too many requests in flight from this client (see Retry-After)",
        503: "Queue full, decode memory busy, model not ready, or shutting down (see Retry-After)",
        504: "The request deadline passed",
    }.items()
}


def _install_routes(app: FastAPI, state: ServerState) -> None:
    config = state.config

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get(
        "/livez", response_model=schemas.Health, response_model_exclude_none=True, tags=["health"]
    )
    async def livez() -> dict:
        """Liveness: the process answers (no model or database involved)."""
        return {"status": "alive"}

    @app.get(
        "/readyz",
        response_model=schemas.Health,
        tags=["health"],
        responses={503: {"model": schemas.Health, "description": "Not ready"}},
    )
    async def readyz() -> Any:
        """Readiness: 200 once the model is loaded and warmed up; 503 before, and while draining."""
        cap = state.captioner
        body = {
            "status": "draining" if state.draining else state.status,
            "model": getattr(cap, "model_id", None) if cap is not None else None,
            "random_weights": getattr(cap, "random_weights", None) if cap is not None else None,
        }
        if state.load_error:
            body["detail"] = state.load_error
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        payload, ctype = state.metrics.render()
        return Response(payload, media_type=ctype)

    @app.get("/v1/info", response_model=schemas.Info, tags=["info"], responses={401: ERRORS[401]})
    async def info(request: Request) -> dict:
        """The model, the features this server offers, its limits and the platforms' rules."""
        state.client_of(request)
        cap = state.captioner
        return {
            "version": __version__,
            "status": "draining" if state.draining else state.status,
            "model": getattr(cap, "model_id", None),
            "backend": getattr(getattr(cap, "backend", None), "name", None),
            "device": getattr(cap, "device", None),
            "dtype": getattr(cap, "dtype", None),
            "random_weights": getattr(cap, "random_weights", None),
            "features": ["captions", "social", *state.features.get("names", [])],
            "auth": state.api_keys.enabled,
            "limits": {
                "max_body_bytes": config.max_body_bytes,
                "max_images_per_request": config.max_images_per_request,
                "max_batch_size": config.max_batch_size,
                "max_queue": config.max_queue,
                "request_timeout": config.request_timeout,
                "max_new_tokens": config.max_new_tokens,
                "max_beams": config.max_beams,
                "max_captions": config.max_captions,
            },
            "platforms": {
                key: {
                    "name": p.name,
                    "alt_limit": p.alt_limit,
                    "post_limit": p.post_limit,
                    "url_length": p.url_length,
                    "bare_domains": p.bare_domains,
                    "weighted": p.weighted,
                    "max_hashtags": p.max_hashtags,
                }
                for key, p in social.PLATFORMS.items()
            },
        }

    @app.post(
        "/v1/captions",
        response_model=schemas.CaptionsResponse,
        tags=["captions"],
        responses=ERRORS,
    )
    async def captions(request: Request) -> JSONResponse:
        """Caption images: multipart ``files`` (one or more), or JSON ``images`` (url / base64).

        The records are those of ``blipcap caption --format jsonl``, in input
        order. If every image fails, the answer is the first failure's status
        (415 format, 413 size/bomb, 422 undecodable or refused URL); if some
        succeed, the failed ones are records with an ``error``.
        """
        client = state.client_of(request)
        with state.admit(client):
            deadline = time.monotonic() + config.request_timeout
            # From here until its images are queued, this request is on its way: a batch
            # may wait a little for it (see plan_batch).
            with state.batcher.expecting(1):
                parsed = await parse_request(request, config, schemas.CaptionsRequest)
                options = caption_options(parsed.fields.get("options"), config)
                loaded = await load_inputs(parsed.inputs, config, deadline, state.model_sized)
            results = await state.caption_loaded(loaded, options, deadline, client)
        return JSONResponse({"results": [r.to_record() for r in results]})

    @app.post(
        "/v1/social",
        response_model=schemas.SocialResponse,
        tags=["social"],
        responses=ERRORS,
    )
    async def social_posts(request: Request) -> JSONResponse:
        """Alt text and post text per platform, fitted to its limits and counted its way.

        One record per image and platform (image-major). ``variants`` > 1
        samples that many captions and ranks them; ``variants[0]`` is the best.
        """
        client = state.client_of(request)
        with state.admit(client):
            deadline = time.monotonic() + config.request_timeout
            with state.batcher.expecting(1):
                parsed = await parse_request(request, config, schemas.SocialRequest)
                opts, platforms = _social_options(parsed.fields, config)
                base = caption_options(parsed.fields.get("options"), config)
                try:
                    cap_opts = opts.caption_options(base)
                except BlipcapError as exc:
                    raise RequestError(422, f"invalid options: {exc}") from None
                loaded = await load_inputs(parsed.inputs, config, deadline, state.model_sized)
            results = await state.caption_loaded(loaded, cap_opts, deadline, client)
        random_weights = bool(getattr(state.captioner, "random_weights", False))
        records = [
            social.compose(r, p, opts, random_weights=random_weights).to_record()
            for r in results
            for p in platforms
        ]
        return JSONResponse({"results": records})


def _social_options(
    fields: dict[str, Any], config: ServerConfig
) -> tuple[social.SocialOptions, list[str]]:
    """SocialOptions from the fields of a validated :class:`~.schemas.SocialRequest`."""
    most = min(10, config.max_captions)
    if fields["variants"] > most:
        raise RequestError(422, f"'variants' must be between 1 and {most} on this server")
    attribution = fields["attribution"]
    if isinstance(attribution, str):
        text = attribution.strip() or None
    else:
        text = social.DEFAULT_ATTRIBUTION if attribution else None
    options = social.SocialOptions(
        variants=fields["variants"],
        hashtags=fields["hashtags"],
        max_hashtags=fields["max_hashtags"],
        attribution=text,
    )
    return options, list(dict.fromkeys(fields["platforms"]))
