"""Device side of edgesam: needs only MNN and numpy (ONNX Runtime optional).

Never imports torch, torchvision, timm or onnx.
"""
from __future__ import annotations

__all__ = ["SamPredictor", "SamAutomaticMaskGenerator"]


def __getattr__(name: str):
    if name == "SamPredictor":
        from edgesam.runtime.predictor import SamPredictor

        return SamPredictor
    if name == "SamAutomaticMaskGenerator":
        from edgesam.runtime.amg import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator
    raise AttributeError(name)
