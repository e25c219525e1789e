"""Host side of edgesam: torch checkpoint -> ONNX -> MNN bundle, gated on parity.

Submodules import torch; this package file does not, so ``edgesam.convert.models``
and friends can be imported one by one.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("ConvertOptions", "convert"):
        from edgesam.convert import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
