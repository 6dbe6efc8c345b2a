"""Read a TensorFlow ``tf_model.h5`` (Keras HDF5 weights) by name, without TensorFlow.

transformers' TF models save every variable under a scope that mirrors the
PyTorch module path: ``blip_for_conditional_generation/vision_model/encoder/
layers_._0/self_attn/qkv/kernel:0`` is PyTorch's
``vision_model.encoder.layers.0.self_attn.qkv.weight``. The conversion follows
transformers' ``modeling_tf_pytorch_utils.convert_tf_weight_name_to_pt_weight_name``:
drop the first scope (the model's name) and the ``:0`` suffix, ``_._`` is a
list index, ``kernel``/``embeddings``/``gamma`` become ``weight`` and ``beta``
``bias``; Dense kernels are stored ``[in, out]`` (PyTorch: ``[out, in]``) and
Conv2D kernels ``[h, w, in, out]`` (PyTorch: ``[out, in, h, w]``).
Only arrays are read (h5py datasets): an HDF5 file cannot run code on load.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import ModelLoadError

TF_WEIGHTS = "tf_model.h5"


def tf_to_pt_name(tf_name: str) -> tuple[str, str]:
    """``(pytorch name, transpose)`` for a TF variable name; transpose is ``none``, ``dense`` or ``conv2d``.

    The transpose kind is decided later from the array's rank (a ``kernel`` of
    rank 4 is a Conv2D, of rank 2 a Dense); here ``kernel`` names give ``dense``.
    """
    name = tf_name.removesuffix(":0")
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)  # '$1___$2' -> '$2'
    name = re.sub(r"//+", "/", name.replace("_._", "/"))
    parts = name.split("/")
    if len(parts) > 1:
        parts = parts[1:]  # the model's own scope
    last = parts[-1]
    transpose = "dense" if last == "kernel" else "none"
    if last in ("kernel", "embeddings", "gamma"):
        parts[-1] = "weight"
    elif last == "beta":
        parts[-1] = "bias"
    return ".".join(parts), transpose


def to_pytorch_layout(array: np.ndarray, transpose: str) -> np.ndarray:
    if transpose == "dense" and array.ndim == 4:  # Conv2D: HWIO -> OIHW
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if transpose == "dense" and array.ndim == 3:  # Conv1D: KIO -> OIK
        return np.ascontiguousarray(array.transpose(2, 1, 0))
    if transpose == "dense" and array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(array)


def tf_variable_names(f) -> list[tuple[str, object]]:
    """``(variable name, dataset)`` of every weight, in the order Keras saved them."""
    out = []
    layer_names = f.attrs.get("layer_names")
    if layer_names is None:  # a Keras whole-model file keeps the weights one group down
        if "model_weights" in f:
            return tf_variable_names(f["model_weights"])
        raise ModelLoadError(
            f"{f.filename} is not a Keras weights file (no layer_names attribute); "
            "expected tf_model.h5 as written by TFBlipForConditionalGeneration.save_pretrained"
        )
    for layer in layer_names:
        layer = layer.decode() if isinstance(layer, bytes) else str(layer)
        group = f[layer]
        for name in group.attrs.get("weight_names", []):
            name = name.decode() if isinstance(name, bytes) else str(name)
            out.append((name, group[name]))
    return out


def read_tf_h5(path: Path) -> dict[str, np.ndarray]:
    """The weights of ``tf_model.h5`` under their PyTorch names, in PyTorch layout (numpy arrays)."""
    h5py = require("h5py", "tf", "reading TensorFlow weights (tf_model.h5)")
    state: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            for tf_name, dataset in tf_variable_names(f):
                pt_name, transpose = tf_to_pt_name(tf_name)
                if pt_name in state:
                    raise ModelLoadError(
                        f"{path}: two TensorFlow variables map to {pt_name} (the second is "
                        f"{tf_name}); the file is not a transformers TF checkpoint"
                    )
                state[pt_name] = to_pytorch_layout(np.asarray(dataset[()]), transpose)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError...
        raise ModelLoadError(
            f"could not read TensorFlow weights from {path}: {exc}. The file may be truncated or "
            "corrupt; delete it and download the model again"
        ) from exc
    return state
