"""Per-mask numbers for the AMG: stability scores, boxes and NMS, in numpy.

Stability is the official ``calculate_stability_score``: the ratio of pixels
above ``+offset`` to pixels above ``-offset`` in the *full-size* logits. Computing
those needs every mask upscaled, so candidates are first screened on their
256x256 logits with a bound that can only over-estimate the full-size score
(``stability_upper_bound``); only masks whose bound reaches the threshold are
upscaled and scored exactly (``upscale_with_stability``). A mask the screen
drops is one the official filter would drop too.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgesam.runtime.postprocess import axis_matrix, upscaled_bands
from edgesam.specs import IMAGE_SIZE

# Rounding slack for the bound: an upscaled logit is a weighted sum of <= 16 low-res
# logits computed in float32, so it can exceed their max (or undercut their min) by a
# few ulps of the largest term. 1e-3 + 1e-6 * max|logit| covers that with a wide margin.
BOUND_EPS = 1e-3
BOUND_REL = 1e-6


@lru_cache(maxsize=32)
def _windows(orig: int, input_len: int, frame: int, lowres: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct low-res source windows [lo, hi] of the orig output lines, with how many lines share each."""
    ax = axis_matrix(orig, input_len, frame, lowres) != 0
    lo = np.argmax(ax, axis=1)
    hi = ax.shape[1] - 1 - np.argmax(ax[:, ::-1], axis=1)
    pairs, counts = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1], counts.astype(np.float64)


def _window_any(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """OR of ``x`` (K x Y x X) over each window [lo, hi] of axis 1 (windows span a few lines)."""
    out = np.take(x, lo, axis=1)
    for d in range(1, int((hi - lo).max()) + 1):
        out |= np.take(x, np.minimum(lo + d, hi), axis=1)
    return out


def _windows_touched(x: np.ndarray, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """For bits 0 and 1 of ``x`` (K x Y x X uint8 flags): per mask, how many output pixels
    have a source window holding that bit (two K float64 arrays)."""
    (rlo, rhi, rn), (clo, chi, cn) = rows, cols
    by_rows = _window_any(x, rlo, rhi)  # K x R x X
    # gathers along a middle axis are ~5x faster than along the last one: transpose once
    touched = _window_any(np.ascontiguousarray(by_rows.transpose(0, 2, 1)), clo, chi)  # K x C x R
    rn32, cn32 = rn.astype(np.float32), cn.astype(np.float32)
    # float32 sums of integer weights: exact below 2**24 pixels; the caller adds slack above
    out = [((touched >> b) & 1).astype(np.float32) @ rn32 @ cn32 for b in (0, 1)]
    return out[0].astype(np.float64), out[1].astype(np.float64)


def stability_upper_bound(low_res: np.ndarray, input_size: tuple[int, int], size: tuple[int, int],
                          offset: float, threshold: float = 0.0, frame: int = IMAGE_SIZE) -> np.ndarray:
    """Kx256x256 float32 logits -> K float64 upper bounds of the stability score at ``size`` (H, W).

    Every upscaled logit is a convex combination (non-negative weights summing to 1) of
    the low-res logits in a small window, so it lies between their min and max. Hence
    the pixels above ``threshold + offset`` are at most those whose window max is above
    it, and the pixels above ``threshold - offset`` at least those whose window min is
    above it. Output lines sharing a window are counted once and weighted, so the cost
    is that of the low-res grid, not of the image. A bound of inf means "cannot tell".
    """
    (ih, iw), (h, w) = input_size, size
    low_side = low_res.shape[-1]
    rows, cols = _windows(h, ih, frame, low_side), _windows(w, iw, frame, low_side)
    y1, x1 = int(rows[1].max()) + 1, int(cols[1].max()) + 1
    low = np.asarray(low_res, np.float32)[:, :y1, :x1]
    if low.shape[0] == 0:
        return np.zeros(0)
    eps = (BOUND_EPS + BOUND_REL * np.abs(low).reshape(low.shape[0], -1).max(1))[:, None, None]
    hi_t, lo_t = threshold + offset, threshold - offset
    # bit 0: may be above hi_t (window max); bit 1: may be at or below lo_t (window min)
    flags = (low > hi_t - eps).view(np.uint8) | ((low <= lo_t + eps).view(np.uint8) << 1)
    above, below = _windows_touched(flags, rows, cols)
    inter_max = above * (1 + 1e-6)  # slack for float32 sums past 2**24 pixels
    union_min = float(h) * float(w) - below * (1 + 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union_min > 0, inter_max / np.maximum(union_min, 1), np.inf)


def upscale_with_stability(low_res: np.ndarray, input_size: tuple[int, int], size: tuple[int, int],
                           offset: float, threshold: float = 0.0,
                           frame: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Kx256x256 logits -> (KxHxW bool masks ``> threshold``, K float32 stability scores).

    One upscale (as ``postprocess.upscale_logits``: rows by one product, columns in
    bands), and all three thresholds are applied to each band as it is made, so the
    full-size float logits never exist for more than one band.
    """
    h, w = size
    k = low_res.shape[0]
    masks = np.empty((k, h, w), bool)
    inter = np.zeros(k, np.int64)
    union = np.zeros(k, np.int64)
    t, t_hi, t_lo = (np.float32(v) for v in (threshold, threshold + offset, threshold - offset))
    for o0, o1, block in upscaled_bands(low_res, input_size, size, frame):
        inter += np.count_nonzero(block > t_hi, axis=(1, 2))
        union += np.count_nonzero(block > t_lo, axis=(1, 2))
        masks[:, :, o0:o1] = block > t
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> nan, as torch gives
        stability = inter.astype(np.float32) / union.astype(np.float32)
    return masks, stability


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """KxHxW bool -> Kx4 int64 XYXY with inclusive max corner; [0, 0, 0, 0] for an empty mask.

    As ``batched_mask_to_box``: x1 and y1 are the last pixel's column and row, so a
    one-pixel mask has a zero-area box.
    """
    k, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)
    top, left = rows.argmax(1), cols.argmax(1)
    bottom = h - 1 - rows[:, ::-1].argmax(1)
    right = w - 1 - cols[:, ::-1].argmax(1)
    boxes = np.stack([left, top, right, bottom], 1).astype(np.int64)
    boxes[~rows.any(1)] = 0
    return boxes


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms`` on the CPU.

    boxes: Nx4 XYXY; scores: N. Boxes are visited by score, highest first, ties in
    index order (torchvision sorts stably); a box is dropped when its IoU with a kept
    box is ``> iou_threshold``. IoU is computed in float32 with area ``(x1-x0)*(y1-y0)``
    like torchvision's kernel (0/0 for two empty boxes is NaN, which drops nothing).
    Returns the kept indices, highest score first.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    x0, y0, x1, y1 = b.T
    area = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(b.shape[0], bool)
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in order:  # a loop over boxes (hundreds), each step vectorised over all boxes
            if suppressed[i]:
                continue
            keep.append(i)
            iw = np.maximum(np.float32(0), np.minimum(x1[i], x1) - np.maximum(x0[i], x0))
            ih = np.maximum(np.float32(0), np.minimum(y1[i], y1) - np.maximum(y0[i], y0))
            inter = iw * ih
            iou = inter / (area[i] + area - inter)
            suppressed |= iou.astype(np.float64) > iou_threshold
    return np.array(keep, np.int64)


def box_near_crop_edge(boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0) -> np.ndarray:
    """Kx4 XYXY boxes in the crop's frame -> K bool: near a crop edge that is not an image edge."""
    x0, y0 = crop_box[:2]
    b = np.asarray(boxes, np.float32) + np.array([x0, y0, x0, y0], np.float32)
    near_crop = np.abs(b - np.asarray(crop_box, np.float32)) <= atol
    near_image = np.abs(b - np.asarray(orig_box, np.float32)) <= atol
    return np.any(near_crop & ~near_image, axis=1)
