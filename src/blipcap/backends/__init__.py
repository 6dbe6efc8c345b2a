"""Inference backends behind one contract (see :class:`blipcap.decoding.DecodingBackend`).

Each backend module imports its runtime lazily and raises an install hint when
it is missing: ``torch`` (PyTorch, CPU/CUDA) and ``onnx`` (ONNX Runtime).
"""
