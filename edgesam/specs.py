"""Model specs: what each supported model is, and how to tell one from its weights.

Everything here is plain data so the runtime, the CLI and the converter share it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

IMAGE_SIZE = 1024  # longest side after ResizeLongestSide
EMBED_SHAPE = (1, 256, 64, 64)
LOWRES = 256  # low-res mask logits are 256x256
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# The exported graphs' inputs and outputs, shared by the exporter and the runtime.
ENCODER_INPUTS = {"image": [1, 3, IMAGE_SIZE, IMAGE_SIZE]}
ENCODER_OUTPUTS = {"image_embeddings": list(EMBED_SHAPE)}
DECODER_INPUTS = {
    "image_embeddings": list(EMBED_SHAPE),
    "point_coords": ["B", "N", 2],  # 1024-frame (after apply_coords), XY
    "point_labels": ["B", "N"],  # 1/0 point, 2/3 box corners, -1 padding
    "mask_input": ["M", 1, LOWRES, LOWRES],  # M = 1 (shared) or B
    "has_mask_input": ["M"],
}
DECODER_OUTPUTS = {"iou_predictions": ["B", 4], "low_res_masks": ["B", 4, LOWRES, LOWRES]}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "mobilesam" (TinyViT encoder), "sam" (ViT encoder) or "sam2" (Hiera encoder)
    description: str
    encoder_depth: int  # ViT blocks (sam), TinyViT stages (mobilesam) or Hiera blocks (sam2)
    encoder_width: int  # ViT embed dim, TinyViT's first stage width, or Hiera's patch embedding width
    user_visible: bool = True


MODELS: dict[str, ModelSpec] = {
    "vit_t": ModelSpec("vit_t", "mobilesam", "MobileSAM (TinyViT-5M encoder)", 4, 64),
    "vit_b": ModelSpec("vit_b", "sam", "SAM ViT-B", 12, 768),
    "vit_l": ModelSpec("vit_l", "sam", "SAM ViT-L", 24, 1024),
    "vit_h": ModelSpec("vit_h", "sam", "SAM ViT-H", 32, 1280),
    # Test-only: a 3-stage TinyViT encoder (16-32-64 wide; 0.75 M parameters, 6.8 GFLOP against vit_t's
    # 77.5) with MobileSAM's neck and decoder: small enough for qemu in CI (scripts/arm-lane.sh).
    "vit_tiny_test": ModelSpec("vit_tiny_test", "mobilesam", "test-only tiny TinyViT + MobileSAM decoder",
                               3, 16, user_visible=False),
}
# SAM 2 and 2.1 (Hiera image encoders): the sam2 package's configs name them; a checkpoint is told
# apart by its trunk's depth and width, and 2.1 from 2.0 by keys only 2.1 has.
SAM2_SIZES = {"t": ("tiny", 12, 96), "s": ("small", 16, 96), "b+": ("base+", 24, 112), "l": ("large", 48, 144)}
SAM2_ONLY_21_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")
MODELS.update({f"sam{v}_hiera_{size}": ModelSpec(f"sam{v}_hiera_{size}", "sam2", f"SAM {v} Hiera-{word}", depth, width)
               for v in ("2", "2.1") for size, (word, depth, width) in SAM2_SIZES.items()})
# Test-only: a 5-block Hiera 8 wide with SAM 2.1's neck and decoder (small enough for qemu).
MODELS["sam2_tiny_test"] = ModelSpec("sam2_tiny_test", "sam2", "test-only tiny Hiera + SAM 2.1 decoder", 5, 8,
                                     user_visible=False)


def get_spec(name: str) -> ModelSpec:
    from edgesam.errors import InputError

    try:
        return MODELS[name]
    except KeyError:
        visible = ", ".join(n for n, s in MODELS.items() if s.user_visible)
        raise InputError(f"unknown model {name!r}; choose one of {visible}") from None


def guess_model(keys: Iterable[str], shapes: Optional[dict] = None) -> Optional[str]:
    """Tell which model a state_dict belongs to from its keys (and pos_embed width).

    Returns a model name, or None when the keys look like no SAM model at all.
    """
    keys = list(keys)
    if any(k.startswith("image_encoder.trunk.") for k in keys):
        return _guess_sam2(keys, shapes)
    if any(k.startswith("image_encoder.layers.") for k in keys):
        return "vit_t"
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    if not blocks:
        return None
    depth = max(blocks) + 1
    width = None
    if shapes and "image_encoder.pos_embed" in shapes:
        width = int(shapes["image_encoder.pos_embed"][-1])
    for spec in MODELS.values():
        if spec.family == "sam" and spec.encoder_depth == depth and width in (None, spec.encoder_width):
            return spec.name
    return f"an unknown SAM ViT ({depth} blocks, width {width})"


def _guess_sam2(keys: list, shapes: Optional[dict]) -> str:
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else 0
    width = None
    if shapes and "image_encoder.trunk.patch_embed.proj.weight" in shapes:
        width = int(shapes["image_encoder.trunk.patch_embed.proj.weight"][0])
    version = "2.1" if all(k in keys for k in SAM2_ONLY_21_KEYS) else "2"
    for size, (_, d, w) in SAM2_SIZES.items():
        if d == depth and width in (None, w):
            return f"sam{version}_hiera_{size}"
    return f"an unknown SAM {version} Hiera ({depth} blocks, width {width})"
