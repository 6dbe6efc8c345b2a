"""int8 for CPUs: dynamic int8 for the vision encoder; int8 weights for the decoder.

* Vision encoder (and the cross-attention key/value projections that run on
  its output): every MatMul with a constant weight becomes ONNX Runtime's
  dynamic int8 MatMul - weights int8 per output channel, activations
  quantized to uint8 on the fly per tensor. uint8 x int8 is the combination
  the VNNI (and AMX) dot-product instructions execute natively.
  Activation-by-activation products (attention) stay float32, in ONNX
  Runtime's fused attention: quantizing them as well measured no faster on a
  VNNI CPU (without a fused int8 kernel the scores make extra passes through
  memory).
* Decoder (``int8`` only): every weight - projections, feed-forward layers,
  LM head - is stored int8 (``MatMulNBits``, 8 bits, symmetric, blocks of
  128 along the input dimension: a decoding step 12-18% faster than blocks of
  32 for a logit cosine to float32 of 0.99968 against 0.99974, see
  docs/onnx.md); the word embeddings become an int8 table with
  a scale per row (ONNX Runtime's quantized Gather takes 4 bits only). The
  products run with ``accuracy_level=4``: ONNX Runtime quantizes each block of
  128 activations to int8 on the fly. This is the only fast 8-bit kernel in
  ONNX Runtime 1.32: the weight-only levels (0-3, float compute) measured
  8x slower than the float32 decoder, so a strictly weight-only decoder is
  not offered. ``int8-vision`` keeps the decoder float32 instead (the
  OpenVINO BLIP work found the decoder the sensitive half).

What each costs in accuracy and buys in speed is measured in docs/onnx.md;
every ``blipcap export onnx --quantize ...`` prints its own agreement figures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..backends.onnx_format import DECODER_FILE, VISION_FILE
from ..errors import ExportError

DECODER_BLOCK = 128
DECODER_ACCURACY_LEVEL = 4


def decoder_block(model) -> int:
    """``DECODER_BLOCK``, or the largest smaller power of two (>= 16) that divides every
    weight's input dimension: a block longer than a row would be padded with zeros."""
    weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul"}
    rows = {i.dims[0] for i in model.graph.initializer if i.name in weights and len(i.dims) == 2}
    block = DECODER_BLOCK
    while block > 16 and any(k % block for k in rows):
        block //= 2
    return block


def quantize_int8(directory: Path, decoder: bool = True) -> dict[str, Any]:
    """Replace the float32 graphs in ``directory`` by int8 ones (the decoder too unless ``decoder=False``)."""
    onnx = __import__("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    vision_path, decoder_path = directory / VISION_FILE, directory / DECODER_FILE
    tmp = directory / f"{VISION_FILE}.int8.tmp"
    # onnxruntime.quantization logs advice on the root logger; keep the CLI quiet.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            vision_path,
            tmp,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
        tmp.replace(vision_path)
        if decoder:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            model = onnx.load(str(decoder_path))
            gemm_to_matmul(model)
            quantize_embeddings(model)
            block = decoder_block(model)
            quantizer = MatMulNBitsQuantizer(
                model,
                bits=8,
                block_size=block,
                is_symmetric=True,
                accuracy_level=DECODER_ACCURACY_LEVEL,
                op_types_to_quantize=("MatMul",),
            )
            quantizer.process()
            model = quantizer.model.model
            prune(model)
            onnx.save(model, str(decoder_path))
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizers raise assorted errors
        raise ExportError(f"int8 quantization failed: {exc}") from exc
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    return {
        "vision": "dynamic int8 MatMul (weights int8 per channel, activations uint8 per tensor)",
        "decoder": (
            f"int8 weights: MatMulNBits (symmetric, blocks of {block}, "
            f"accuracy_level {DECODER_ACCURACY_LEVEL}), word embeddings int8 with a scale per row"
            if decoder
            else "float32"
        ),
    }


def gemm_to_matmul(model) -> int:
    """Rewrite ``Gemm(A, W, C, transB=1)`` with a constant ``W`` as ``MatMul(A, W^T) + C``.

    The exporter writes ``nn.Linear`` on 2-D inputs (the LM head) as Gemm,
    which the weight-only quantizer does not handle. Returns how many were rewritten.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    # The tied LM-head weight can reach Gemm through an Identity of the embedding.
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    new_nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = alias.get(node.input[1], node.input[1]) if node.op_type == "Gemm" else None
        if (
            weight in inits
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
        ):
            w = numpy_helper.to_array(inits[weight])
            if attrs.get("transB", 0):
                w = np.ascontiguousarray(w.T)
            w_name = f"{node.name or weight}_matmul_weight"
            graph.initializer.append(numpy_helper.from_array(w, w_name))
            mm = f"{node.output[0]}_matmul"
            new_nodes.append(
                helper.make_node(
                    "MatMul", [node.input[0], w_name], [mm], name=f"{node.name}_MatMul"
                )
            )
            if len(node.input) > 2 and node.input[2]:
                new_nodes.append(
                    helper.make_node(
                        "Add", [mm, node.input[2]], [node.output[0]], name=f"{node.name}_Add"
                    )
                )
            else:
                new_nodes.append(helper.make_node("Identity", [mm], [node.output[0]]))
            count += 1
        else:
            new_nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    return count


EMBEDDING_MIN_ELEMENTS = 1 << 20  # the word embeddings, not the 512-row position table


def quantize_embeddings(model) -> int:
    """Store large ``Gather`` tables (the word embeddings) as int8 rows with a float scale each.

    ``Gather(W, ids)`` becomes ``Cast(Gather(Wq, ids)) * Gather(scale, ids)``:
    only the looked-up rows are dequantized. Returns how many were rewritten.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes, done = [], {}
    for node in graph.node:
        table = node.input[0] if node.op_type == "Gather" else None
        init = inits.get(table) if table else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (
            init is None
            or axis != 0
            or len(init.dims) != 2
            or np.prod(init.dims) < EMBEDDING_MIN_ELEMENTS
        ):
            new_nodes.append(node)
            continue
        if table not in done:
            w = numpy_helper.to_array(init).astype(np.float32)
            scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 127.0
            q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
            graph.initializer.append(numpy_helper.from_array(q, f"{table}_int8"))
            graph.initializer.append(
                numpy_helper.from_array(scale.astype(np.float32), f"{table}_scale")
            )
            done[table] = True
        out, ids = node.output[0], node.input[1]
        new_nodes += [
            helper.make_node("Gather", [f"{table}_int8", ids], [f"{out}_q"], axis=0),
            helper.make_node("Gather", [f"{table}_scale", ids], [f"{out}_s"], axis=0),
            helper.make_node("Cast", [f"{out}_q"], [f"{out}_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{out}_f", f"{out}_s"], [out]),
        ]
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    return len(done)


def prune(model) -> None:
    """Drop nodes whose outputs nobody reads and initializers no node uses."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    graph.ClearField("node")
    graph.node.extend(reversed(kept))
    unused = [i for i in graph.initializer if i.name not in needed]
    for init in unused:
        graph.initializer.remove(init)
