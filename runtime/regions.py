"""Small regions and holes: 8-connected components in numpy, for ``min_mask_region_area``.

The official AMG calls ``cv2.connectedComponentsWithStats(mask, 8)``. OpenCV is
not a runtime dependency (a 40-60 MB wheel, often unavailable for a board's
Python), MNN exposes no connected-components operator, and scipy is not in the
base install either. So this labels components over *runs* instead of pixels:

1. every row is cut into runs of True pixels with one vectorised ``diff``;
2. a run touches the runs of the next row whose column spans overlap its own
   widened by one pixel (8-connectivity); all such pairs come from two
   ``searchsorted`` calls over the runs in raster order;
3. the run graph is merged by vectorised union-find: hook every edge's larger
   root onto the smaller (``np.minimum.at``), then pointer-jump until every
   run points at its root, and repeat until no edge joins two roots.

The work grows with the number of runs (hundreds to a few thousand for a SAM
mask), not the number of pixels, and there is no Python loop over pixels or
runs. A component's root is its first run in raster order, so components are
numbered in the order of their first pixel, as OpenCV numbers them.
"""
from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HxW bool -> (row, start, end) of each run of True, end exclusive, in raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)  # row-major order: the k-th end closes the k-th start
    return rows, starts, ends


def label_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """8-connected components of an HxW bool mask, over its runs.

    Returns (row, start, end, component, n): per run its row, column span [start, end)
    and component index in 0..n-1, components numbered by first pixel in raster order.
    """
    rows, starts, ends = _runs(mask)
    n = rows.size
    if n == 0:
        return rows, starts, ends, np.zeros(0, np.int64), 0
    stride = mask.shape[1] + 2
    key_start = rows * stride + starts
    key_end = rows * stride + ends
    # Runs of the next row that touch run a: start <= end_a and end >= start_a.
    nxt = (rows + 1) * stride
    lo = np.searchsorted(key_end, nxt + starts, side="left")
    hi = np.searchsorted(key_start, nxt + ends, side="right")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    first = np.repeat(lo - np.concatenate(([0], np.cumsum(count)[:-1])), count)
    b = first + np.arange(a.size)
    parent = np.arange(n)
    while a.size:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        ra, rb = ra[differ], rb[differ]
        low = np.minimum(ra, rb)
        np.minimum.at(parent, np.maximum(ra, rb), low)
        while True:  # pointer jumping: every run points straight at its root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    roots, component = np.unique(parent, return_inverse=True)
    return rows, starts, ends, component.reshape(-1), roots.size


def _paint(shape: tuple[int, int], rows, starts, ends) -> np.ndarray:
    """Runs -> HxW bool, by a +1/-1 difference array and one cumulative sum."""
    h, w = shape
    delta = np.zeros(h * w + 1, np.int32)
    np.add.at(delta, rows * w + starts, 1)
    np.add.at(delta, rows * w + ends, -1)
    return (np.cumsum(delta[:-1]) > 0).reshape(h, w)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area_thresh`` pixels.

    Same rule as segment-anything's ``remove_small_regions``: for holes, every
    8-connected component of the *background* below the area is filled (border
    regions included); for islands, components below the area are dropped, and if
    all are, the largest (the first, on ties) is kept. Returns (HxW bool, changed).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    holes = mode == "holes"
    rows, starts, ends, comp, n = label_runs(~mask if holes else mask)
    sizes = np.bincount(comp, weights=ends - starts, minlength=n)
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        sel = small[comp]
        return mask | _paint(mask.shape, rows[sel], starts[sel], ends[sel]), True
    keep = ~small
    if not keep.any():
        keep[int(np.argmax(sizes))] = True
    sel = keep[comp]
    return _paint(mask.shape, rows[sel], starts[sel], ends[sel]), True


def small_components(mask: np.ndarray, max_area: float) -> np.ndarray:
    """HxW bool: the pixels of ``mask``'s 8-connected components of at most ``max_area`` pixels
    (SAM 2's hole and sprinkle rule: ``areas <= max_area``, components touching the border included)."""
    mask = np.asarray(mask, dtype=bool)
    rows, starts, ends, comp, n = label_runs(mask)
    sizes = np.bincount(comp, weights=ends - starts, minlength=n)
    sel = (sizes <= max_area)[comp]
    return _paint(mask.shape, rows[sel], starts[sel], ends[sel])
