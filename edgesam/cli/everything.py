"""``edgesam everything``: automatic mask generation on one image, records and overlay written atomically."""
from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgesam.bundle import atomic_write_bytes
from edgesam.errors import InputError
from edgesam.runtime.amg import AmgOptions, bundle_options, open_generator
from edgesam.runtime.options import RunOptions

# Records go to a file: RLE in JSON by default, not one full-size bool array per mask (the
# official generator's "binary_mask"). The one difference from AmgOptions' defaults.
OUTPUT_MODE = "coco_rle"


@dataclass(frozen=True, kw_only=True)
class EverythingRequest:
    bundle: str
    image: str
    # pred_iou_thresh None: the bundle's own default (its manifest's "amg": its family's official generator)
    options: AmgOptions = field(default_factory=lambda: AmgOptions(output_mode=OUTPUT_MODE, pred_iou_thresh=None))
    point_grids: Optional[str] = None  # .npy of an Nx2 grid or an LxNx2 stack, normalised to [0, 1]
    run: RunOptions = field(default_factory=RunOptions)  # backend, precision, threads, arithmetic
    out: Optional[str] = None  # .json (coco_rle / uncompressed_rle) or .npz (binary_mask)
    overlay: Optional[str] = None
    progress: bool = True


def _check_outputs(req: EverythingRequest) -> None:
    from edgesam.bundle import check_writable_file

    for path in (req.out, req.overlay):
        if path and not Path(path).resolve().parent.is_dir():
            raise InputError(f"{path}: output folder does not exist")
        if path:
            check_writable_file(path)  # all destinations before any is written
    if req.overlay and Path(req.overlay).suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
        raise InputError(f"{req.overlay}: the overlay must end in .png, .jpg or .bmp")
    if req.out:
        want = ".npz" if req.options.output_mode == "binary_mask" else ".json"
        if Path(req.out).suffix.lower() != want:
            raise InputError(f"{req.out}: --output-mode {req.options.output_mode} writes a {want} file")


def stderr_progress(prefix: str = "everything") -> Callable[[int, int, int, int], None]:
    """A tqdm bar on stderr over decoder batches (elapsed, rate, ETA), naming the crop. tqdm redraws
    in place on a terminal and writes plain updates, rate-limited, to a file or a pipe."""
    from tqdm import tqdm

    bar = None

    def show(done: int, total: int, crop: int, n_crops: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=prefix, unit="batch", file=sys.stderr, leave=True)
        bar.set_postfix_str(f"crop {crop + 1}/{n_crops}", refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()
    return show


def _npz_bytes(records: list[dict]) -> bytes:
    buf = io.BytesIO()
    h_w = records[0]["segmentation"].shape if records else (0, 0)
    np.savez_compressed(
        buf, masks=np.array([r["segmentation"] for r in records], bool).reshape(-1, *h_w),
        area=np.array([r["area"] for r in records], np.int64),
        bbox=np.array([r["bbox"] for r in records], np.int64).reshape(-1, 4),
        predicted_iou=np.array([r["predicted_iou"] for r in records], np.float32),
        point_coords=np.array([r["point_coords"][0] for r in records], np.float64).reshape(-1, 2),
        stability_score=np.array([r["stability_score"] for r in records], np.float32),
        crop_box=np.array([r["crop_box"] for r in records], np.int64).reshape(-1, 4))
    return buf.getvalue()


def overlay_image(image: np.ndarray, records: list[dict]) -> np.ndarray:
    """Every mask tinted in its own colour, largest first so small masks stay visible."""
    from edgesam.cli import draw
    from edgesam.runtime.rle import rle_to_mask

    order = sorted(range(len(records)), key=lambda i: -records[i]["area"])
    vis = image
    for chunk in range(0, len(order), 16):  # bounded memory: 16 full-size masks at a time
        idx = order[chunk:chunk + 16]
        segs = [records[i]["segmentation"] for i in idx]
        masks = np.stack([s if isinstance(s, np.ndarray) else rle_to_mask(s) for s in segs])
        vis = draw.tint(vis, masks)
    return vis


def everything(req: EverythingRequest, predictor=None) -> dict[str, Any]:
    """Run one request and return a JSON-ready summary; writes ``req.out`` / ``req.overlay`` atomically.
    ``predictor``: one already open on ``req.bundle`` with ``req.run`` (the demo's), else one is opened."""
    from edgesam.bundle import load_bundle
    from edgesam.runtime.imageio import read_image, write_image

    bundle = load_bundle(req.bundle, verify=False)  # the manifest, read once (the predictor takes it)
    opts = bundle_options(bundle, req.options, req.point_grids)
    _check_outputs(req)
    image = read_image(req.image)  # validates the file before the (slow) model load
    t0 = time.perf_counter()
    pred, gen = open_generator(bundle, opts, req.run, stderr_progress() if req.progress else None, predictor)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    records = gen.generate(image)
    t_gen = time.perf_counter() - t0
    written = []
    if req.out:
        if opts.output_mode == "binary_mask":
            atomic_write_bytes(req.out, _npz_bytes(records))
        else:
            atomic_write_bytes(req.out, (json.dumps(records) + "\n").encode())
        written.append(req.out)
    if req.overlay:
        write_image(req.overlay, overlay_image(image, records))
        written.append(req.overlay)
    untrained = pred.bundle.untrained
    summary = (f"{Path(req.image).name}: {len(records)} mask(s) from {int(gen.stats['decoded'])} candidates "
               f"in {t_gen:.1f} s (encoder {gen.stats['t_encoder']:.1f} s, decoder {gen.stats['t_decoder']:.1f} s, "
               f"filters {gen.stats['t_filter']:.1f} s; {req.run.backend} {req.run.precision})"
               + ("  [untrained model: masks are meaningless]" if untrained else ""))
    if not records and gen.stats["decoded"]:
        summary += "\n" + _why_no_masks(gen.stats, opts)
    if written:
        summary += "\nwrote " + ", ".join(written)
    return {"summary": summary, "image": req.image, "size": list(image.shape[:2]), "untrained": untrained,
            "masks": len(records), "areas": [r["area"] for r in records], "bboxes_xywh": [r["bbox"] for r in records],
            "predicted_iou": [r["predicted_iou"] for r in records],
            "stability_score": [r["stability_score"] for r in records], "written": written,
            "runtime_precision": pred.runtime_precision,
            "counts": {k: int(gen.stats[k]) for k in ("decoded", "iou_kept", "bound_kept", "stable", "kept")},
            "max_predicted_iou": None if np.isnan(gen.stats["max_predicted_iou"]) else gen.stats["max_predicted_iou"],
            "seconds": {"load": t_load, "generate": t_gen, "encoder": gen.stats["t_encoder"],
                        "decoder": gen.stats["t_decoder"], "filters": gen.stats["t_filter"]}}


def _why_no_masks(stats: dict, opts) -> str:
    """One line on which filter removed every candidate, with the option that relaxes it."""
    decoded, iou_kept, stable = int(stats["decoded"]), int(stats["iou_kept"]), int(stats["stable"])
    if iou_kept == 0:
        return (f"no masks: none of {decoded} candidates had a predicted IoU above --pred-iou-thresh "
                f"{opts.pred_iou_thresh:g} (highest {stats['max_predicted_iou']:.3f}); lower it to keep some")
    if stable == 0:
        return (f"no masks: {iou_kept} candidates passed --pred-iou-thresh, none reached --stability-score-thresh "
                f"{opts.stability_score_thresh:g}; lower it to keep some")
    return f"no masks: {stable} stable candidates all touched a crop edge inside the image"
