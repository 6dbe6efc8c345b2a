"""ONNX export of the lean engine (``blipcap export onnx``).

Importing this package needs nothing beyond the standard library. The
directory format it writes (the ``blipcap_onnx.json`` manifest, file and graph
names) lives with its reader in :mod:`blipcap.backends.onnx_format`. The
exporter itself (:func:`export_onnx`) needs the ``export`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_onnx", "ExportReport", "export_ort", "OrtReport"]


def __getattr__(name: str) -> Any:
    if name in ("export_ort", "OrtReport"):  # blipcap export ort (.ort files for mobile builds)
        from . import ort

        return getattr(ort, name)
    if name in __all__:
        from . import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module 'blipcap.export' has no attribute {name!r}")
