"""Run-length encodings of binary masks, as segment-anything's AMG and COCO write them.

Uncompressed RLE: ``{"size": [H, W], "counts": [n0, n1, ...]}``. Runs alternate
False, True, False, ... over the mask in column-major (Fortran) order, starting
with a False run (0 if the first pixel is True). This is what
``segment_anything.utils.amg.mask_to_rle_pytorch`` returns.

COCO RLE: the same counts packed into the ASCII string of pycocotools
(``{"size": [H, W], "counts": "..."}``). Each count, minus the count two places
before it (from the fourth count on), is written as 5-bit groups, low group
first; a group is stored as ``chr(48 + group)`` with bit 0x20 meaning "more
groups follow", and bit 0x10 of the last group is the sign. Implemented here in
a few lines (a loop over runs, never pixels), so the runtime needs no
pycocotools; the tests check it decodes with pycocotools to the same masks.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgesam.errors import InputError


def mask_to_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """KxHxW bool -> K uncompressed RLEs (column-major runs), without a loop over pixels."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    k, h, w = masks.shape
    out = []
    for m in masks:
        flat = m.T.reshape(-1)  # column-major order, as COCO counts run down each column
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        edges = np.concatenate(([0], change, [h * w]))
        counts = np.diff(edges).tolist()
        if h * w and flat[0]:
            counts.insert(0, 0)
        out.append({"size": [h, w], "counts": counts})
    return out


def _check(rle: dict[str, Any]) -> tuple[int, int, np.ndarray]:
    try:
        h, w = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise InputError("an RLE must be {'size': [H, W], 'counts': [ints]}") from None
    if counts.ndim != 1 or np.any(counts < 0) or int(counts.sum()) != h * w:
        raise InputError(f"RLE counts do not add up to its size {h}x{w}")
    return h, w, counts


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> HxW bool (C order)."""
    if isinstance(rle.get("counts"), (str, bytes)):
        rle = coco_decode_rle(rle)
    h, w, counts = _check(rle)
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T.copy()


def area_from_rle(rle: dict[str, Any]) -> int:
    """Number of True pixels: the sum of every second count."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    counts = [int(c) for c in rle["counts"]]
    chars = bytearray()
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        while True:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas end in a run of 1 bits
            more = x != -1 if group & 0x10 else x != 0
            chars.append(48 + (group | 0x20 if more else group))
            if not more:
                break
    return {"size": [int(v) for v in rle["size"]], "counts": chars.decode("ascii")}


def coco_decode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """COCO compressed RLE (str or bytes counts) -> uncompressed RLE."""
    s = rle["counts"]
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        x = shift = 0
        while True:
            if p >= len(data):
                raise InputError("truncated COCO RLE string")
            group = data[p] - 48
            p += 1
            x |= (group & 0x1F) << shift
            shift += 5
            if not group & 0x20:
                if group & 0x10:
                    x -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return {"size": [int(v) for v in rle["size"]], "counts": counts}
