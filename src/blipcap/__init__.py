"""blipcap: turn images into useful text with BLIP.

>>> from blipcap import Captioner
>>> cap = Captioner()                      # doctest: +SKIP
>>> cap.caption(["photo.jpg"])[0].caption  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BlipcapError,
    InputError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    OptionsError,
)
from .options import PRESETS, CaptionOptions, resolve_options
from .results import Caption, ItemError, Provenance
from .version import __version__

__all__ = [
    "BlipcapError",
    "Caption",
    "CaptionOptions",
    "Captioner",
    "InputError",
    "ItemError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OptionsError",
    "PRESETS",
    "Provenance",
    "resolve_options",
    "__version__",
]

if TYPE_CHECKING:
    from .captioner import Captioner


def __getattr__(name: str) -> Any:
    # Captioner pulls in the model stack; import it only when asked for.
    if name == "Captioner":
        from .captioner import Captioner

        return Captioner
    raise AttributeError(f"module 'blipcap' has no attribute {name!r}")
