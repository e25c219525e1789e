"""``edgesam segment``: one image, point/box prompts, masks and overlays written atomically."""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgesam.bundle import atomic_write_bytes, check_writable_file
from edgesam.errors import InputError
from edgesam.runtime.options import RunOptions


@dataclass(frozen=True, kw_only=True)
class SegmentRequest:
    bundle: str
    image: str
    points: list = field(default_factory=list)  # [x, y] or [x, y, label]
    boxes: list = field(default_factory=list)  # [x0, y0, x1, y1]
    mask_input: Optional[str] = None
    multimask: bool = False
    run: RunOptions = field(default_factory=RunOptions)  # backend, precision, threads, arithmetic
    out: Optional[str] = None
    overlay: Optional[str] = None
    npz: Optional[str] = None


def _check_outputs(req: SegmentRequest) -> None:
    for path in (req.out, req.overlay, req.npz):
        if path and not Path(path).resolve().parent.is_dir():
            raise InputError(f"{path}: output folder does not exist")
        if path:
            check_writable_file(path)  # all destinations before any is written
    for path in (req.out, req.overlay):
        if path and Path(path).suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
            raise InputError(f"{path}: image outputs must end in .png, .jpg or .bmp")


def mask_bbox(m: np.ndarray) -> list[int]:
    """XYWH of a bool mask, width and height counted in pixels (COCO's extent; [0, 0, 0, 0] if empty).
    The AMG's records differ by one: segment-anything's ``box_xyxy_to_xywh`` on inclusive boxes."""
    from edgesam.runtime.maskstats import mask_boxes

    if not m.any():
        return [0, 0, 0, 0]
    x0, y0, x1, y1 = (int(v) for v in mask_boxes(m[None])[0])
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def segment(req: SegmentRequest, predictor=None, image: Optional[np.ndarray] = None) -> dict:
    """Run one request. ``predictor`` (already loaded on ``req.bundle``) and ``image`` (the decoded
    RGB pixels of ``req.image``) let a caller segmenting many images load and decode only once."""
    from edgesam.cli import draw
    from edgesam.runtime.imageio import read_image, write_image

    _check_outputs(req)
    coords = labels = None
    if req.points:
        coords = np.array([p[:2] for p in req.points], np.float64)
        labels = np.array([p[2] if len(p) == 3 else 1 for p in req.points], np.float64)
    boxes = np.array(req.boxes, np.float64) if req.boxes else None
    if coords is None and boxes is None:
        raise InputError("empty prompt: give at least one --point X,Y[,LABEL] or --box X0,Y0,X1,Y1")
    mask_input = None
    if req.mask_input:
        from edgesam.runtime.imageio import load_npy

        mask_input = load_npy(req.mask_input)
    if image is None:
        image = read_image(req.image)  # validates the file before the (slow) model load
    t0 = time.perf_counter()
    pred = predictor or req.run.predictor(req.bundle)
    t_load = time.perf_counter() - t0
    # Prompts are checked before the encoder runs, so bad input fails fast.
    from edgesam.runtime import prompts as P

    c3, l3 = P.validate_points(coords, labels)
    b2 = P.validate_boxes(boxes)
    n_box = 0 if b2 is None else b2.shape[0]
    pred.transform.validate_mask_input(mask_input, max(n_box, 1))
    t0 = time.perf_counter()
    pred.set_image(image)
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    if n_box > 1:
        masks, scores, low = pred.predict_batch(c3, l3, b2, mask_input, req.multimask)
        keep = np.argmax(scores, 1)
        best = masks[np.arange(n_box), keep]
        if not req.multimask:
            masks, scores, low = masks[:, 0], scores[:, 0], low[:, 0]
    else:
        masks, scores, low = pred.predict(coords, labels, None if b2 is None else b2[0], mask_input, req.multimask)
        best = masks[np.argmax(scores)][None]
    t_decode = time.perf_counter() - t0
    written = []
    if req.out:
        union = np.any(best, 0).astype(np.uint8) * 255
        write_image(req.out, union)
        written.append(req.out)
    if req.overlay:
        vis = draw.tint(image, best)
        if coords is not None:
            draw.draw_points(vis, coords, labels)
        for b in ([] if b2 is None else b2):
            draw.draw_box(vis, b)
        write_image(req.overlay, vis)
        written.append(req.overlay)
    if req.npz:
        buf = io.BytesIO()
        np.savez_compressed(buf, masks=masks, scores=scores, low_res_logits=low)
        atomic_write_bytes(req.npz, buf.getvalue())
        written.append(req.npz)
    untrained = pred.bundle.untrained
    flat_scores = np.asarray(scores).reshape(-1).tolist()
    summary = (f"{Path(req.image).name}: {best.shape[0]} mask(s), best score "
               f"{float(np.max(scores)):.3f}, area {int(best.sum())} px; embed {t_embed:.2f} s, decode+post "
               f"{t_decode * 1e3:.0f} ms ({req.run.backend} {req.run.precision})"
               + ("  [untrained model: masks are meaningless]" if untrained else ""))
    if written:
        summary += "\nwrote " + ", ".join(written)
    return {"summary": summary, "image": req.image, "size": list(image.shape[:2]), "untrained": untrained,
            "scores": flat_scores, "boxes_xywh": [mask_bbox(m) for m in best],
            "areas": [int(m.sum()) for m in best], "written": written,
            "runtime_precision": pred.runtime_precision,
            "seconds": {"load": t_load, "embed": t_embed, "decode_postprocess": t_decode}}
