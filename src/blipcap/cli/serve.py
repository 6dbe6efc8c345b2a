"""``blipcap serve``: the HTTP API and web page."""

from __future__ import annotations

import ipaddress
import os
import sys

import click

from .common import EXIT_MODEL, cli_errors, model_options, warn


@click.command(
    "serve",
    epilog="""\b
Examples:
  blipcap serve                                  # http://127.0.0.1:8000/ (web page), /docs (API)
  blipcap serve --model Salesforce/blip-image-captioning-base --port 9000
  blipcap serve --host 0.0.0.0 --api-key "$KEY" --cors-origin https://cms.example.org
  blipcap serve --db photos.sqlite               # enables GET /v1/search over that index
  curl -F files=@cat.jpg http://127.0.0.1:8000/v1/captions
  blipcap serve --web-bundle blip-web            # /web/: captioning in the browser (export web)

\b
Endpoints: POST /v1/captions, POST /v1/social, GET /v1/info, GET /livez,
GET /readyz (503 until the model is loaded and warm), GET /metrics
(Prometheus), plus /v1/alt-text, /v1/documents and /v1/search when those
features are available. SIGTERM: readiness turns 503, new work is refused,
requests in flight finish (up to --grace-period seconds), then it exits.

\b
Exit status: 0 after a clean shutdown, 2 on usage or configuration errors
(a missing server extra), 3 when the model could not be found or loaded.
""",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@model_options
@click.option(
    "--db",
    envvar="BLIPCAP_DB",
    default=None,
    metavar="URL",
    help="Search index (SQLite file or postgresql:// URL) for GET /v1/search [env BLIPCAP_DB].",
)
@click.option(
    "--max-batch-size",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most images per model batch.",
)
@click.option(
    "--max-wait-ms",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How long a request waits for others to share its batch.",
)
@click.option(
    "--max-queue",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most images waiting for the model; beyond it: 503 with Retry-After.",
)
@click.option(
    "--max-client-requests",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Most concurrent requests per client (API key, else IP); beyond it: 429. 0: no limit.",
)
@click.option(
    "--request-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds per request in all (fetch, decode, queue, model); then 504.",
)
@click.option(
    "--max-body-mb",
    default=25.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest request body (413 beyond).",
)
@click.option(
    "--body-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a client has to send its whole request body; then 408.",
)
@click.option(
    "--min-body-rate",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="kB/s a request body must average after its first 5 s, else 408. 0: no minimum.",
)
@click.option(
    "--max-uploads",
    default=128,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most large or slow request bodies received at once; beyond it: 503 after 1 s.",
)
@click.option(
    "--decode-memory-mb",
    default=2048,  # blipcap.images.DEFAULT_DECODE_MEMORY (not imported: --help stays light)
    show_default=True,
    type=click.IntRange(min=1),
    help="MiB all image decodes together may hold; beyond it decodes wait, then 503.",
)
@click.option(
    "--max-images",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most images per request.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    metavar="KEY",
    help="Require 'Authorization: Bearer KEY' on /v1/* (repeatable) [env BLIPCAP_API_KEYS, comma-separated].",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser calls from this origin (repeatable).",
)
@click.option(
    "--grace-period",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGTERM, seconds to let requests in flight finish.",
)
@click.option(
    "--web-bundle",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    metavar="DIR",
    help="Also serve a bundle from `blipcap export web` at /web/ (cross-origin isolated, so "
    "its WASM runs with threads; captioning there happens in the browser).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@cli_errors
def serve(
    host, port, model, backend, device, dtype, db, max_batch_size, max_wait_ms, max_queue,
    max_client_requests, request_timeout, max_body_mb, body_timeout, min_body_rate, max_uploads,
    decode_memory_mb, max_images, api_keys, cors_origins, grace_period, log_level,
    web_bundle=None,
):  # fmt: skip
    """Serve the captioning API and web page (one shared model, dynamic batching)."""
    from .._optional import require

    uvicorn = require("uvicorn", "server", "blipcap serve")
    from ..server import ServerConfig, create_app

    keys = tuple(api_keys) + tuple(
        k.strip() for k in os.environ.get("BLIPCAP_API_KEYS", "").split(",") if k.strip()
    )
    try:
        config = ServerConfig(
            model=model,
            backend=backend,
            device=device,
            dtype=dtype,
            db=db,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            max_client_requests=max_client_requests,
            request_timeout=request_timeout,
            max_body_bytes=int(max_body_mb * 1_000_000),
            body_timeout=body_timeout,
            min_body_rate=min_body_rate * 1000,
            max_uploads=max_uploads,
            decode_memory_bytes=decode_memory_mb * 2**20,
            max_images_per_request=min(max_images, max_queue),
            api_keys=keys,
            cors_origins=tuple(cors_origins),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if not keys and not _is_loopback(host):
        warn(
            f"listening on {host} without --api-key: anyone who can reach this port can use "
            "the model"
        )
    fatal: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        if server is not None:
            server.should_exit = True

    if web_bundle is not None:
        from ..web.serving import check_bundle

        web_bundle = check_bundle(web_bundle)  # not a bundle: a usage error before loading
    app = create_app(config, on_fatal=on_fatal, web_bundle=web_bundle)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGTERM / SIGINT
            # Readiness turns 503 and new work is refused at once; uvicorn then
            # stops accepting connections and waits for requests in flight.
            app.state.blipcap.draining = True
            super().handle_exit(sig, frame)

    # uvicorn itself times out neither headers nor bodies and, without limit_concurrency
    # (left unset on purpose), refuses nothing: the app receives every body under its own
    # deadline, rate and upload bound before a request counts as in progress (see limits.py).
    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=grace_period,
            server_header=False,
        )
    )
    click.echo(f"blipcap: serving on http://{_display(host)}:{port}/ (API docs at /docs)", err=True)
    server.run()
    if fatal:
        # The server's log has just said why; say only what it means for the process.
        warn("stopped: the model could not be loaded (see above)")
        sys.exit(EXIT_MODEL)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _display(host: str) -> str:
    return f"[{host}]" if ":" in host else host
