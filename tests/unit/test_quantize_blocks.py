"""The decoder's int8 block length: as long as allowed, never padded."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from blipcap.export.quantize import DECODER_BLOCK, decoder_block  # noqa: E402


def matmul_model(*rows: int, extra_table: tuple[int, int] | None = None):
    nodes, inits = [], []
    for i, k in enumerate(rows):
        inits.append(numpy_helper.from_array(np.zeros((k, 8), np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"y{i}"]))
    if extra_table:  # an embedding table: not a MatMul weight, must not count
        inits.append(numpy_helper.from_array(np.zeros(extra_table, np.float32), "table"))
    inputs = [
        helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1, k])
        for i, k in enumerate(rows)
    ]
    outputs = [
        helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(len(rows))
    ]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=inits))


def test_blip_sizes_get_the_full_block():
    assert DECODER_BLOCK == 128
    assert decoder_block(matmul_model(768, 3072, extra_table=(30524, 768))) == 128


def test_small_rows_get_a_block_that_divides_them():
    assert decoder_block(matmul_model(64, 128)) == 64
    assert decoder_block(matmul_model(768, 96)) == 32
    assert decoder_block(matmul_model(24)) == 16  # never below 16
