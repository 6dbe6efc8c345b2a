"""``blipcap serve``: the HTTP API and web page."""

from __future__ import annotations

import ipaddress
import os
import sys

import click

from ..server.config import settings as config_settings
from .common import EXIT_MODEL, cli_errors, model_options, warn


def _flag(field, setting) -> str:
    return setting.flag or "--" + field.name.replace("_", "-")


def _option_name(field, setting) -> str:
    """The Python name click gives the option (``--max-body-mb`` -> ``max_body_mb``)."""
    return _flag(field, setting).lstrip("-").replace("-", "_")


def config_options(command):
    """One option per ``ServerConfig`` field: name, default, range, unit and help from its Setting."""
    for field, setting in reversed(config_settings()):
        if not setting.cli:
            continue
        kw = {"help": setting.help, "metavar": setting.metavar, "envvar": setting.envvar}
        if field.type.startswith("tuple"):
            kw["multiple"] = True
        else:
            kind = setting.option_type or {"int": int, "float": float}.get(field.type)
            default = setting.option_default(field.default)
            kw.update(default=default, show_default=default is not None)
            if kind in (int, float):
                low, high = setting.option_range(kind)
                kw["type"] = (
                    click.IntRange(low, high)  # type: ignore[arg-type]
                    if kind is int
                    else click.FloatRange(low, high, min_open=setting.min_open)
                )
        command = click.option(_flag(field, setting), **kw)(command)
    return command


def config_values(options: dict) -> dict:
    """The ``ServerConfig`` fields from the generated options' values, in the fields' units."""
    values = {}
    for field, setting in config_settings():
        if setting.cli:
            value = options[_option_name(field, setting)]
            values[field.name] = (
                tuple(value)
                if field.type.startswith("tuple")
                else setting.to_field(value, field.type)
            )
    return values


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
@config_options
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
    host, port, model, backend, device, dtype, grace_period, web_bundle, log_level, **settings
):  # fmt: skip
    """Serve the captioning API and web page (one shared model, dynamic batching)."""
    from .._optional import require

    uvicorn = require("uvicorn", "server", "blipcap serve")
    from ..server import ServerConfig, create_app

    values = config_values(settings)
    keys = values["api_keys"] + tuple(
        k.strip() for k in os.environ.get("BLIPCAP_API_KEYS", "").split(",") if k.strip()
    )
    # --max-images above --max-queue could never be admitted whole: it is capped to the queue.
    most = min(values["max_images_per_request"], values["max_queue"])
    try:
        config = ServerConfig(
            model=model,
            backend=backend,
            device=device,
            dtype=dtype,
            **{**values, "api_keys": keys, "max_images_per_request": most},
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
