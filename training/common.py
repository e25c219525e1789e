"""Shared pieces of the demo-model training: the frozen encoder trunk, feature cache and targets."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from edgesam.runtime.scenes import make_scene

ENCODER_SEED = 0          # the frozen TinyViT trunk is torch's default init under this seed
TRAIN_SEEDS = range(0, 100_000)
HELDOUT_SEEDS = range(100_000, 100_040)   # never used for training
CACHE = Path(os.environ.get("EDGESAM_TRAIN_CACHE", Path.home() / ".cache" / "edgesam-train"))


def base_model():
    """vit_t with default (seeded) init: the trunk stays frozen, the rest is trained."""
    from edgesam.convert.models import build_model
    torch.manual_seed(ENCODER_SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model("vit_t")


def input_tensor(model, image: np.ndarray) -> torch.Tensor:
    """The official predictor's preprocessing: ResizeLongestSide (1024) then normalise and pad."""
    from mobile_sam.utils.transforms import ResizeLongestSide
    resized = ResizeLongestSide(1024).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return model.preprocess(x)


@torch.no_grad()
def trunk_features(model, image: np.ndarray) -> torch.Tensor:
    """TinyViT output before the neck: 1 x 320 x 64 x 64 (the neck is trained, the trunk is not)."""
    enc = model.image_encoder
    x = enc.patch_embed(input_tensor(model, image))
    for layer in enc.layers:
        x = layer(x)
    return x.view(1, 64, 64, -1).permute(0, 3, 1, 2).contiguous()


def low_res_targets(masks: np.ndarray) -> np.ndarray:
    """Instance masks in the decoder's 256 x 256 frame (resized longest side 1024, padded, /4).

    Nearest sampling at output pixel centres; K x 256 x 256 bool."""
    k, h, w = masks.shape
    s = 256.0 / max(h, w)
    oh, ow = int(h * s + 0.5), int(w * s + 0.5)
    ys = np.minimum(((np.arange(oh) + 0.5) / s).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(ow) + 0.5) / s).astype(np.int64), w - 1)
    out = np.zeros((k, 256, 256), bool)
    out[:, :oh, :ow] = masks[:, ys][:, :, xs]
    return out


def cached_scene(model, seed: int) -> dict:
    """Trunk features (fp16) and low-res targets for one scene, cached on disk."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"scene{seed}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    sc = make_scene(seed)
    feat = trunk_features(model, sc.image)[0].numpy().astype(np.float16)
    targets = low_res_targets(sc.masks)
    h, w = sc.image.shape[:2]
    item = {"feat": feat, "targets": targets, "size": np.array([h, w])}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **item)
    os.replace(tmp, path)
    return item
