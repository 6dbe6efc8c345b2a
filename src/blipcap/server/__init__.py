"""The HTTP service: FastAPI app, dynamic batching, hard edges, metrics and the web page.

Needs the ``server`` extra: ``pip install 'blipcap[server]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServerConfig", "create_app"]

if TYPE_CHECKING:
    from .app import create_app
    from .config import ServerConfig


def __getattr__(name: str) -> Any:
    # FastAPI is imported only when the app is asked for.
    if name == "create_app":
        from .._optional import require

        require("fastapi", "server", "the HTTP service")
        from .app import create_app

        return create_app
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    raise AttributeError(f"module 'blipcap.server' has no attribute {name!r}")
