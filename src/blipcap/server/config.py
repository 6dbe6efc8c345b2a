"""Server settings, defined once.

Each field carries its :class:`Setting` (help, range, option name and unit):
``ServerConfig`` checks its values against it, and ``blipcap serve``
generates one option per field from it (see ``cli/serve.py``). This module
imports nothing heavy, so ``blipcap serve --help`` stays instant.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..images import ImageLimits

DEFAULT_DECODE_MEMORY = 2048 * 2**20
"""Equal to ``blipcap.images.DEFAULT_DECODE_MEMORY`` (a test says so); not imported from
there, because that module imports Pillow."""


@dataclass(frozen=True)
class Setting:
    """What a :class:`ServerConfig` field means, its range, and its ``blipcap serve`` option."""

    help: str
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    """The value must be above ``min``, not equal to it."""
    flag: str | None = None
    """The option's name (default: the field's, ``--max-queue``); None with ``cli=False``."""
    unit: int | float = 1
    """The option counts in units of this many of the field's (``--max-body-mb``: 1e6 bytes)."""
    option_type: type | None = None
    """The option's type when it differs from the field's (a float of MB for an int of bytes)."""
    metavar: str | None = None
    envvar: str | None = None
    cli: bool = True
    """False for the fields that the shared model options set (--model, --backend, ...)."""

    def check(self, value: Any) -> str | None:
        """Why ``value`` is out of range, or None."""
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return f"must be {'above' if self.min_open else 'at least'} {self.min:g} (got {value})"
        if self.max is not None and value > self.max:
            return f"must be at most {self.max:g} (got {value})"
        return None

    def option_default(self, default: Any) -> Any:
        """``default`` in the option's unit and type."""
        if default is None or self.unit == 1:
            return default
        value = default / self.unit
        return int(value) if self.option_type is int else value

    def option_range(self, kind: type) -> tuple[float | None, float | None]:
        """The option's bounds in its unit (an integer option's: the whole counts inside)."""

        def bound(value: float | None, whole: Any) -> float | None:
            if value is None:
                return None
            value = value / self.unit
            return whole(value) if kind is int or float(value).is_integer() else value

        return bound(self.min, math.ceil), bound(self.max, math.floor)

    def to_field(self, value: Any, field_type: str) -> Any:
        """An option's value in the field's unit and type."""
        if value is None or self.unit == 1:
            return value
        value = value * self.unit
        return round(value) if field_type == "int" else value


POSITIVE: dict[str, Any] = {"min": 0, "min_open": True}
"""A :func:`setting` range: above zero (sizes, times)."""


def setting(default: Any, help: str, *, repr: bool = True, **kw: Any) -> Any:
    """A :class:`ServerConfig` field with its :class:`Setting`."""
    return field(default=default, repr=repr, metadata={"setting": Setting(help, **kw)})


def _model(help: str) -> Any:
    # Set by the options every model-running command shares (cli/common.model_options).
    return setting("auto", help, cli=False)


@dataclass(frozen=True)
class ServerConfig:
    """How the service runs. Defaults suit one GPU or a laptop CPU behind a reverse proxy."""

    model: str | None = setting(
        None, "Hub id, local Hugging Face directory, or exported ONNX directory.", cli=False
    )
    backend: str = _model("Inference backend: auto, torch or onnx.")
    device: str = _model("Where to run: auto, cpu or cuda.")
    dtype: str = _model("Weights and activations: auto, float32, float16 or bfloat16.")
    db: str | None = setting(
        None,
        "Search index (SQLite file or postgresql:// URL) for GET /v1/search [env BLIPCAP_DB].",
        metavar="URL",
        envvar="BLIPCAP_DB",
    )

    # Dynamic batching
    max_batch_size: int = setting(8, "Most images per model batch.", min=1)
    max_wait_ms: float = setting(
        10.0, "How long a request waits for others to share its batch.", min=0
    )
    max_queue: int = setting(
        64, "Most images waiting for the model; beyond it: 503 with Retry-After.", min=1
    )
    max_client_requests: int = setting(
        0,
        "Most concurrent requests per client (API key, else IP); beyond it: 429. 0: no limit.",
        min=0,
    )
    request_timeout: float = setting(
        60.0,
        "Seconds per request in all (fetch, decode, queue, model); then 504.",
        **POSITIVE,
    )

    # Input edges
    max_body_bytes: int = setting(
        25_000_000,
        "Largest request body (413 beyond).",
        **POSITIVE,
        flag="--max-body-mb",
        unit=1_000_000,
        option_type=float,
    )
    body_timeout: float = setting(
        60.0,
        "Seconds a client has to send its whole request body; then 408.",
        **POSITIVE,
    )
    min_body_rate: float = setting(
        10_000.0,
        "kB/s a request body must average after its first 5 s, else 408. 0: no minimum.",
        min=0,
        unit=1000,
    )
    max_uploads: int = setting(
        128,
        "Most large or slow request bodies received at once; beyond it: 503 after 1 s.",
        min=1,
    )
    max_images_per_request: int = setting(
        16, "Most images per request (at most --max-queue).", min=1, flag="--max-images"
    )
    decode_memory_bytes: int = setting(
        DEFAULT_DECODE_MEMORY,
        "MiB all image decodes together may hold; beyond it decodes wait, then 503.",
        min=1,
        flag="--decode-memory-mb",
        unit=2**20,
        option_type=int,
    )
    max_pixels: int = setting(50_000_000, "Most pixels in one image (413 beyond).", min=1)
    fetch_timeout: float = setting(
        10.0,
        "Seconds to fetch one image URL in all (slow, drip-feeding hosts included); then 422.",
        **POSITIVE,
    )

    # What one request may ask of the model
    max_new_tokens: int = setting(
        100, "Most new tokens one request may ask for (422 beyond).", min=1
    )
    max_beams: int = setting(8, "Most beams one request may ask for (422 beyond).", min=1)
    max_captions: int = setting(
        10, "Most captions per image one request may ask for (422 beyond).", min=1
    )

    # Access
    api_keys: tuple[str, ...] = setting(
        (),
        "Require 'Authorization: Bearer KEY' on /v1/* (repeatable) "
        "[env BLIPCAP_API_KEYS, comma-separated].",
        repr=False,
        flag="--api-key",
        metavar="KEY",
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "Allow browser calls from this origin (repeatable).",
        flag="--cors-origin",
        metavar="ORIGIN",
    )

    def __post_init__(self) -> None:
        problems = [
            f"{f.name} {why}"
            for f, s in settings()
            if (why := s.check(getattr(self, f.name))) is not None
        ]
        if self.max_images_per_request > self.max_queue:
            problems.append(
                f"max_images_per_request must be at most max_queue ({self.max_queue}), "
                f"got {self.max_images_per_request}"
            )
        if problems:
            raise ValueError("invalid server setting(s): " + "; ".join(problems))

    @property
    def image_limits(self) -> ImageLimits:
        from ..images import ImageLimits

        return ImageLimits(max_bytes=self.max_body_bytes, max_pixels=self.max_pixels)


def settings() -> list[tuple[Field, Setting]]:
    """Every :class:`ServerConfig` field with its :class:`Setting`, in declaration order."""
    return [(f, f.metadata["setting"]) for f in fields(ServerConfig)]
