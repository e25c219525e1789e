"""Runs the edgesam runtime in a fresh interpreter with no torch, for test_predictor.py.

usage: python predictor_worker.py BUNDLE BACKEND PRECISION IMAGES_DIR OUT.npz
Reads IMAGES_DIR/<name>.npy for every name in SIZES, runs every prompt of ``prompts``
(and a mask_input refinement of each), and saves packed masks, scores and logits.
"""
from __future__ import annotations

import sys

import numpy as np

SIZES = {"landscape": (400, 600), "portrait": (900, 300), "square": (512, 512), "panorama": (150, 1000),
         "tiny": (40, 56), "12mp": (3000, 4000)}
HEAVY = ("torch", "torchvision", "timm", "onnx")


def prompts(h: int, w: int) -> dict:
    return {
        "point": dict(point_coords=np.array([[w * 0.3, h * 0.6]]), point_labels=np.array([1])),
        "pos_neg": dict(point_coords=np.array([[w * 0.3, h * 0.6], [w * 0.7, h * 0.2]]), point_labels=np.array([1, 0])),
        "box_single": dict(box=np.array([w * 0.1, h * 0.1, w * 0.7, h * 0.8]), multimask_output=False),
        "box_point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1]),
                          box=np.array([w * 0.1, h * 0.1, w * 0.7, h * 0.8])),
        "outside": dict(point_coords=np.array([[w * 1.2, -5.0]]), point_labels=np.array([1])),
    }


def pack(m: np.ndarray) -> np.ndarray:
    return np.packbits(m.astype(bool), axis=None)


def main(bundle: str, backend: str, precision: str, images: str, out: str) -> None:
    from edgesam.runtime import SamPredictor

    pred = SamPredictor(bundle, backend=backend, precision=precision)
    res = {}
    for name, (h, w) in SIZES.items():
        pred.set_image(np.load(f"{images}/{name}.npy"))
        res[f"{name}/embedding"] = pred.get_image_embedding()
        for pname, kw in prompts(h, w).items():
            m, s, low = pred.predict(**kw)
            m2, _, _ = pred.predict(**kw, mask_input=low[np.argmax(s)][None])
            key = f"{name}/{pname}"
            res[key + "/masks"], res[key + "/shape"] = pack(m), np.array(m.shape)
            res[key + "/masks_refined"] = pack(m2)
            res[key + "/scores"], res[key + "/low"] = s, low
            res[key + "/dtypes"] = np.array([str(m.dtype), str(s.dtype), str(low.dtype)])
        logits, _, _ = pred.predict(**prompts(h, w)["point"], return_logits=True)
        res[f"{name}/logits_dtype"] = np.array(str(logits.dtype))
        res[f"{name}/logits_sample"] = logits[:, ::7, ::7]
    res["heavy_modules"] = np.array([m for m in HEAVY if m in sys.modules] or [""])
    np.savez(out, **res)


if __name__ == "__main__":
    main(*sys.argv[1:6])
