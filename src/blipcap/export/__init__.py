"""ONNX export of the lean engine (``blipcap export onnx``).

Importing this package needs nothing beyond the standard library: the
manifest (:mod:`blipcap.backends.onnx_manifest`) is read by the ONNX backend,
which runs without torch. The exporter itself (:func:`export_onnx`) needs the ``export`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_onnx", "ExportReport"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module 'blipcap.export' has no attribute {name!r}")
