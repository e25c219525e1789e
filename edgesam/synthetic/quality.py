"""Mask quality on held-out synthetic scenes: one point, box, and point + one refinement.

Works with any predictor that has the ``SamPredictor`` API (``set_image`` and ``predict`` with
numpy arguments), so the same code scores the official torch predictor and the MNN runtime.

Protocol, per scene, for up to ``max_objects`` objects chosen with the scene's seed:
- ``point``: one positive point at the object's deepest interior pixel, ``multimask_output=True``,
  the output with the highest predicted IoU is kept (no oracle);
- ``box``: the object's tight box, ``multimask_output=False``;
- ``refine``: the ``point`` result, plus a second point at the deepest pixel of the larger error
  region (positive if missed pixels dominate, negative otherwise) and the kept low-res logits
  as ``mask_input``, ``multimask_output=False``.
IoU is measured at the image's full resolution against the exact instance mask. The predicted IoU
of the kept point mask and of the box mask are kept too: ``iou_head_abs_err`` is their mean
distance from the true IoU (how well calibrated the IoU head is).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from edgesam.runtime.maskstats import mask_iou
from edgesam.synthetic.scenes import interior_point, make_scene, mask_box

HELDOUT_SEEDS = tuple(range(100_000, 100_048))  # never used for training (training draws seeds below 100,000)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (runtime.maskstats.mask_iou)."""
    return float(mask_iou(np.asarray(a, bool), np.asarray(b, bool)))


def evaluate(predictor, seeds: Iterable[int] = HELDOUT_SEEDS, max_objects: int = 8) -> dict:
    """Mean IoU per prompt kind over the scenes' chosen objects, and the per-object lists."""
    seeds = tuple(seeds)
    per = {"point": [], "box": [], "refine": []}
    head_err = []  # |predicted IoU - true IoU| of the kept point mask and of the box mask
    for seed in seeds:
        sc = make_scene(seed)
        predictor.set_image(sc.image)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(sc.masks))[:max_objects]
        for k in order:
            gt = sc.masks[k]
            x, y = interior_point(gt)
            masks, scores, logits = predictor.predict(point_coords=np.array([[x, y]]),
                                                      point_labels=np.array([1]), multimask_output=True)
            best = int(np.argmax(scores))
            pred = masks[best]
            per["point"].append(iou(pred, gt))
            bm, bs, _ = predictor.predict(box=mask_box(gt), multimask_output=False)
            per["box"].append(iou(bm[0], gt))
            head_err += [abs(float(scores[best]) - per["point"][-1]), abs(float(bs[0]) - per["box"][-1])]
            fn, fp = gt & ~pred, pred & ~gt
            region, label = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
            if region.any():
                x2, y2 = interior_point(region)
                rm, _, _ = predictor.predict(point_coords=np.array([[x, y], [x2, y2]]),
                                             point_labels=np.array([1, label]),
                                             mask_input=logits[best][None], multimask_output=False)
                per["refine"].append(iou(rm[0], gt))
            else:
                per["refine"].append(per["point"][-1])
    summary = {f"miou_{k}": float(np.mean(v)) if v else float("nan") for k, v in per.items()}
    summary["iou_head_abs_err"] = float(np.mean(head_err)) if head_err else float("nan")
    summary["objects"] = len(per["point"])
    summary["scenes"] = len(seeds)
    summary["per_object"] = per
    return summary


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask in ``a`` (K x H x W bool) with every mask in ``b`` (P x H x W bool)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1)


def covered(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> int:
    """How many of the ``truth`` masks (K x H x W bool) some ``pred`` mask matches with IoU >= ``threshold``."""
    m = iou_matrix(truth, pred)
    return int((m.max(1) >= threshold).sum()) if m.size else 0


def amg_recall(generator, seeds: Iterable[int], threshold: float = 0.5) -> dict:
    """Share of ground-truth objects that some generated mask covers with IoU >= ``threshold``.

    ``generator`` has the ``SamAutomaticMaskGenerator`` API with ``output_mode="binary_mask"``
    (the official class or edgesam's)."""
    seeds = tuple(seeds)
    hits = total = masks_out = 0
    for seed in seeds:
        sc = make_scene(seed)
        records = generator.generate(sc.image)
        pred = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0,) + sc.masks.shape[1:], bool)
        hits += covered(sc.masks, pred, threshold)
        total += len(sc.masks)
        masks_out += len(records)
    return {"recall": hits / max(total, 1), "objects": total, "masks": masks_out, "scenes": len(seeds),
            "iou_threshold": threshold}


# Extreme shapes for format agreement, beside the held-out scenes' own aspect ratios (0.5 to 3):
# a 6:1 panorama and a 1:3 tall portrait, where the padding is most of the encoder's input.
EXTREME_SIZES = ((200, 1200), (1200, 400))


def agreement(reference, candidate, seeds: Iterable[int] = HELDOUT_SEEDS, max_objects: int = 8,
              sizes: Iterable[tuple[int, int]] = EXTREME_SIZES, size_seed: int = 200_000) -> dict:
    """Mask IoU of ``candidate`` against ``reference`` (two predictors with the ``SamPredictor`` API,
    e.g. an int8 bundle against its fp32 files), prompt by prompt, with the ``evaluate`` protocol:
    the point prompt's three masks, the box mask, and point + refinement, each side refined from
    its own previous logits (as a user would). Scenes: ``seeds`` at their own sizes, then one
    scene per (H, W) in ``sizes`` (seeds from ``size_seed``). Returns every IoU, the mean and the
    10th percentile."""
    scenes = [make_scene(s) for s in seeds] + [make_scene(size_seed + i, size=hw) for i, hw in enumerate(sizes)]
    ious: list[float] = []
    for sc in scenes:
        reference.set_image(sc.image)
        candidate.set_image(sc.image)
        order = np.random.default_rng(sc.seed).permutation(len(sc.masks))[:max_objects]
        for k in order:
            gt = sc.masks[k]
            x, y = interior_point(gt)
            pt, lab = np.array([[x, y]]), np.array([1])
            out = [p.predict(point_coords=pt, point_labels=lab, multimask_output=True) for p in (reference, candidate)]
            ious += [iou(a, b) for a, b in zip(out[0][0], out[1][0])]
            boxes = [p.predict(box=mask_box(gt), multimask_output=False)[0][0] for p in (reference, candidate)]
            ious.append(iou(*boxes))
            best = int(np.argmax(out[0][1]))  # the reference's kept mask decides the second click
            fn, fp = gt & ~out[0][0][best], out[0][0][best] & ~gt
            region, label = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
            if region.any():
                x2, y2 = interior_point(region)
                ref_m, cand_m = (p.predict(point_coords=np.array([[x, y], [x2, y2]]), point_labels=np.array([1, label]),
                                           mask_input=o[2][best][None], multimask_output=False)[0][0]
                                 for p, o in zip((reference, candidate), out))
                ious.append(iou(ref_m, cand_m))
    arr = np.array(ious)
    return {"mean_iou": float(arr.mean()), "p10_iou": float(np.percentile(arr, 10)), "min_iou": float(arr.min()),
            "masks": len(ious), "scenes": len(scenes), "ious": [round(float(v), 5) for v in ious]}
