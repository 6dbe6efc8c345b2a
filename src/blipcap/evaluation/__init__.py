"""Measuring captions: COCO metrics, the paper's protocol, run agreement, golden captions, benchmarks.

Modules import their heavy dependencies (pycocoevalcap, torch) lazily, so
importing this package is cheap.
"""
