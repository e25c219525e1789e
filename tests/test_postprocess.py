"""Upscaling of low-res logits against torch's postprocess_masks, at many aspect ratios."""
from __future__ import annotations

import numpy as np
import pytest

from edgesam.runtime.postprocess import postprocess_masks, upscale_logits
from edgesam.runtime.prompts import preprocess_shape

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("hw", [(400, 600), (600, 400), (512, 512), (200, 1400), (37, 50), (3000, 4000), (1, 1)])
def test_matches_official_two_step_resize(hw):
    rng = np.random.default_rng(0)
    low = rng.standard_normal((2, 3, 256, 256)).astype(np.float32) * 5
    ih, iw = preprocess_shape(*hw, 1024)
    up = F.interpolate(torch.from_numpy(low), (1024, 1024), mode="bilinear", align_corners=False)
    ref = F.interpolate(up[..., :ih, :iw], hw, mode="bilinear", align_corners=False).numpy()
    got = upscale_logits(low, (ih, iw), hw)
    assert got.shape == ref.shape and got.dtype == np.float32
    # float32 composition of the same linear maps: differences are rounding only
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max()
    m = postprocess_masks(low, (ih, iw), hw)
    assert m.dtype == bool and np.mean(m != (ref > 0)) < 1e-4


def _blobs(rng, n):
    """Logits shaped like real masks: a few discs with noise, so most blocks are uniform."""
    yy, xx = np.mgrid[0:256, 0:256]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(40, 200, 3)
        out.append((r / 3 - np.hypot(yy - cy, xx - cx)) / 4 + rng.normal(0, 0.3, (256, 256)))
    return np.array(out, np.float32)


@pytest.mark.parametrize("hw", [(400, 600), (3000, 4000), (100, 1200), (1023, 1025), (129, 130), (37, 50), (1, 1)])
@pytest.mark.parametrize("kind", ["blobs", "noise"])
def test_blocked_threshold_equals_full_upscale(hw, kind):
    """threshold_masks skips blocks whose taps are all above (or all below) the threshold;
    that must give exactly what thresholding the full upscale gives, including on noise where
    nearly every block straddles it, and at thresholds other than 0."""
    from edgesam.runtime.postprocess import threshold_masks

    rng = np.random.default_rng(1)
    low = _blobs(rng, 3)[None] if kind == "blobs" else rng.normal(0, 3, (1, 3, 256, 256)).astype(np.float32)
    ih, iw = preprocess_shape(*hw, 1024)
    logits = upscale_logits(low, (ih, iw), hw)
    for thr in (0.0, 1.5):
        got = threshold_masks(low, (ih, iw), hw, thr)
        assert got.shape == (1, 3, *hw) and got.dtype == bool
        assert np.array_equal(got, logits > thr), (hw, kind, thr, int((got != (logits > thr)).sum()))


def test_differs_only_at_boundary():
    """The predictor tests' edge rule: flips along the reference's edge pass, a vanished object fails."""
    from edgesam.measure.parity import differs_only_at_boundary

    b = np.zeros((64, 64), bool)
    b[10:40, 10:40] = True
    a = b.copy()
    a[10, 10:40] = False  # the top row shaved off
    a[40, 10:20] = True  # one row grown below
    assert differs_only_at_boundary(a, b, 1) and not differs_only_at_boundary(a, b, 0)
    small = b.copy()
    small[50:60, 50:60] = True
    assert not differs_only_at_boundary(b, small, 2)  # a 10 x 10 object gone: its middle differs
    hole = b.copy()
    hole[25, 25] = False
    assert not differs_only_at_boundary(hole, b, 1)  # a pixel deep inside
    edge = np.zeros((64, 64), bool)
    edge[:, :20] = True
    assert differs_only_at_boundary(edge[:, ::-1][:, ::-1], edge, 0)
    shifted = np.zeros((64, 64), bool)
    shifted[:, :21] = True
    assert differs_only_at_boundary(shifted, edge, 1)  # the image border is no edge of the mask


def test_tolerance_rows_follow_the_arithmetic():
    """Reduced arithmetic is judged by its own row: MNN's low by fp16's, OpenVINO's bf16 by bf16's
    (each rounding 8x coarser, so a looser worst element, the same bars on what users see); int8
    weights and a backend whose "low" is f32 keep the file's row."""
    from edgesam.measure.parity import TOLERANCES, tolerance_key

    assert [tolerance_key(p, "low") for p in ("fp32", "fp16", "int8")] == ["fp16", "fp16", "int8"]
    assert [tolerance_key(p, "low", "bf16") for p in ("fp32", "fp16", "int8")] == ["bf16", "bf16", "int8"]
    assert [tolerance_key(p, "low", "fp32") for p in ("fp32", "fp16")] == ["fp32", "fp16"]
    assert all(tolerance_key(p, "high", "bf16") == p for p in ("fp32", "fp16", "int8"))
    bf16, fp16, int8 = TOLERANCES["bf16"], TOLERANCES["fp16"], TOLERANCES["int8"]
    assert (bf16.cosine, bf16.mask_iou, bf16.score_abs) == (fp16.cosine, fp16.mask_iou, fp16.score_abs)
    assert fp16.rel_max < bf16.rel_max <= int8.rel_max
