"""Low-res logits -> masks at the original size, as ``Sam.postprocess_masks`` computes them.

The official path is: bilinear (align_corners=False) 256 -> 1024, crop the
unpadded input_h x input_w, bilinear to the original H x W. All three steps
are linear and separable, so they compose into one interpolation per axis:
each output row is a weighted sum of at most 4 low-res rows (same for
columns). Composing them means the 1024x1024 intermediate and the padding
are never computed at all (nor what the crop throws away).
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np

from edgesam.runtime.regions import small_components
from edgesam.specs import IMAGE_SIZE, LOWRES


def _linear_weights(out_size: int, in_size: int) -> np.ndarray:
    """Dense (out_size x in_size) matrix of torch bilinear, align_corners=False, no antialias."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.arange(out_size), i0), 1.0 - frac)
    np.add.at(m, (np.arange(out_size), i1), frac)
    return m


@lru_cache(maxsize=16)
def axis_matrix(orig: int, input_len: int, frame: int = IMAGE_SIZE, lowres: int = LOWRES) -> np.ndarray:
    """orig x lowres float32: each row holds the (at most 4) low-res weights of one output row.

    The path it composes: lowres -> frame (the encoder's input side), crop input_len, -> orig.
    """
    up = _linear_weights(frame, lowres)[:input_len]  # 256 -> 1024, then crop
    return (_linear_weights(orig, input_len) @ up).astype(np.float32)


COLUMN_BLOCK = 128  # output columns per banded product


@lru_cache(maxsize=16)
def column_blocks(orig: int, input_len: int, frame: int = IMAGE_SIZE, lowres: int = LOWRES) -> tuple:
    """The column interpolation as bands: (out0, out1, src0, src1, (src1-src0) x (out1-out0) weights).

    Each output column reads at most 4 neighbouring low-res columns, so a block of
    neighbouring output columns reads a narrow source band: a dense product over the
    band does ~1/20 of the work of one over all 256 columns at 12 MP.
    """
    ax = axis_matrix(orig, input_len, frame, lowres)
    blocks = []
    for o0 in range(0, orig, COLUMN_BLOCK):
        o1 = min(o0 + COLUMN_BLOCK, orig)
        used = np.flatnonzero(np.any(ax[o0:o1] != 0, axis=0))
        s0, s1 = int(used[0]), int(used[-1]) + 1
        blocks.append((o0, o1, s0, s1, np.ascontiguousarray(ax[o0:o1, s0:s1].T)))
    return tuple(blocks)


BLOCK = 32  # output pixels per block side in threshold_masks
BLOCKED_FROM = 128 * 128  # output pixels per mask from which threshold_masks is the faster path


@lru_cache(maxsize=16)
def axis_blocks(orig: int, input_len: int, frame: int = IMAGE_SIZE, lowres: int = LOWRES) -> tuple:
    """Blocks of BLOCK output rows (or columns) and the low-res taps they read.

    Returns (lo, hi, start, weights): block b reads low-res rows lo[b]:hi[b] (the
    rows with nonzero weight for any of its outputs); ``weights[b]`` is its
    BLOCK x K slice of ``axis_matrix`` starting at low-res row ``start[b]`` (K is
    the same for every block, so that blocks can be batched; a last partial
    block has zero rows).
    """
    ax = axis_matrix(orig, input_len, frame, lowres)
    nz = ax != 0
    first = nz.argmax(1)
    last = ax.shape[1] - nz[:, ::-1].argmax(1)
    starts = np.arange(0, orig, BLOCK)
    lo = np.minimum.reduceat(first, starts)
    hi = np.maximum.reduceat(last, starts)
    k = int((hi - lo).max())
    start = np.minimum(lo, ax.shape[1] - k)
    weights = np.zeros((len(starts), BLOCK, k), np.float32)
    for b, o0 in enumerate(starts):
        rows = ax[o0:o0 + BLOCK]
        weights[b, :len(rows)] = rows[:, start[b]:start[b] + k]
    return lo, hi, start, weights


def threshold_masks(low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int],
                    threshold: float = 0.0, frame: int = IMAGE_SIZE) -> np.ndarray:
    """``upscale_logits(...) > threshold`` without upscaling where the answer is already known.

    Every output pixel is a convex combination of its low-res taps (bilinear
    weights are >= 0 and sum to 1), so where all the taps of a block of
    BLOCK x BLOCK outputs lie above the threshold the whole block is True, and
    where none do it is False. Only blocks whose taps straddle the threshold
    (the mask's boundary) are interpolated, in one batched product. The taps
    of each block are counted with a summed-area table of the low-res signs.
    At 12 MP that is a few percent of the blocks for a real mask.
    """
    (ih, iw), (h, w) = input_size, original_size
    lead = low_res.shape[:-2]
    low = low_res.shape[-1]
    flat = low_res.reshape(-1, low, low).astype(np.float32, copy=False)
    n = flat.shape[0]
    rlo, rhi, rstart, rw = axis_blocks(h, ih, frame, low)
    clo, chi, cstart, cw = axis_blocks(w, iw, frame, low)
    above = flat > threshold
    sat = np.zeros((n, low + 1, low + 1), np.int32)
    np.cumsum(above, axis=1, dtype=np.int32, out=sat[:, 1:, 1:])
    np.cumsum(sat[:, 1:, 1:], axis=2, out=sat[:, 1:, 1:])
    count = (sat[:, rhi[:, None], chi[None, :]] - sat[:, rlo[:, None], chi[None, :]]
             - sat[:, rhi[:, None], clo[None, :]] + sat[:, rlo[:, None], clo[None, :]])
    full = count == ((rhi - rlo)[:, None] * (chi - clo)[None, :])
    nbr, nbc = full.shape[1:]
    out = np.empty((n, nbr, BLOCK, nbc, BLOCK), bool)
    out[...] = full[:, :, None, :, None]
    m, br, bc = np.nonzero((count > 0) & ~full)
    if len(m):
        kr, kc = rw.shape[2], cw.shape[2]
        win = flat[m[:, None, None], (rstart[br][:, None] + np.arange(kr))[:, :, None],
                   (cstart[bc][:, None] + np.arange(kc))[:, None, :]]
        out[m, br, :, bc, :] = (rw[br] @ win @ cw[bc].transpose(0, 2, 1)) > threshold
    out = out.reshape(n, nbr * BLOCK, nbc * BLOCK)
    if out.shape[1:] != (h, w):
        out = out[:, :h, :w]
    return out.reshape(*lead, h, w)


def upscale_logits(low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int],
                   threshold: float | None = None, frame: int = IMAGE_SIZE) -> np.ndarray:
    """...xLxL float32 logits (L = 256) -> ...xHxW float32 logits (original image size), through
    the ``frame`` x ``frame`` encoder input whose top-left input_size part holds the image.

    Rows first (one BLAS product, H x 256 per mask), then columns in bands. With a
    ``threshold`` a bool array is returned and full-size float logits never exist:
    outputs of BLOCKED_FROM pixels or more go through ``threshold_masks``, smaller
    ones compare each band as it is made.
    """
    (ih, iw), (h, w) = input_size, original_size
    if threshold is not None and h * w >= BLOCKED_FROM:
        return threshold_masks(low_res, input_size, original_size, threshold, frame)
    lead = low_res.shape[:-2]
    low = low_res.shape[-1]
    flat = low_res.reshape(-1, low, low)
    out = np.empty((flat.shape[0], h, w), np.float32 if threshold is None else bool)
    for o0, o1, block in upscaled_bands(flat, input_size, original_size, frame):
        out[:, :, o0:o1] = block if threshold is None else block > threshold
    return out.reshape(*lead, h, w)


def upscaled_bands(low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int],
                   frame: int = IMAGE_SIZE):
    """KxLxL logits -> yields (o0, o1, K x H x (o1-o0) float32): the upscaled logits of output
    columns o0:o1, band by band, left to right. Rows first (one BLAS product over the low-res rows
    that any output row reads), then each band of columns from its narrow source band."""
    (ih, iw), (h, w) = input_size, original_size
    low = low_res.shape[-1]
    rows_m = axis_matrix(h, ih, frame, low)
    y1 = int(np.flatnonzero(np.any(rows_m != 0, axis=0))[-1]) + 1  # rows below the image: weight 0
    rows = np.matmul(rows_m[:, :y1], np.asarray(low_res, np.float32)[:, :y1])  # K x H x L
    for o0, o1, s0, s1, band in column_blocks(w, iw, frame, low):
        yield o0, o1, np.matmul(rows[:, :, s0:s1], band)


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a base-install dependency; tolerate its absence
        return None
    return ThreadpoolController()


def single_blas_thread():
    """Context: numpy's BLAS on one thread.

    OpenBLAS workers spin for ~0.1 s after a product; the decoder call that follows
    then shares the cores with them. Measured on vit_t, 600x400, 2 cores: predict()
    took ~200 ms with threaded BLAS in the upscale and ~90 ms with one BLAS thread
    (the upscale itself: 2.4 -> 3.7 ms; at 12 MP 74 -> 104 ms).
    """
    c = _blas_controller()
    return c.limit(limits=1, user_api="blas") if c is not None else contextlib.nullcontext()


def fill_holes_and_sprinkles(low_res: np.ndarray, threshold: float, max_hole_area: float,
                             max_sprinkle_area: float) -> np.ndarray:
    """SAM 2's mask clean-up on low-res logits (``SAM2Transforms.postprocess_masks``): background
    components of at most ``max_hole_area`` low-res pixels become ``threshold + 10``, then
    foreground components of at most ``max_sprinkle_area`` become ``threshold - 10`` (8-connected;
    the official code needs its CUDA extension for this and skips it without one)."""
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return low_res
    out = np.array(low_res, np.float32, copy=True)
    flat = out.reshape(-1, *out.shape[-2:])
    for m in flat:
        if max_hole_area > 0:
            m[small_components(m <= threshold, max_hole_area)] = threshold + 10.0
        if max_sprinkle_area > 0:
            m[small_components(m > threshold, max_sprinkle_area)] = threshold - 10.0
    return out


def mask_geometry(resize: str, image_size: int, input_size: tuple[int, int],
                  lowres: int = LOWRES) -> tuple[tuple[int, int], int]:
    """The (input_size, frame) arguments of ``upscale_logits`` / ``postprocess_masks`` for a
    preprocessing: SAM's longest-side resize goes low-res -> frame -> crop -> original; SAM 2's
    square resize goes straight from low-res to the original size (``SAM2Transforms.postprocess_masks``),
    which is the same composition with an identity lowres -> lowres frame and no crop."""
    if resize == "square":
        return (lowres, lowres), lowres
    return (int(input_size[0]), int(input_size[1])), image_size


def postprocess_masks(low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int],
                      return_logits: bool = False, threshold: float = 0.0, frame: int = IMAGE_SIZE) -> np.ndarray:
    """Upscale, then threshold (``> threshold``, bool) unless ``return_logits``."""
    with single_blas_thread():
        return upscale_logits(low_res, input_size, original_size, None if return_logits else threshold, frame)
