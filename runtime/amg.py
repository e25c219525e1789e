"""``SamAutomaticMaskGenerator`` without torch: "segment everything" on a bundle's decoder.

Same keywords, defaults, filter order and records as
``segment_anything.SamAutomaticMaskGenerator``. Per crop (the whole image, then
optional layers of overlapping crops), a grid of single foreground points is
decoded in batches of ``points_per_batch``, three masks per point. Each batch:

1. predicted IoU ``> pred_iou_thresh`` (exact: it does not depend on resolution);
2. stability ``>= stability_score_thresh``: screened first on the 256x256 logits by a
   bound that can only over-estimate (``maskstats.stability_upper_bound``), so only
   masks that may pass are upscaled, and those get the exact full-size score;
3. boxes touching a crop edge that is not an image edge are dropped;
4. masks are run-length encoded in the original image's frame.

Then box NMS within the crop (by predicted IoU), NMS across crops (preferring
smaller crops), optional removal of small regions and holes, and encoding.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, fields, replace
from itertools import product
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgesam.errors import InputError
from edgesam.manifest import AMG_DEFAULTS
from edgesam.runtime import maskstats as MS
from edgesam.runtime.regions import remove_small_regions
from edgesam.runtime.rle import area_from_rle, coco_encode_rle, mask_to_rle, rle_to_mask

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
ProgressFn = Callable[[int, int, int, int], None]  # (batches done, batches total, crop index, crops)


@dataclass(frozen=True, eq=False, kw_only=True)
class AmgOptions:
    """The official generator's keyword arguments, with its defaults (tuned for ViT-H).

    The one place these defaults are written (those that differ between families come from
    ``edgesam.manifest.AMG_DEFAULTS``): ``SamAutomaticMaskGenerator``'s signature and the
    ``edgesam everything`` flags read them from here.
    """

    points_per_side: Optional[int] = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = AMG_DEFAULTS["sam"]["pred_iou_thresh"]
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: Optional[Sequence[np.ndarray]] = None
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"
    # SAM 2's generator only: its own mask threshold (None: the predictor's), one refinement of
    # every mask with its low-res logits as mask input ("mask to mask"), and multimask output.
    mask_threshold: Optional[float] = None
    use_m2m: bool = False
    multimask_output: bool = True

    def validate(self) -> "AmgOptions":
        if (self.points_per_side is None) == (self.point_grids is None):
            raise InputError("exactly one of points_per_side or point_grids must be given")
        if self.output_mode not in OUTPUT_MODES:
            raise InputError(f"unknown output_mode {self.output_mode!r}; choose {', '.join(OUTPUT_MODES)}")
        for name in ("points_per_batch", "crop_n_points_downscale_factor"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, not {getattr(self, name)}")
        if int(self.crop_n_layers) < 0 or self.min_mask_region_area < 0:
            raise InputError("crop_n_layers and min_mask_region_area must be >= 0")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith(("thresh", "offset", "ratio")) and not math.isfinite(float(v)):
                raise InputError(f"{f.name} must be a finite number, not {v}")
        if self.points_per_side is not None:
            last = int(self.points_per_side) // int(self.crop_n_points_downscale_factor) ** int(self.crop_n_layers)
            if int(self.points_per_side) < 1 or last < 1:
                raise InputError(f"points_per_side={self.points_per_side} leaves no points in crop layer "
                                 f"{self.crop_n_layers} (downscale factor {self.crop_n_points_downscale_factor})")
        else:
            if len(self.point_grids) < int(self.crop_n_layers) + 1:
                raise InputError(f"point_grids has {len(self.point_grids)} grid(s); crop_n_layers="
                                 f"{self.crop_n_layers} needs {int(self.crop_n_layers) + 1}")
            for g in self.point_grids:
                g = np.asarray(g)
                if g.ndim != 2 or g.shape[1] != 2 or not np.all(np.isfinite(g)):
                    raise InputError(f"each point grid must be an Nx2 array of (x, y) in [0, 1], got {g.shape}")
        return self

    def grids(self) -> list[np.ndarray]:
        """One Nx2 float64 grid of (x, y) in [0, 1] per crop layer."""
        if self.point_grids is not None:
            return [np.asarray(g, np.float64) for g in self.point_grids]
        return [point_grid(int(int(self.points_per_side) / int(self.crop_n_points_downscale_factor) ** i))
                for i in range(int(self.crop_n_layers) + 1)]


SAM2_ONLY = ("mask_threshold", "use_m2m", "multimask_output")  # not keywords of SAM's generator
_DEFAULTS = AmgOptions()  # SamAutomaticMaskGenerator's signature reads its defaults from here
# SAM2AutomaticMaskGenerator's: the official SAM 2 defaults differ in these
SAM2_DEFAULTS = AmgOptions(**{k: v for k, v in AMG_DEFAULTS["sam2"].items() if k in {f.name for f in fields(AmgOptions)}})


def load_point_grids(path: str) -> list[np.ndarray]:
    """A .npy of one Nx2 grid or an LxNx2 stack (x, y normalised to [0, 1]) as a list of grids."""
    from edgesam.runtime.imageio import load_npy

    arr = np.asarray(load_npy(path), np.float64)
    return [arr] if arr.ndim == 2 else list(arr)


def bundle_options(bundle: Any, opts: AmgOptions, point_grids: Optional[str] = None) -> AmgOptions:
    """The generator options for ``bundle``: every default its manifest records (the ``amg``
    section: its family's official generator) filled in where ``opts`` leaves it None, the
    ``point_grids`` file loaded; validated."""
    given = {k: v for k, v in bundle.spec.amg.items() if getattr(opts, k, 0) is None}
    opts = replace(opts, **given)
    if point_grids:
        if opts.points_per_side is not None:
            raise InputError("give --points-per-side or --point-grids, not both")
        opts = replace(opts, point_grids=load_point_grids(point_grids))
    return opts.validate()


def open_generator(bundle: Any, opts: AmgOptions, run: Any, progress: Optional[ProgressFn] = None,
                   predictor: Any = None) -> tuple[Any, "SamAutomaticMaskGenerator"]:
    """(predictor, generator) for a bundle: the predictor opened once with ``run`` (a ``RunOptions``),
    or ``predictor``, already open on it; set up as the family's official generator builds its own
    (SAM 2: hole and sprinkle areas from min_mask_region_area)."""
    pred = run.predictor(bundle) if predictor is None else predictor
    if bundle.spec.amg.get("predictor_fills_holes"):
        pred.max_hole_area = pred.max_sprinkle_area = float(opts.min_mask_region_area)
    return pred, SamAutomaticMaskGenerator.from_options(pred, opts, progress=progress)


def point_grid(n_per_side: int) -> np.ndarray:
    """n^2 x 2 cell-centre points of an n x n grid over [0, 1]^2, x varying fastest."""
    half = 0.5 / n_per_side
    side = np.linspace(half, 1 - half, n_per_side)  # linspace, not arange: same last bits as the official grid
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], -1).reshape(-1, 2)


def crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer: the image, then (2^i)^2 overlapping crops in layer i (official)."""
    h, w = size
    boxes, layers = [[0, 0, w, h]], [0]
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + w) / n))
        ch = int(math.ceil((overlap * (n - 1) + h) / n))
        x0s = [int((cw - overlap) * k) for k in range(n)]
        y0s = [int((ch - overlap) * k) for k in range(n)]
        for x0, y0 in product(x0s, y0s):  # x-major, as the official order
            boxes.append([x0, y0, min(x0 + cw, w), min(y0 + ch, h)])
            layers.append(i + 1)
    return boxes, layers


class MaskSet:
    """Candidate masks as parallel arrays (RLEs in a list), filtered and concatenated together."""

    ARRAYS = {"boxes": (np.int64, (0, 4)), "iou_preds": (np.float32, (0,)), "points": (np.float64, (0, 2)),
              "stability_score": (np.float32, (0,)), "crop_boxes": (np.int64, (0, 4))}

    def __init__(self, rles: Optional[list] = None, **arrays: np.ndarray) -> None:
        self.rles = rles or []
        for k, (dt, shape) in self.ARRAYS.items():
            setattr(self, k, np.asarray(arrays[k], dt) if k in arrays else np.zeros(shape, dt))

    def __len__(self) -> int:
        return len(self.rles)

    def take(self, idx: np.ndarray) -> None:
        idx = np.asarray(idx, np.int64)
        self.rles = [self.rles[i] for i in idx]
        for k in self.ARRAYS:
            setattr(self, k, getattr(self, k)[idx])

    def extend(self, other: "MaskSet") -> None:
        self.rles = self.rles + other.rles
        for k in self.ARRAYS:
            setattr(self, k, np.concatenate([getattr(self, k), getattr(other, k)]))


class SamAutomaticMaskGenerator:
    """Drop-in for ``segment_anything.SamAutomaticMaskGenerator`` on an edgesam ``SamPredictor``.

    ``predictor`` is a ``SamPredictor`` (or a bundle path, opened with its defaults); the
    other arguments are the official ones. ``progress(done, total, crop, n_crops)`` is called
    after each decoder batch. ``coco_rle`` needs no pycocotools (see rle.py), and
    ``min_mask_region_area`` needs no OpenCV (see regions.py).
    """

    def __init__(self, predictor: Any, points_per_side: Optional[int] = _DEFAULTS.points_per_side,
                 points_per_batch: int = _DEFAULTS.points_per_batch,
                 pred_iou_thresh: float = _DEFAULTS.pred_iou_thresh,
                 stability_score_thresh: float = _DEFAULTS.stability_score_thresh,
                 stability_score_offset: float = _DEFAULTS.stability_score_offset,
                 box_nms_thresh: float = _DEFAULTS.box_nms_thresh, crop_n_layers: int = _DEFAULTS.crop_n_layers,
                 crop_nms_thresh: float = _DEFAULTS.crop_nms_thresh,
                 crop_overlap_ratio: float = _DEFAULTS.crop_overlap_ratio,
                 crop_n_points_downscale_factor: int = _DEFAULTS.crop_n_points_downscale_factor,
                 point_grids: Optional[Sequence[np.ndarray]] = _DEFAULTS.point_grids,
                 min_mask_region_area: int = _DEFAULTS.min_mask_region_area,
                 output_mode: str = _DEFAULTS.output_mode, progress: Optional[ProgressFn] = None) -> None:
        self.options = AmgOptions(
            points_per_side=points_per_side, points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio, crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids, min_mask_region_area=min_mask_region_area, output_mode=output_mode).validate()
        self._setup(predictor, progress)

    @classmethod
    def from_options(cls, predictor: Any, options: AmgOptions,
                     progress: Optional[ProgressFn] = None) -> "SamAutomaticMaskGenerator":
        """A generator with every AmgOptions field (SAM 2's ``mask_threshold``, ``use_m2m`` and
        ``multimask_output`` included), on any family's predictor: what ``edgesam everything`` runs."""
        gen = cls.__new__(cls)
        gen.options = options.validate()
        gen._setup(predictor, progress)
        return gen

    def _setup(self, predictor: Any, progress: Optional[ProgressFn]) -> None:
        if isinstance(predictor, (str, os.PathLike)):
            from edgesam.runtime.predictor import SamPredictor

            predictor = SamPredictor(predictor)
        self.predictor = predictor
        self.point_grids = self.options.grids()
        self.progress = progress
        self.stats: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:  # g.pred_iou_thresh etc., as on the official class
        if name != "options" and name in {f.name for f in fields(AmgOptions)}:
            return getattr(self.options, name)
        raise AttributeError(name)

    # --- public ---------------------------------------------------------------------------
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """HxWx3 uint8 RGB -> one record per mask, with the official keys.

        segmentation (HxW bool, or an RLE dict per ``output_mode``), area (int), bbox
        (XYWH ints), predicted_iou, point_coords ([[x, y]] in original pixels),
        stability_score, crop_box (XYWH). Zero masks is a valid, empty result.
        """
        from edgesam.runtime.preprocess import check_image_array

        check_image_array(image)
        self.stats = {k: 0.0 for k in ("decoded", "iou_kept", "bound_kept", "stable", "kept",
                                       "t_encoder", "t_decoder", "t_filter")}
        self.stats["max_predicted_iou"] = float("nan")  # over every decoded candidate (nan: none decoded)
        data = self._generate_masks(np.ascontiguousarray(image))
        o = self.options
        if o.min_mask_region_area > 0:
            data = self.postprocess_small_regions(data, o.min_mask_region_area,
                                                  max(o.box_nms_thresh, o.crop_nms_thresh))
        if o.output_mode == "coco_rle":
            segs = [coco_encode_rle(r) for r in data.rles]
        elif o.output_mode == "binary_mask":
            segs = [rle_to_mask(r) for r in data.rles]
        else:
            segs = data.rles
        self.stats["kept"] = len(data)
        return [{"segmentation": segs[i], "area": area_from_rle(data.rles[i]),
                 "bbox": _xywh(data.boxes[i]), "predicted_iou": float(data.iou_preds[i]),
                 "point_coords": [data.points[i].tolist()], "stability_score": float(data.stability_score[i]),
                 "crop_box": _xywh(data.crop_boxes[i])} for i in range(len(data))]

    # --- stages ---------------------------------------------------------------------------
    def _generate_masks(self, image: np.ndarray) -> MaskSet:
        size = image.shape[:2]
        boxes, layers = crop_boxes(size, int(self.options.crop_n_layers), float(self.options.crop_overlap_ratio))
        ppb = int(self.options.points_per_batch)
        total = sum(-(-len(self.point_grids[l]) // ppb) for l in layers)
        counter = [0, total]
        data = MaskSet()
        for i, (box, layer) in enumerate(zip(boxes, layers)):
            data.extend(self._process_crop(image, box, layer, size, (i, len(boxes)), counter))
        if len(boxes) > 1 and len(data):
            # the same object found in several crops: keep the one from the smallest crop
            cb = data.crop_boxes
            area = ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
            data.take(MS.nms(data.boxes, np.float32(1.0) / area, float(self.options.crop_nms_thresh)))
        return data

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, orig_size: tuple[int, int],
                      which: tuple[int, int], counter: list[int]) -> MaskSet:
        x0, y0, x1, y1 = crop_box
        t = time.perf_counter()
        self.predictor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
        self.stats["t_encoder"] += time.perf_counter() - t
        crop_size = (y1 - y0, x1 - x0)
        points = self.point_grids[layer] * np.array(crop_size, np.float64)[None, ::-1]
        data = MaskSet()
        ppb = int(self.options.points_per_batch)
        for s in range(0, len(points), ppb):
            data.extend(self._process_batch(points[s:s + ppb], crop_size, crop_box, orig_size))
            counter[0] += 1
            if self.progress is not None:
                self.progress(counter[0], counter[1], which[0], which[1])
        self.predictor.reset_image()
        data.take(MS.nms(data.boxes, data.iou_preds, float(self.options.box_nms_thresh)))
        data.boxes = data.boxes + np.array([x0, y0, x0, y0], np.int64)
        data.points = data.points + np.array([x0, y0], np.float64)
        return data

    def _process_batch(self, points: np.ndarray, crop_size: tuple[int, int], crop_box: list[int],
                       orig_size: tuple[int, int]) -> MaskSet:
        from edgesam.runtime.postprocess import mask_geometry, single_blas_thread

        o, st = self.options, self.stats
        t = time.perf_counter()
        labels = np.ones((len(points), 1))
        low, iou = self.predictor.decode(points[:, None, :], labels, multimask_output=bool(o.multimask_output))
        if o.use_m2m:  # SAM 2: each mask refined once, its clamped low-res logits as mask input
            prev = self.predictor.clamp_low_res(low.reshape(-1, 1, *low.shape[2:]))
            again = np.repeat(points, low.shape[1], axis=0)
            low, iou = self.predictor.decode(again[:, None, :], np.ones((len(again), 1)), mask_input=prev,
                                             multimask_output=False)
            points = again
        low = self._clean(low)
        st["t_decoder"] += time.perf_counter() - t
        t = time.perf_counter()
        n_masks = low.shape[1]
        low = low.reshape(-1, *low.shape[2:])
        iou = iou.reshape(-1).astype(np.float32)
        pts = np.repeat(points, n_masks, axis=0)
        st["decoded"] += len(iou)
        if len(iou):
            st["max_predicted_iou"] = float(np.fmax(st["max_predicted_iou"], iou.max()))
        keep = np.arange(len(iou))
        if o.pred_iou_thresh > 0.0:  # float32 comparison, as torch compares a float32 tensor
            keep = keep[iou[keep] > np.float32(o.pred_iou_thresh)]
        st["iou_kept"] += len(keep)
        # the bundle's geometry (manifest: SAM's padded frame, or SAM 2's straight upscale) and mask
        # threshold, as the predictor uses them
        spec = self.predictor.preprocess_spec
        input_size, frame = mask_geometry(spec.resize, spec.image_size, self.predictor.input_size, low.shape[-1])
        thr = self.predictor.mask_threshold if o.mask_threshold is None else float(o.mask_threshold)
        offset = float(o.stability_score_offset)
        with single_blas_thread():
            if o.stability_score_thresh > 0.0 and len(keep):
                bound = MS.stability_upper_bound(low[keep], input_size, crop_size, offset, thr, frame)
                keep = keep[bound >= np.float64(np.float32(o.stability_score_thresh)) * (1 - 1e-6)]
            st["bound_kept"] += len(keep)
            masks, stab = MS.upscale_with_stability(low[keep], input_size, crop_size, offset, thr, frame)
        if o.stability_score_thresh > 0.0:
            ok = stab >= np.float32(o.stability_score_thresh)
            keep, masks, stab = keep[ok], masks[ok], stab[ok]
        st["stable"] += len(keep)
        boxes = MS.mask_boxes(masks)
        h, w = orig_size
        near = MS.box_near_crop_edge(boxes, crop_box, [0, 0, w, h])
        if near.any():
            keep, masks, stab, boxes = keep[~near], masks[~near], stab[~near], boxes[~near]
        rles = _uncropped_rles(masks, crop_box, orig_size)
        st["t_filter"] += time.perf_counter() - t
        return MaskSet(rles, boxes=boxes, iou_preds=iou[keep], points=pts[keep], stability_score=stab,
                       crop_boxes=np.tile(np.array(crop_box, np.int64), (len(keep), 1)))

    def _clean(self, low: np.ndarray) -> np.ndarray:
        """A SAM2ImagePredictor's hole and sprinkle filling on the low-res logits, as its
        ``_predict`` applies it before the official generator sees the masks."""
        holes, sprinkles = (float(getattr(self.predictor, k, 0.0)) for k in ("max_hole_area", "max_sprinkle_area"))
        if holes <= 0 and sprinkles <= 0:
            return low
        from edgesam.runtime.postprocess import fill_holes_and_sprinkles

        return fill_holes_and_sprinkles(low, self.predictor.mask_threshold, holes, sprinkles)

    @staticmethod
    def postprocess_small_regions(data: MaskSet, min_area: int, nms_thresh: float) -> MaskSet:
        """Fill small holes and drop small islands, then NMS again, preferring unchanged masks.

        As the official method: a changed mask scores 0 and an unchanged one 1 in the NMS,
        and only kept, changed masks get a new RLE and box. Edits ``data`` in place.
        """
        if len(data) == 0:
            return data
        new_masks, scores = [], []
        for rle in data.rles:
            mask, changed_holes = remove_small_regions(rle_to_mask(rle), min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(mask)
            scores.append(float(not (changed_holes or changed_islands)))
        boxes = MS.mask_boxes(np.stack(new_masks))
        keep = MS.nms(boxes, np.array(scores, np.float32), nms_thresh)
        for i in keep:
            if scores[i] == 0.0:
                data.rles[i] = mask_to_rle(new_masks[i][None])[0]
                data.boxes[i] = boxes[i]
        data.take(keep)
        return data


def _xywh(box: np.ndarray) -> list[int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _uncropped_rles(masks: np.ndarray, crop_box: list[int], orig_size: tuple[int, int]) -> list[dict]:
    """KxhxW crop masks -> RLEs of the masks placed in the full HxW image."""
    x0, y0, x1, y1 = crop_box
    h, w = orig_size
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return mask_to_rle(masks)
    out = []
    full = np.zeros((h, w), bool)
    for m in masks:  # one full-size mask at a time: bounded memory at 12 MP
        full[y0:y1, x0:x1] = m
        out.extend(mask_to_rle(full[None]))
    return out


class SAM2AutomaticMaskGenerator(SamAutomaticMaskGenerator):
    """Drop-in for ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator``: the official
    keywords and defaults (``pred_iou_thresh`` 0.8, ``mask_threshold``, ``use_m2m``,
    ``multimask_output``) and records. ``model`` is a SAM 2 bundle folder (opened, as the official
    class builds its predictor, with ``max_hole_area`` and ``max_sprinkle_area`` set to
    ``min_mask_region_area``) or an edgesam ``SAM2ImagePredictor``."""

    def __init__(self, model: Any, points_per_side: Optional[int] = SAM2_DEFAULTS.points_per_side,
                 points_per_batch: int = SAM2_DEFAULTS.points_per_batch,
                 pred_iou_thresh: float = SAM2_DEFAULTS.pred_iou_thresh,
                 stability_score_thresh: float = SAM2_DEFAULTS.stability_score_thresh,
                 stability_score_offset: float = SAM2_DEFAULTS.stability_score_offset,
                 mask_threshold: float = SAM2_DEFAULTS.mask_threshold,
                 box_nms_thresh: float = SAM2_DEFAULTS.box_nms_thresh,
                 crop_n_layers: int = SAM2_DEFAULTS.crop_n_layers,
                 crop_nms_thresh: float = SAM2_DEFAULTS.crop_nms_thresh,
                 crop_overlap_ratio: float = SAM2_DEFAULTS.crop_overlap_ratio,
                 crop_n_points_downscale_factor: int = SAM2_DEFAULTS.crop_n_points_downscale_factor,
                 point_grids: Optional[Sequence[np.ndarray]] = SAM2_DEFAULTS.point_grids,
                 min_mask_region_area: int = SAM2_DEFAULTS.min_mask_region_area,
                 output_mode: str = SAM2_DEFAULTS.output_mode, use_m2m: bool = SAM2_DEFAULTS.use_m2m,
                 multimask_output: bool = SAM2_DEFAULTS.multimask_output,
                 progress: Optional[ProgressFn] = None, **kwargs: Any) -> None:
        self.options = AmgOptions(
            points_per_side=points_per_side, points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio, crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids, min_mask_region_area=min_mask_region_area, output_mode=output_mode,
            mask_threshold=mask_threshold, use_m2m=use_m2m, multimask_output=multimask_output).validate()
        if isinstance(model, (str, os.PathLike)):
            from edgesam.runtime.sam2_predictor import SAM2ImagePredictor

            model = SAM2ImagePredictor(model, max_hole_area=min_mask_region_area,
                                       max_sprinkle_area=min_mask_region_area, **kwargs)
        elif kwargs:
            raise InputError(f"unexpected keyword arguments {', '.join(kwargs)} (they open a bundle path)")
        self._setup(model, progress)
