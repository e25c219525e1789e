"""Image -> normalised, padded 1x3x1024x1024 encoder input, with MNN.cv doing the pixel work.

The official pipeline resizes with PIL bilinear (which antialiases when it
shrinks), rounds to uint8, normalises, then zero-pads bottom-right. MNN.cv's
only true interpolation is bilinear without antialiasing (INTER_AREA is
nearest here), so shrinking by more than 2x first halves the image with exact
2x bilinear steps (each a 2x2 box filter), then does one bilinear resize with
the BGR->RGB swap and the normalisation folded in. tests/test_preprocess.py
measures both choices against the official transform.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgesam.errors import BundleError, ImageError
from edgesam.manifest import RESIZES, Preprocess, parse_sections, sam_sections
from edgesam.runtime._mnn import import_mnn
from edgesam.runtime.prompts import preprocess_shape

# SAM's and MobileSAM's preprocessing, as their bundles' manifests say (for tools that preprocess
# without a bundle, e.g. the convert gate's and the parity tests' references); never a default.
SAM_PREPROCESS = parse_sections(sam_sections("lowres"), "SAM")[0]

INTERPOLATIONS = ("pyramid", "linear")


def _to_var(image: np.ndarray):
    from MNN import expr

    arr = np.ascontiguousarray(image, dtype=np.uint8)
    return expr.const(arr, list(arr.shape), expr.NHWC, expr.uint8)


@lru_cache(maxsize=1)
def c4_truncation() -> float:
    """What MNN.cv's 4-channel bilinear resize loses per step on average: 0.5 grey levels if it
    truncates (its vectorised sampler does, on x86 and on aarch64 in MNN 3.6), 0 if it rounds.

    Probed, not assumed: 0 and 3 sampled at a quarter of the way between them is 0.75."""
    import MNN.cv as cv
    from MNN import expr

    a = np.zeros((1, 2, 4), np.uint8)
    a[0, 1] = 3
    out = cv.resize(expr.const(a, [1, 2, 4], expr.NHWC, expr.uint8), (4, 1), 0.0, 0.0, cv.INTER_LINEAR)
    return 0.5 if int(np.asarray(out.read()).reshape(4, 4)[1, 0]) == 0 else 0.0


def resize_normalise(image, bgr: bool, interpolation: str, spec: Preprocess) -> np.ndarray:
    """HxWx3 uint8 (numpy or MNN Var) -> new_h x new_w x 3 float32, normalised, in the channel order
    of ``spec`` (a bundle's manifest "preprocess"; RGB for every family so far).

    ``bgr``: channel order of ``image``.
    """
    if spec.resize not in RESIZES:
        raise BundleError(f"preprocess resize {spec.resize!r} is not implemented by this runtime")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
    import_mnn()
    import MNN.cv as cv

    var = image if not isinstance(image, np.ndarray) else _to_var(image)
    h, w = var.shape[:2]
    square = spec.resize == "square"  # SAM 2: each axis to image_size on its own, aspect not kept
    new_h, new_w = (spec.image_size, spec.image_size) if square else preprocess_shape(h, w, spec.image_size)
    want_bgr = spec.channel_order == "BGR"
    if min(new_h, new_w) < 1:
        # e.g. 2x40000: the official transform would ask PIL for a 0-pixel side and crash
        raise ImageError(f"image {w}x{h} is too elongated: its short side would resize to 0 pixels "
                         f"(aspect ratio above {2 * spec.image_size}:1)")
    # mean/std apply to the output's channels, in the output's order
    mean = [float(v) for v in spec.pixel_mean]
    norm = [1.0 / float(v) for v in spec.pixel_std]
    shrinks = (h > new_h or w > new_w) if square else h * w > new_h * new_w
    if interpolation == "pyramid" and shrinks:
        # Approximate PIL's antialiased bilinear with box filters: halve while the image is still
        # twice the target (each bilinear halving is a 2x2 mean), then bilinear to twice the
        # target, and let the normalising resize below do the last halving.
        # These steps run on 4 channels: MNN.cv's vectorised bilinear sampler takes 1 or 4 channels,
        # 3 channels fall back to a scalar loop (measured on a 12 MP photo: 4000x3000 -> 2048x1366 in
        # 43 ms on BGRA against 129 ms on BGR; adding the alpha costs 54 ms). That sampler truncates
        # instead of rounding, so each step lowers the pixels by half a level on average; the mean
        # of the final normalisation takes that back (c4_truncation).
        var = cv.cvtColor(var, cv.COLOR_BGR2BGRA if bgr else cv.COLOR_RGB2RGBA)
        # A square resize shrinks one axis and may enlarge the other: each axis is planned on
        # its own (an axis that does not shrink keeps its length until the last resize).
        steps = 1  # the normalising resize
        while (h >= 4 * new_h or w >= 4 * new_w) if square else (h >= 4 * new_h and w >= 4 * new_w):
            h, w = (h // 2 if h >= 4 * new_h else h), (w // 2 if w >= 4 * new_w else w)
            var = cv.resize(var, (w, h), 0.0, 0.0, cv.INTER_LINEAR)
            steps += 1
        target = (2 * new_h if h > new_h else h, 2 * new_w if w > new_w else w) if square \
            else (2 * new_h, 2 * new_w)
        if (h, w) != target:  # same-size cv.resize returns garbage: skip it
            h, w = target
            var = cv.resize(var, (w, h), 0.0, 0.0, cv.INTER_LINEAR)
            steps += 1
        drop = c4_truncation() * steps
        mean = [m - drop for m in mean]
        code = (cv.COLOR_BGRA2BGR if want_bgr else cv.COLOR_BGRA2RGB) if bgr else \
            (cv.COLOR_RGBA2BGR if want_bgr else cv.COLOR_RGBA2RGB)
    else:
        # Upscaling (or plain bilinear): one resize on 3 channels, which rounds as PIL does.
        code = -1 if bgr == want_bgr else cv.COLOR_BGR2RGB
    out = cv.resize(var, (new_w, new_h), 0.0, 0.0, cv.INTER_LINEAR, code, mean, norm)
    return np.array(out.read(), copy=True).reshape(new_h, new_w, 3)


def pad_to_input(normalised: np.ndarray, size: int) -> np.ndarray:
    """new_h x new_w x 3 float32 -> 1x3xSxS (S = ``size``), zero-padded bottom-right (zero = the mean
    colour); a square resize's output is already S x S and is only transposed."""
    h, w = normalised.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])
    out = np.zeros((1, 3, size, size), np.float32)
    out[0, :, :h, :w] = normalised.transpose(2, 0, 1)
    return out


def check_image_array(image: np.ndarray) -> np.ndarray:
    """Validate an HWC uint8 image as ``SamPredictor.set_image`` expects it."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"image must be HxWx3 (HWC, 3 channels), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"image is empty: shape {image.shape}")
    if image.dtype != np.uint8:
        raise ImageError(f"image must be uint8 in [0, 255], got {image.dtype}")
    return image


def preprocess(image, spec: Preprocess, bgr: bool = False,
               interpolation: str = "pyramid") -> tuple[np.ndarray, tuple[int, int]]:
    """Image -> (1x3xSxS float32 encoder input, (input_h, input_w) before padding), as a bundle's
    manifest says (``spec``: its "preprocess"; S = image_size, 1024). ``bgr``: the image's order."""
    x = resize_normalise(image, bgr, interpolation, spec)
    return pad_to_input(x, spec.image_size), x.shape[:2]
