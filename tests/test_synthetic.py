"""One scene generator (edgesam.synthetic.scenes): every style's masks are exact, and the committed
sample images are what it draws."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from edgesam.cli.demo import CLICKS as DEMO_CLICKS
from edgesam.runtime.imageio import read_image
from edgesam.synthetic.samples import SAMPLES, sample
from edgesam.synthetic.scenes import make_scene, upsampled_scene


@pytest.mark.parametrize("name", list(SAMPLES))
def test_committed_samples_are_what_the_generator_draws(name):
    np.testing.assert_array_equal(read_image(REPO / "assets" / name), sample(name).image)


def test_installed_demo_draws_the_samples_it_has_no_file_for(tmp_path, monkeypatch):
    """An installed edgesam has no assets/: the demo draws the same sample images into its output."""
    from edgesam.cli import demo

    monkeypatch.setattr(demo, "ASSETS", tmp_path / "no-assets")
    for name in SAMPLES:
        path = demo.sample_file(name, tmp_path / "out")
        assert path == tmp_path / "out" / "samples" / name
        np.testing.assert_array_equal(read_image(path), read_image(REPO / "assets" / name))
    monkeypatch.setattr(demo, "ASSETS", REPO / "assets")
    assert demo.sample_file("landscape.png", tmp_path / "o2") == REPO / "assets" / "landscape.png"


def test_installed_demo_without_weights_says_so_in_one_line(tmp_path, monkeypatch):
    from edgesam.cli import demo
    from edgesam.errors import InputError

    monkeypatch.setattr(demo, "DEMO_CHECKPOINT", tmp_path / "absent.pt")
    with pytest.raises(InputError, match="ships with the source checkout.*--checkpoint mobile_sam.pt.*--untrained"):
        demo.run_demo(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("name", list(SAMPLES))
def test_demo_clicks_land_on_a_sample_object(name):
    """The demo scores each sample's mask against the object under its click, so there must be one."""
    sc = sample(name)
    h, w = sc.image.shape[:2]
    fx, fy = DEMO_CLICKS[name]
    truth = sc.object_at(w * fx, h * fy)
    assert truth is not None and truth[int(h * fy), int(w * fx)]
    assert 0.002 < truth.mean() < 0.2  # an object, not the ground


@pytest.mark.parametrize("style,size", [("shapes", None), ("gate", (300, 500)), ("sky", (240, 320)),
                                        ("labels", (200, 300))])
def test_every_style_owns_its_pixels_exactly(style, size):
    """Seeded, disjoint masks, one kind each; ``min_area`` keeps exactly the objects that own at least
    that many pixels (the others stay in ``painted`` and in the owner map)."""
    sc = make_scene(11, size, style=style)
    again = make_scene(11, size, style=style)
    assert np.array_equal(sc.image, again.image) and np.array_equal(sc.masks, again.masks)
    assert len(sc.masks) >= 2 and len(sc.kinds) == len(sc.masks) and sc.masks.sum(0).max() <= 1
    areas = sorted(int((sc.owner == i).sum()) for i in range(len(sc.painted)))
    cut = areas[len(areas) // 2]
    big = make_scene(11, size, style=style, min_area=cut)
    assert [int(m.sum()) for m in big.masks] == [a for a in (int((sc.owner == i).sum())
                                                            for i in range(len(sc.painted))) if a >= cut]
    assert all(m.any() for m in sc.masks)


def test_labels_style_encodes_the_owner_in_red():
    sc = make_scene(3, (300, 420), style="labels")
    assert np.array_equal(sc.image[..., 0].astype(np.int32) // 20, sc.owner + 1)
    assert (sc.image[..., 0] == sc.image[..., 2]).all()


def test_gate_style_has_its_bar_and_discs():
    sc = make_scene(7, (683, 1024), style="gate")
    assert sc.painted == ["disc"] * 6 + ["bar"]
    bar = sc.masks[sc.kinds.index("bar")]
    assert bar[683 // 3: 683 // 3 + 40].all() and bar.sum() == 40 * 1024


def test_unknown_style_and_misuse_are_refused():
    with pytest.raises(ValueError, match="unknown style"):
        make_scene(0, (10, 10), style="nope")
    with pytest.raises(ValueError, match="needs a size"):
        make_scene(0, style="gate")
    with pytest.raises(ValueError, match="needs a size"):
        make_scene(0, (10, 10), style="sky", n_objects=3)


def test_upsampled_scene_is_the_gate_scene_enlarged():
    big = upsampled_scene(1024, 768, seed=4)
    assert big.shape == (1024, 768, 3) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, upsampled_scene(1024, 768, seed=4))  # deterministic
    small = make_scene(4, (256, 256), style="gate").image.astype(np.float32)
    # each output pixel is its source pixel plus noise of std 3, truncated to uint8 (mean -0.5)
    diff = big[::4, ::3].astype(np.float32) - small
    assert -1.0 < float(diff.mean()) < 0.0 and float(diff.std()) < 4.0
