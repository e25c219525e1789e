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
    ih, iw = preprocess_shape(*hw)
    up = F.interpolate(torch.from_numpy(low), (1024, 1024), mode="bilinear", align_corners=False)
    ref = F.interpolate(up[..., :ih, :iw], hw, mode="bilinear", align_corners=False).numpy()
    got = upscale_logits(low, (ih, iw), hw)
    assert got.shape == ref.shape and got.dtype == np.float32
    # float32 composition of the same linear maps: differences are rounding only
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max()
    m = postprocess_masks(low, (ih, iw), hw)
    assert m.dtype == bool and np.mean(m != (ref > 0)) < 1e-4
