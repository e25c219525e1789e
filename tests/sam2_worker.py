"""Runs edgesam's SAM2ImagePredictor in a fresh interpreter with no torch, for test_sam2.py.

usage: python sam2_worker.py BUNDLE BACKEND PRECISION IMAGES_DIR OUT.npz
The calls are the official SAM 2 example's, with one import changed. Reads IMAGES_DIR/<name>.npy
for every name in SIZES, runs every prompt of ``prompts`` (and a refinement of each with its
best low-res logits as mask input), and saves packed masks, scores and logits.
"""
from __future__ import annotations

import sys

import numpy as np

SIZES = {"landscape": (400, 600), "portrait": (900, 300), "panorama": (150, 1000), "tiny": (40, 56),
         "12mp": (3000, 4000)}
HEAVY = ("torch", "torchvision", "timm", "onnx")


BIG_PROMPTS = ("point", "boxes_batch")  # at 12 MP (every mask upscaled to 12 MP): a point, refined, and a batch


def prompts(h: int, w: int, name: str = "") -> dict:
    box = np.array([w * 0.1, h * 0.1, w * 0.7, h * 0.8])
    every = {
        "point": dict(point_coords=np.array([[w * 0.3, h * 0.6]]), point_labels=np.array([1])),
        "point_single": dict(point_coords=np.array([[w * 0.3, h * 0.6]]), point_labels=np.array([1]),
                             multimask_output=False),
        "pos_neg": dict(point_coords=np.array([[w * 0.3, h * 0.6], [w * 0.7, h * 0.2]]), point_labels=np.array([1, 0])),
        "box_single": dict(box=box, multimask_output=False),
        "box_point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1]), box=box),
        "boxes_batch": dict(box=np.array([[0, 0, w / 2, h / 2], [w / 3, h / 3, w, h], box]), multimask_output=False),
        "normalized": dict(point_coords=np.array([[0.3, 0.6]]), point_labels=np.array([1]), normalize_coords=False),
    }
    return {k: v for k, v in every.items() if k in BIG_PROMPTS} if name == "12mp" else every


def pack(m: np.ndarray) -> np.ndarray:
    return np.packbits(m > 0.5, axis=None)


def main(bundle: str, backend: str, precision: str, images: str, out: str) -> None:
    from edgesam.runtime import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(bundle, backend=backend, precision=precision)
    res = {}
    for name, (h, w) in SIZES.items():
        predictor.set_image(np.load(f"{images}/{name}.npy"))
        res[f"{name}/image_embed"] = predictor.get_image_embedding()
        for pname, kw in prompts(h, w, name).items():
            masks, scores, logits = predictor.predict(**kw)
            key = f"{name}/{pname}"
            res[key + "/masks"], res[key + "/shape"] = pack(masks), np.array(masks.shape)
            res[key + "/scores"], res[key + "/low"] = scores, logits
            res[key + "/dtypes"] = np.array([str(masks.dtype), str(scores.dtype), str(logits.dtype)])
            if logits.ndim == 3:  # one prompt: refine with its best mask, as the official notebook does
                refined, _, _ = predictor.predict(**kw, mask_input=logits[np.argmax(scores)][None])
                res[key + "/masks_refined"] = pack(refined)
        logits, _, _ = predictor.predict(**prompts(h, w)["point"], return_logits=True)
        res[f"{name}/logits_sample"] = logits[:, ::7, ::7]
    res["heavy_modules"] = np.array([m for m in HEAVY if m in sys.modules] or [""])
    np.savez(out, **res)


if __name__ == "__main__":
    main(*sys.argv[1:6])
