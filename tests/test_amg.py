"""Automatic mask generation: numpy stages against the official torch code, and the whole
generator against the official one on a synthetic decoder (so the logits are identical and
only our filters, crops, NMS and encodings are under test). Model-weight parity is in
test_amg_parity.py; the `everything` CLI is at the end.
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesam.runtime import maskstats as MS
from edgesam.runtime.preprocess import SAM_PREPROCESS
from edgesam.runtime.amg import AmgOptions, SamAutomaticMaskGenerator, crop_boxes, point_grid
from edgesam.runtime.prompts import preprocess_shape, sam_transform
from edgesam.runtime.regions import label_runs, remove_small_regions
from edgesam.runtime.rle import area_from_rle, coco_decode_rle, coco_encode_rle, mask_to_rle, rle_to_mask
from edgesam.synthetic.scenes import make_scene

FUZZ = int(os.environ.get("EDGESAM_FUZZ_EXAMPLES", "60"))  # `make test-slow` sets thousands
# The official small-region step must run on real OpenCV, not on a stand-in built from our code.
NO_CV2 = "opencv-python-headless (dev extra) runs segment_anything's remove_small_regions"


def masks_strategy(max_side: int = 24):
    """Bool masks of any size (1..max_side per side): random, striped and all-True/all-False."""
    return st.tuples(st.integers(1, max_side), st.integers(1, max_side), st.integers(0, 2 ** 32 - 1),
                     st.sampled_from(["random", "runs", "full", "empty"])).map(_make_mask)


def _make_mask(args) -> np.ndarray:
    h, w, seed, kind = args
    rng = np.random.default_rng(seed)
    if kind == "full":
        return np.ones((h, w), bool)
    if kind == "empty":
        return np.zeros((h, w), bool)
    if kind == "runs":
        return np.cumsum(rng.random((h, w)) < 0.1, axis=1) % 2 == 1
    return rng.random((h, w)) < rng.uniform(0.1, 0.9)


# --- RLE ------------------------------------------------------------------------------------

@settings(max_examples=FUZZ, deadline=None)
@given(mask=masks_strategy())
def test_rle_round_trip(mask):
    rle = mask_to_rle(mask[None])[0]
    assert rle["size"] == list(mask.shape) and sum(rle["counts"]) == mask.size
    assert np.array_equal(rle_to_mask(rle), mask)
    assert area_from_rle(rle) == int(mask.sum())
    coco = coco_encode_rle(rle)
    assert isinstance(coco["counts"], str)
    json.dumps(coco)  # JSON-ready, as the official coco_rle output
    assert coco_decode_rle(coco)["counts"] == rle["counts"]
    assert np.array_equal(rle_to_mask(coco), mask)


@settings(max_examples=FUZZ, deadline=None)
@given(mask=masks_strategy())
def test_coco_rle_matches_pycocotools(mask):
    mask_utils = pytest.importorskip("pycocotools.mask")
    rle = mask_to_rle(mask[None])[0]
    h, w = mask.shape
    ref = mask_utils.frPyObjects(rle, h, w)
    ours = coco_encode_rle(rle)
    assert ours["counts"] == ref["counts"].decode() and ours["size"] == [h, w]
    decoded = mask_utils.decode({"size": [h, w], "counts": ours["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), mask)


def test_rle_matches_official_encoder():
    torch = pytest.importorskip("torch")
    from segment_anything.utils.amg import mask_to_rle_pytorch

    rng = np.random.default_rng(0)
    masks = rng.random((5, 13, 17)) < 0.5
    masks[0] = True
    masks[1] = False
    assert mask_to_rle(masks) == mask_to_rle_pytorch(torch.from_numpy(masks))


# --- connected components -------------------------------------------------------------------

def _labels_bfs(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Reference 8-connected labelling, numbered by first pixel in raster order (tiny masks only)."""
    h, w = mask.shape
    lab = -np.ones((h, w), int)
    n = 0
    for y, x in zip(*np.nonzero(mask)):
        if lab[y, x] >= 0:
            continue
        stack, lab[y, x] = [(y, x)], n
        while stack:
            cy, cx = stack.pop()
            for yy in range(max(cy - 1, 0), min(cy + 2, h)):
                for xx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if mask[yy, xx] and lab[yy, xx] < 0:
                        lab[yy, xx] = n
                        stack.append((yy, xx))
        n += 1
    return lab, n


@settings(max_examples=FUZZ, deadline=None)
@given(mask=masks_strategy(20))
def test_regions_match_reference_labels(mask):
    rows, starts, ends, comp, n = label_runs(mask)
    ref, n_ref = _labels_bfs(mask)
    assert n == n_ref
    lab = -np.ones(mask.shape, int)
    for r, s, e, c in zip(rows, starts, ends, comp):
        lab[r, s:e] = c
    assert np.array_equal(lab, ref)  # same components, same numbering


@settings(max_examples=FUZZ, deadline=None)
@given(mask=masks_strategy(40), area=st.integers(1, 60))
def test_regions_match_official_on_real_opencv(mask, area):
    """segment_anything's remove_small_regions, on real cv2.connectedComponentsWithStats."""
    pytest.importorskip("torch")
    pytest.importorskip("cv2", reason=NO_CV2)
    from segment_anything.utils.amg import remove_small_regions as official

    for mode in ("holes", "islands"):
        out, changed = remove_small_regions(mask, area, mode)
        want, want_changed = official(mask, area, mode)
        assert changed == want_changed and np.array_equal(out, want), mode


def test_regions_big_mask_is_fast_enough():
    """No pixel loops: a 12 MP mask with ~100k runs takes well under a few seconds."""
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:3000, :4000]
    mask = ((yy - 1500) ** 2 + (xx - 2000) ** 2 < 1200 ** 2) ^ (rng.random((3000, 4000)) < 0.002)
    out, changed = remove_small_regions(mask, 50, "holes")
    assert changed and out.sum() > mask.sum()
    out, changed = remove_small_regions(out, 50, "islands")
    assert changed and out.sum() < mask.sum() + 10 ** 5


# --- boxes, NMS, grids, crops ---------------------------------------------------------------

def test_nms_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops import nms as tv_nms

    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(0, 300))
        xy = rng.integers(0, 200, (n, 2))
        wh = rng.integers(0, 60, (n, 2))  # zero-size boxes included (one-pixel masks)
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        boxes[: n // 4] = boxes[0] if n else boxes[:0]  # exact duplicates
        scores = rng.choice([0.5, 0.7, 0.9], n).astype(np.float32) if trial % 2 else rng.random(n).astype(np.float32)
        for thr in (0.0, 0.5, 0.7, 1.0):
            want = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
            assert np.array_equal(MS.nms(boxes, scores, thr), want), (trial, thr)


def test_mask_boxes_and_edges_match_official():
    torch = pytest.importorskip("torch")
    from segment_anything.utils.amg import batched_mask_to_box, is_box_near_crop_edge

    rng = np.random.default_rng(1)
    masks = np.zeros((6, 30, 40), bool)
    for k in range(1, 6):
        y0, x0 = rng.integers(0, 25), rng.integers(0, 35)
        masks[k, y0:y0 + rng.integers(1, 10), x0:x0 + rng.integers(1, 10)] = True
    masks[5, 29, 39] = True
    boxes = MS.mask_boxes(masks)
    assert np.array_equal(boxes, batched_mask_to_box(torch.from_numpy(masks)).numpy())
    crop, orig = [10, 5, 50, 35], [0, 0, 60, 40]
    want = is_box_near_crop_edge(torch.from_numpy(boxes), crop, orig).numpy()
    assert np.array_equal(MS.box_near_crop_edge(boxes, crop, orig), want)


@pytest.mark.parametrize("size", [(400, 600), (600, 400), (1, 1), (37, 1500), (3000, 4000)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crops_and_grids_match_official(size, layers):
    pytest.importorskip("torch")
    from segment_anything.utils.amg import build_all_layer_point_grids, generate_crop_boxes

    assert crop_boxes(size, layers, 512 / 1500) == generate_crop_boxes(size, layers, 512 / 1500)
    ours = AmgOptions(points_per_side=12, crop_n_layers=layers, crop_n_points_downscale_factor=2).grids()
    for a, b in zip(ours, build_all_layer_point_grids(12, layers, 2)):
        assert np.array_equal(a, b)  # bit-exact: point_coords are reported as they are
    assert len(point_grid(3)) == 9


# --- stability ------------------------------------------------------------------------------

def _smooth_logits(k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (k, 16, 16)).astype(np.float32)
    return (np.kron(base, np.ones((16, 16), np.float32)) * rng.uniform(2, 20)
            + rng.normal(0, 0.5, (k, 256, 256)).astype(np.float32))


@pytest.mark.parametrize("size", [(400, 600), (600, 400), (57, 1500), (13, 9), (2000, 1500)])
def test_stability_exact_vs_official_and_bound_is_an_upper_bound(size):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from segment_anything.utils.amg import calculate_stability_score

    low = _smooth_logits(6, sum(size))
    input_size = preprocess_shape(*size, 1024)
    masks, stab = MS.upscale_with_stability(low, input_size, size, 1.0)
    t = F.interpolate(torch.from_numpy(low)[:, None], (1024, 1024), mode="bilinear", align_corners=False)
    t = F.interpolate(t[..., :input_size[0], :input_size[1]], size, mode="bilinear", align_corners=False)[:, 0]
    want = calculate_stability_score(t, 0.0, 1.0).numpy()
    # composed vs two-step interpolation round differently (~1e-6): a few pixels may flip
    np.testing.assert_allclose(stab, want, atol=2e-3)
    flips = (masks != (t > 0).numpy()).mean()
    assert flips < 1e-4
    bound = MS.stability_upper_bound(low, input_size, size, 1.0)
    assert np.all(bound >= stab), (bound, stab)


# --- options --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(points_per_side=None), "exactly one of"),
    (dict(point_grids=[np.zeros((4, 2))]), "exactly one of"),
    (dict(output_mode="png"), "unknown output_mode"),
    (dict(points_per_batch=0), "points_per_batch"),
    (dict(points_per_side=4, crop_n_layers=3, crop_n_points_downscale_factor=2), "leaves no points"),
    (dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1), "needs 2"),
    (dict(pred_iou_thresh=float("nan")), "finite"),
])
def test_bad_options_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamAutomaticMaskGenerator(SimpleNamespace(), **kwargs)


def test_official_attribute_names():
    g = SamAutomaticMaskGenerator(SimpleNamespace(), points_per_side=4, pred_iou_thresh=0.5)
    assert g.pred_iou_thresh == 0.5 and g.box_nms_thresh == 0.7 and len(g.point_grids[0]) == 16


# --- the whole generator against the official one, on a synthetic decoder --------------------

def label_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8 whose red channel / 20 is an object label: overlapping rectangles and discs, plus
    specks (small islands for min_mask_region_area); the "labels" style of the scene generator."""
    return make_scene(seed, (h, w), style="labels").image


def fake_decoder(image: np.ndarray, points_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image + Bx2 input-frame points -> (Bx3x256x256 logits, Bx3 IoU predictions), deterministic.

    Mask k of a point is its object (same label), blurred over a box of radius 0/2/5 low-res
    pixels, so stability varies with size and k; the IoU prediction depends on label and k.
    """
    h, w = image.shape[:2]
    ih, iw = preprocess_shape(h, w, 1024)
    centres = (np.arange(256) + 0.5) * 4
    ys, xs = centres * h / ih, centres * w / iw
    lab = image[np.minimum(ys, h - 1).astype(int)][:, np.minimum(xs, w - 1).astype(int), 0].astype(np.int64) // 20
    lab[ys >= h] = -1
    lab[:, xs >= w] = -1
    cells = np.clip((points_input / 4).astype(int), 0, 255)
    lp = lab[cells[:, 1], cells[:, 0]]
    same = (lab[None] == lp[:, None, None]).astype(np.float32)
    logits, ious = [], []
    for k, r in enumerate((0, 2, 5)):
        blur = same
        if r:
            for axis in (1, 2):
                c = np.cumsum(np.pad(blur, [(0, 0)] + [(r + 1, r) if a == axis else (0, 0) for a in (1, 2)],
                                     mode="edge"), axis=axis)
                blur = (np.take(c, np.arange(2 * r + 1, c.shape[axis]), axis=axis)
                        - np.take(c, np.arange(0, c.shape[axis] - 2 * r - 1), axis=axis)) / (2 * r + 1)
        logits.append(16 * (blur - 0.5) + 0.25 * k)
        ious.append(0.75 + 0.24 * ((lp * 7 + k * 5) % 11) / 10)
    return np.stack(logits, 1).astype(np.float32), np.stack(ious, 1).astype(np.float32)


class RuntimeFake:
    """What the runtime generator asks of a SamPredictor: set_image, reset_image and decode, and the
    bundle's mask threshold and preprocessing (the SAM family's)."""

    mask_threshold = 0.0
    preprocess_spec = SAM_PREPROCESS

    def set_image(self, image):
        self.image, self.original_size = image, image.shape[:2]
        self.input_size = preprocess_shape(*self.original_size, 1024)

    def reset_image(self):
        pass

    def decode(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True):
        return fake_decoder(self.image, sam_transform().apply_coords(point_coords[:, 0], self.original_size))


def official_fake(torch):
    """The official predictor's interface over the same decoder, with the official upscaling."""
    import torch.nn.functional as F
    from segment_anything.utils.transforms import ResizeLongestSide

    class TorchFake(RuntimeFake):
        model = SimpleNamespace(mask_threshold=0.0)
        transform = ResizeLongestSide(1024)
        device = torch.device("cpu")

        def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                          return_logits=False):
            low, iou = fake_decoder(self.image, point_coords[:, 0].numpy())
            t = F.interpolate(torch.from_numpy(low), (1024, 1024), mode="bilinear", align_corners=False)
            t = t[..., : self.input_size[0], : self.input_size[1]]
            t = F.interpolate(t, self.original_size, mode="bilinear", align_corners=False)
            return t, torch.from_numpy(iou), torch.from_numpy(low)

    return TorchFake()


AMG_CASES = {  # name: (image size, generator keywords)
    "landscape-defaults": ((400, 600), dict(points_per_side=8)),
    "portrait-lowered": ((600, 400), dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.6)),
    "panorama-crops": ((180, 720), dict(points_per_side=6, crop_n_layers=1, pred_iou_thresh=0.7)),
    "landscape-crops2": ((400, 600), dict(points_per_side=8, crop_n_layers=2, crop_n_points_downscale_factor=2,
                                          stability_score_thresh=0.9, crop_nms_thresh=0.5)),
    "portrait-small-regions": ((600, 400), dict(points_per_side=8, min_mask_region_area=400,
                                                pred_iou_thresh=0.6, box_nms_thresh=0.8)),
    "square-no-filters": ((300, 300), dict(points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
}


@pytest.mark.parametrize("case", list(AMG_CASES))
def test_generator_matches_official_on_identical_logits(case):
    """Same logits in, same records out: the filters, crops, NMS, small-region step and RLEs
    follow the official order. Only the upscaling differs (composed vs two-step bilinear,
    ~1e-6 apart), so a pixel at exactly +-1 or 0 may flip: stability within 1e-3, mask
    IoU >= 0.999, areas within 0.1%, boxes within one pixel; IoU predictions and points exact."""
    torch = pytest.importorskip("torch")
    from segment_anything import SamAutomaticMaskGenerator as Official

    size, kw = AMG_CASES[case]
    if kw.get("min_mask_region_area"):
        pytest.importorskip("cv2", reason=NO_CV2)
    image = label_scene(*size, seed=len(case))
    official = Official(SimpleNamespace(image_encoder=SimpleNamespace(img_size=1024)), points_per_batch=16, **kw)
    official.predictor = official_fake(torch)
    want = official.generate(image)
    got = SamAutomaticMaskGenerator(RuntimeFake(), points_per_batch=16, **kw).generate(image)
    assert len(want) > 3, "the case should produce masks"
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w)
        inter = np.logical_and(g["segmentation"], w["segmentation"]).sum()
        union = np.logical_or(g["segmentation"], w["segmentation"]).sum()
        assert inter / union >= 0.999
        assert abs(g["area"] - w["area"]) <= max(2, 1e-3 * w["area"])
        assert np.abs(np.subtract(g["bbox"], w["bbox"])).max() <= 1
        assert g["predicted_iou"] == w["predicted_iou"] and g["point_coords"] == w["point_coords"]
        assert abs(g["stability_score"] - w["stability_score"]) <= 1e-3
        assert g["crop_box"] == w["crop_box"]
        assert type(g["area"]) is int and all(type(v) is int for v in g["bbox"] + g["crop_box"])


def test_output_modes_agree_and_coco_matches_official():
    """coco_rle strings equal pycocotools' encoding of our mask, segment_anything's coco_encode_rle
    of our RLE, and the official generator's record (here no pixel sits on the threshold)."""
    torch = pytest.importorskip("torch")
    mask_utils = pytest.importorskip("pycocotools.mask")
    from segment_anything import SamAutomaticMaskGenerator as Official
    from segment_anything.utils.amg import coco_encode_rle as official_coco_encode_rle

    image = label_scene(300, 420, seed=3)
    kw = dict(points_per_side=6, crop_n_layers=1)
    by_mode = {m: SamAutomaticMaskGenerator(RuntimeFake(), output_mode=m, **kw).generate(image)
               for m in ("binary_mask", "uncompressed_rle", "coco_rle")}
    official = Official(SimpleNamespace(image_encoder=SimpleNamespace(img_size=1024)), output_mode="coco_rle", **kw)
    official.predictor = official_fake(torch)
    want = official.generate(image)
    assert len(by_mode["binary_mask"]) == len(want) > 3
    for b, u, c, w in zip(by_mode["binary_mask"], by_mode["uncompressed_rle"], by_mode["coco_rle"], want):
        assert np.array_equal(rle_to_mask(u["segmentation"]), b["segmentation"])
        assert np.array_equal(rle_to_mask(c["segmentation"]), b["segmentation"])
        assert b["area"] == int(b["segmentation"].sum())
        seg = c["segmentation"]
        assert isinstance(seg["counts"], str) and seg["size"] == [300, 420]
        ref = mask_utils.encode(np.asfortranarray(b["segmentation"].astype(np.uint8)))
        assert seg["counts"] == ref["counts"].decode() and seg["size"] == [int(v) for v in ref["size"]]
        assert seg == official_coco_encode_rle(u["segmentation"])
        assert seg == w["segmentation"]
    json.dumps(by_mode["coco_rle"])


def test_zero_masks_is_an_empty_result():
    image = label_scene(200, 300)
    gen = SamAutomaticMaskGenerator(RuntimeFake(), points_per_side=4, pred_iou_thresh=0.999)
    assert gen.generate(image) == []


@pytest.mark.parametrize("image", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5), np.uint8),
                                   np.zeros((5, 5, 3), np.float32)])
def test_bad_images_are_value_errors(image):
    with pytest.raises(ValueError):
        SamAutomaticMaskGenerator(RuntimeFake(), points_per_side=4).generate(image)


def test_progress_reports_every_batch_and_crop():
    calls = []
    gen = SamAutomaticMaskGenerator(RuntimeFake(), points_per_side=4, points_per_batch=5, crop_n_layers=1,
                                    progress=lambda *a: calls.append(a))
    gen.generate(label_scene(200, 300))
    assert len(calls) == 5 * 4  # 16 points in batches of 5, in each of 5 crops
    assert calls[-1] == (20, 20, 4, 5) and [c[0] for c in calls] == list(range(1, 21))
