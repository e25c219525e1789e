"""Unit tests of the numpy prompt stage (no model, no torch)."""
from __future__ import annotations

import numpy as np
import pytest

from edgesam.errors import InputError
from edgesam.runtime import prompts as P

EMB = np.zeros((1, 256, 64, 64), np.float32)
SAM = P.Transform(image_size=1024, resize="longest_side", lowres=256, layout="sam")


def test_sam_transform_is_what_sam_bundles_say():
    assert P.sam_transform() == SAM


def test_transform_comes_from_the_manifest_not_from_defaults():
    """Square resize (SAM 2): x * S / W, y * S / H; box corners first and no padding point."""
    from edgesam.manifest import parse_sections, sam2_sections

    pre, _, dec = parse_sections(sam2_sections(), "test")
    t = P.Transform.of(pre, dec)
    assert t == P.Transform(1024, "square", 256, "sam2")
    assert t.apply_coords(np.array([[300.0, 100.0]]), (200, 600)).tolist() == [[512.0, 512.0]]
    coords, labels = P.validate_points([[300, 100]], [1])
    f = t.decoder_feeds(coords, labels, P.validate_boxes([0, 0, 600, 200]), None, (200, 600))
    assert f["point_labels"].tolist() == [[2.0, 3.0, 1.0]]
    with pytest.raises(ValueError, match="resize must be one of"):
        P.Transform(1024, "stretch", 256, "sam")
    with pytest.raises(ValueError, match="prompt layout"):
        P.Transform(1024, "square", 256, "sam3")


def test_preprocess_shape_matches_official_formula():
    assert P.preprocess_shape(400, 600, 1024) == (683, 1024)
    assert P.preprocess_shape(3000, 4000, 1024) == (768, 1024)
    assert P.preprocess_shape(37, 50, 1024) == (758, 1024)
    assert P.preprocess_shape(1024, 1024, 1024) == (1024, 1024)


def test_apply_coords_scales_axes_separately():
    c = SAM.apply_coords(np.array([[600.0, 400.0]]), (400, 600))
    assert c[0, 0] == pytest.approx(1024.0)
    assert c[0, 1] == pytest.approx(400 * 683 / 400)


def test_points_get_a_padding_point_without_box():
    coords, labels = P.validate_points([[10, 20]], [1])
    f = SAM.decoder_feeds(coords, labels, None, None, (100, 100), EMB)
    assert f["point_coords"].shape == (1, 2, 2)
    assert f["point_labels"].tolist() == [[1.0, -1.0]]
    assert f["has_mask_input"].tolist() == [0.0]


def test_box_and_points_order_points_then_corners():
    coords, labels = P.validate_points([[10, 20], [30, 40]], [1, 0])
    boxes = P.validate_boxes([0, 0, 50, 50])
    f = SAM.decoder_feeds(coords, labels, boxes, None, (100, 100), EMB)
    assert f["point_labels"].tolist() == [[1.0, 0.0, 2.0, 3.0]]
    assert f["point_coords"][0, 3].tolist() == pytest.approx([512.0, 512.0])


def test_batch_of_boxes():
    boxes = P.validate_boxes([[0, 0, 10, 10], [5, 5, 50, 60], [1, 2, 3, 4]])
    f = SAM.decoder_feeds(None, None, boxes, None, (100, 100), EMB)
    assert f["point_coords"].shape == (3, 2, 2)


@pytest.mark.parametrize("coords,labels,match", [
    ([[np.nan, 1]], [1], "NaN or inf"),
    ([[np.inf, 1]], [1], "NaN or inf"),
    ([[1, 1], [2, 2]], [1], "does not match"),
    ([[1, 1]], [2], "must be 0"),
    ([[1, 1]], None, "must be supplied"),
    (np.zeros((0, 2)), np.zeros(0), "empty"),
])
def test_bad_points(coords, labels, match):
    with pytest.raises(InputError, match=match):
        P.validate_points(coords, labels)


@pytest.mark.parametrize("box,match", [
    ([10, 0, 5, 5], "x1 >= x0"), ([0, 10, 5, 5], "y1 >= y0"), ([1, 2, 3], "length 4"), ([np.nan, 0, 1, 1], "NaN"),
])
def test_bad_boxes(box, match):
    with pytest.raises(InputError, match=match):
        P.validate_boxes(box)


def test_mask_input_shape_checked():
    with pytest.raises(InputError, match="1x256x256"):
        SAM.validate_mask_input(np.zeros((1, 128, 128)), 1)
    assert SAM.validate_mask_input(np.zeros((1, 256, 256)), 1).shape == (1, 1, 256, 256)


def test_empty_prompt_refused():
    with pytest.raises(InputError, match="empty prompt"):
        SAM.decoder_feeds(None, None, None, None, (10, 10), EMB)
    with pytest.raises(InputError, match="mask_input alone"):
        SAM.decoder_feeds(None, None, None, np.zeros((1, 1, 256, 256), np.float32), (10, 10), EMB)
