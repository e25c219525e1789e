"""Device side of edgesam: needs only MNN and numpy (ONNX Runtime optional).

Never imports torch, torchvision, timm or onnx.
"""
from __future__ import annotations

__all__ = ["SamPredictor", "SamAutomaticMaskGenerator", "SAM2ImagePredictor", "SAM2AutomaticMaskGenerator",
           "SAM2VideoPredictor", "SAM2VideoStream"]


def __getattr__(name: str):
    if name == "SamPredictor":
        from edgesam.runtime.predictor import SamPredictor

        return SamPredictor
    if name == "SamAutomaticMaskGenerator":
        from edgesam.runtime.amg import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator
    if name == "SAM2ImagePredictor":
        from edgesam.runtime.sam2_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor
    if name == "SAM2AutomaticMaskGenerator":
        from edgesam.runtime.amg import SAM2AutomaticMaskGenerator

        return SAM2AutomaticMaskGenerator
    if name in ("SAM2VideoPredictor", "SAM2VideoStream"):
        from edgesam.runtime import sam2_video_predictor

        return getattr(sam2_video_predictor, name)
    raise AttributeError(name)
