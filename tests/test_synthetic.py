"""The synthetic images live in edgesam.synthetic; the committed sample images are what it draws."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from edgesam.runtime.imageio import read_image
from edgesam.synthetic.gate import scene, upsampled_scene
from edgesam.synthetic.samples import SAMPLES, sample_scene


@pytest.mark.parametrize("name", list(SAMPLES))
def test_committed_samples_are_what_the_generator_draws(name):
    h, w, seed = SAMPLES[name]
    np.testing.assert_array_equal(read_image(REPO / "assets" / name), sample_scene(h, w, seed))


def test_upsampled_scene_is_the_gate_scene_enlarged():
    big = upsampled_scene(1024, 768, seed=4)
    assert big.shape == (1024, 768, 3) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, upsampled_scene(1024, 768, seed=4))  # deterministic
    small = scene(256, 256, 4).astype(np.float32)
    # each output pixel is its source pixel plus noise of std 3, truncated to uint8 (mean -0.5)
    diff = big[::4, ::3].astype(np.float32) - small
    assert -1.0 < float(diff.mean()) < 0.0 and float(diff.std()) < 4.0
