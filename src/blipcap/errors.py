"""The blipcap error tree.

Every message says what went wrong *and* how to fix it. Errors about a single
input (an unreadable image, a refused URL) derive from :class:`ItemError`-able
classes and become per-item errors in results; they never stop a batch.
"""

from __future__ import annotations


class BlipcapError(Exception):
    """Base class of every error blipcap raises on purpose."""


class OptionsError(BlipcapError, ValueError):
    """Decoding or command options that do not make sense together."""


class MissingDependencyError(BlipcapError, ImportError):
    """An optional stack (an extra) is not installed."""

    def __init__(self, module: str, extra: str, purpose: str = ""):
        self.module = module
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"The Python package {module!r} is needed{what} but is not installed. "
            f"Install it with: pip install 'blipcap[{extra}]'"
        )


class ModelNotFoundError(BlipcapError):
    """The model could not be found locally or downloaded."""


class ModelLoadError(BlipcapError):
    """Model files were found but could not be loaded (missing keys, bad shapes, corrupt files)."""


class BackendError(BlipcapError):
    """A backend failed or cannot run with the requested device/dtype."""


class ExportError(BlipcapError):
    """ONNX export or its verification failed."""


class InputError(BlipcapError):
    """A single input could not be used. Reported per item; the batch carries on."""


class UnsupportedFormatError(InputError):
    """The bytes are not one of the allow-listed image formats."""


class ImageTooLargeError(InputError):
    """The image exceeds the byte, pixel or frame limits."""


class CorruptImageError(InputError):
    """The image could not be decoded (truncated, corrupt, empty)."""


class DecodeCancelledError(InputError):
    """Decoding stopped before the end: its deadline passed, it was cancelled, or it waited
    too long for the process's decode-memory budget."""


class DecodeBusyError(DecodeCancelledError):
    """Decoding never started: it waited too long for the process's decode-memory budget,
    which other images held. Retrying later can succeed (the server answers 503)."""


class FetchError(InputError):
    """A remote image could not be fetched, or the URL was refused (SSRF protection)."""


class OutOfMemoryError(BlipcapError):
    """The model ran out of memory even at batch size 1."""


class MissingSystemDependencyError(BlipcapError):
    """A program outside Python is missing (e.g. Java, which the COCO caption metrics run on)."""


class EvaluationError(BlipcapError):
    """An annotation, predictions or golden-captions file that cannot be used as given."""
