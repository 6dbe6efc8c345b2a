"""Server settings, defined once (the CLI flags map onto these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..images import DEFAULT_DECODE_MEMORY, ImageLimits


@dataclass(frozen=True)
class ServerConfig:
    """How the service runs. Defaults suit one GPU or a laptop CPU behind a reverse proxy."""

    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    db: str | None = None
    """Search index database (SQLite path or postgresql:// URL) for GET /v1/search."""

    # Dynamic batching
    max_batch_size: int = 8
    """Most images per model call."""
    max_wait_ms: float = 10.0
    """How long the oldest request waits for others to join its batch."""
    max_queue: int = 64
    """Most images waiting for the model; beyond it requests get 503 + Retry-After."""
    max_client_requests: int = 0
    """Most concurrent requests per client (API key, else IP); beyond it 429. 0: no limit."""
    request_timeout: float = 60.0
    """Total seconds per request (fetching, decoding, queueing, model); then 504."""

    # Input edges
    max_body_bytes: int = 25_000_000
    body_timeout: float = 60.0
    """Seconds a client has to send its whole request body; then 408."""
    min_body_rate: float = 10_000.0
    """Bytes per second a body must average after its first 5 s, else 408 (0: no minimum)."""
    max_uploads: int = 128
    """Most request bodies being received at once (bounds their memory); then a short wait, 503."""
    max_images_per_request: int = 16
    decode_memory_bytes: int = DEFAULT_DECODE_MEMORY
    """The process-wide decode-memory budget (see blipcap.images.set_decode_memory_budget)."""
    max_pixels: int = 50_000_000
    fetch_timeout: float = 10.0
    """Total wall-clock seconds to fetch one image URL (drip-feeding servers included)."""

    # What one request may ask of the model
    max_new_tokens: int = 100
    max_beams: int = 8
    max_captions: int = 10

    # Access
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = {
            "max_batch_size": self.max_batch_size >= 1,
            "max_wait_ms": self.max_wait_ms >= 0,
            "max_queue": self.max_queue >= 1,
            "max_client_requests": self.max_client_requests >= 0,
            "request_timeout": self.request_timeout > 0,
            "max_body_bytes": self.max_body_bytes >= 1,
            "body_timeout": self.body_timeout > 0,
            "min_body_rate": self.min_body_rate >= 0,
            "max_uploads": self.max_uploads >= 1,
            "decode_memory_bytes": self.decode_memory_bytes >= 1,
            "max_images_per_request": 1 <= self.max_images_per_request <= self.max_queue,
            "max_pixels": self.max_pixels >= 1,
            "fetch_timeout": self.fetch_timeout > 0,
            "max_new_tokens": self.max_new_tokens >= 1,
            "max_beams": self.max_beams >= 1,
            "max_captions": self.max_captions >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid server setting(s): {', '.join(bad)} (sizes and times must be positive, min_body_rate at least 0; "
                "max_images_per_request must be between 1 and max_queue)"
            )

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_body_bytes, max_pixels=self.max_pixels)
