"""The lean BLIP captioning model.

``config`` and ``processing`` need only numpy, Pillow and tokenizers (the ONNX
backend uses them without torch). ``vision``, ``text`` and ``weights`` are the
PyTorch implementation loaded by the torch backend.
"""
