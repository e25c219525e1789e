"""``edgesam track``: prompt objects on a frame of a clip and follow them through it (SAM 2 bundles
with video graphs), writing per-frame masks and an overlay."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgesam.errors import InputError
from edgesam.runtime.options import RunOptions

MASK_FORMATS = ("png", "coco")


@dataclass(frozen=True, kw_only=True)
class TrackRequest:
    bundle: str
    video: str  # a folder of JPEG frames named by index, or a video file (OpenCV)
    points: list = field(default_factory=list)  # [x, y] or [x, y, label], for --obj on --frame
    box: Optional[list] = None
    frame: int = 0
    obj: int = 1
    prompts: Optional[str] = None  # a JSON file of prompts for several objects
    run: RunOptions = field(default_factory=RunOptions)
    out: str = "track"
    mask_format: str = "png"
    overlay: Optional[str] = None
    progress: bool = True


def read_prompts(req: TrackRequest) -> list[dict]:
    """The prompts as a list of {"frame", "obj", "points", "labels", "box"}: from --prompts FILE
    (a JSON list of such objects) or from --point/--box on --frame for --obj."""
    if req.prompts:
        if req.points or req.box:
            raise InputError("give prompts either as --point/--box or in --prompts FILE, not both")
        path = Path(req.prompts)
        try:
            items = json.loads(path.read_text())
        except OSError as e:
            raise InputError(f"{path}: cannot read the prompts file ({e.strerror})") from None
        except ValueError as e:
            raise InputError(f"{path}: invalid JSON ({e})") from None
        if not isinstance(items, list) or not items:
            raise InputError(f"{path}: expected a non-empty JSON list of prompts "
                             '[{"frame": 0, "obj": 1, "points": [[x, y]], "labels": [1]}, ...]')
        out = []
        for i, it in enumerate(items):
            if not isinstance(it, dict) or not ({"points", "box"} & set(it)):
                raise InputError(f"{path}: prompt {i} must be an object with points (and labels) or a box")
            pts = it.get("points")
            labels = it.get("labels", [1] * len(pts) if pts else None)
            out.append({"frame": it.get("frame", 0), "obj": it.get("obj", 1), "points": pts, "labels": labels,
                        "box": it.get("box")})
        return out
    if not req.points and req.box is None:
        raise InputError("track needs a prompt: --point X,Y[,LABEL], --box X0,Y0,X1,Y1 or --prompts FILE")
    pts = [p[:2] for p in req.points] or None
    labels = [int(p[2]) if len(p) > 2 else 1 for p in req.points] or None
    return [{"frame": req.frame, "obj": req.obj, "points": pts, "labels": labels, "box": req.box}]


def _check_prompt(p: dict, i: int, num_frames: int, w: int, h: int) -> None:
    f = p["frame"]
    if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < num_frames:
        raise InputError(f"prompt {i}: frame {f!r} is outside the clip's frames 0..{num_frames - 1}")
    for x, y in (p["points"] or []) + ([p["box"][:2], p["box"][2:]] if p["box"] else []):
        if not (np.isfinite(x) and np.isfinite(y)) or not (-0.5 <= x <= w + 0.5 and -0.5 <= y <= h + 0.5):
            raise InputError(f"prompt {i}: ({x:g}, {y:g}) lies outside the {w}x{h} frame")
    if p["points"] and (p["labels"] is None or len(p["labels"]) != len(p["points"])
                        or any(int(v) not in (0, 1) for v in p["labels"])):
        raise InputError(f"prompt {i}: one label (1 object, 0 background) per point")


def _check_frame_sizes(frames: list, h: int, w: int) -> None:
    """Every frame of the clip has the first's size (read from the file headers; before any tracking)."""
    from edgesam.runtime.imageio import image_size

    for i, f in enumerate(frames):
        fh, fw = f.shape[:2] if isinstance(f, np.ndarray) else image_size(f)
        if (fh, fw) != (h, w):
            raise InputError(f"frame {i} is {fw}x{fh}, not the video's {w}x{h}")


def track(req: TrackRequest) -> dict:
    from edgesam.runtime.sam2_video_predictor import SAM2VideoPredictor

    if req.mask_format not in MASK_FORMATS:
        raise InputError(f"--format must be {' or '.join(MASK_FORMATS)}, not {req.mask_format!r}")
    out = Path(req.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not an empty folder")
    if not out.resolve().parent.is_dir():
        raise InputError(f"{out}: its parent folder does not exist")
    if req.overlay and Path(req.overlay).suffix.lower() not in (".mp4", ".avi"):
        raise InputError(f"{req.overlay}: the overlay video must end in .mp4 or .avi")
    prompts = read_prompts(req)
    t0 = time.perf_counter()
    pred = SAM2VideoPredictor(req.bundle, backend=req.run.backend, precision=req.run.precision,
                              threads=req.run.threads, runtime_precision=req.run.runtime_precision,
                              int8_compute=req.run.int8_compute, progress=req.progress,
                              decoder_runtime_precision=req.run.decoder_runtime_precision)
    state = pred.init_state(req.video)
    n, h, w = state["num_frames"], state["video_height"], state["video_width"]
    _check_frame_sizes(state["images"], h, w)
    for i, p in enumerate(prompts):
        _check_prompt(p, i, n, w, h)
    for p in prompts:
        pred.add_new_points_or_box(state, p["frame"], p["obj"], points=p["points"], labels=p["labels"], box=p["box"])
    results: dict[int, np.ndarray] = {}
    start = min(p["frame"] for p in prompts)
    for f, ids, masks in pred.propagate_in_video(state, start_frame_idx=start):
        results[f] = masks[:, 0] > 0
    if start > 0:
        for f, ids, masks in pred.propagate_in_video(state, start_frame_idx=start, reverse=True):
            results[f] = masks[:, 0] > 0
    obj_ids = list(state["obj_ids"])
    seconds = time.perf_counter() - t0
    out.mkdir(exist_ok=True)
    _write_masks(out, results, obj_ids, req.mask_format)
    note = None
    if req.overlay:
        note = _write_overlay(req, state, pred, results, obj_ids)
    present = {str(o): sum(1 for m in results.values() if m[k].any()) for k, o in enumerate(obj_ids)}
    return {"frames": n, "size": [w, h], "objects": obj_ids, "frames_with_object": present, "out": str(out),
            "format": req.mask_format, "overlay": note or req.overlay, "seconds": round(seconds, 2),
            "ms_per_frame": round(1000 * seconds / max(n, 1), 1)}


def _write_masks(out: Path, results: dict, obj_ids: list, fmt: str) -> None:
    from edgesam.runtime.imageio import write_image

    if fmt == "png":  # out/obj{ID}/{frame:05d}.png, 0/255
        for k, o in enumerate(obj_ids):
            d = out / f"obj{o}"
            d.mkdir(exist_ok=True)
            for f in sorted(results):
                write_image(d / f"{f:05d}.png", (results[f][k] * 255).astype(np.uint8))
        return
    from edgesam.runtime.rle import coco_encode_rle, mask_to_rle

    for f in sorted(results):  # out/{frame:05d}.json: {obj id: COCO RLE}
        rles = mask_to_rle(results[f])
        doc = {str(o): coco_encode_rle(r) for o, r in zip(obj_ids, rles)}
        (out / f"{f:05d}.json").write_text(json.dumps(doc))


def _write_overlay(req: TrackRequest, state: dict, pred, results: dict, obj_ids: list) -> str:
    from edgesam.cli.draw import tint
    from edgesam.runtime.sam2_video_predictor import _frame_array

    frames = [tint(_frame_array(state["images"][f]), results[f]) for f in sorted(results)]
    try:
        import cv2
    except ImportError:
        folder = Path(req.out) / "overlay"
        folder.mkdir(exist_ok=True)
        from edgesam.runtime.imageio import write_image

        for f, img in zip(sorted(results), frames):
            write_image(folder / f"{f:05d}.png", img)
        return f"{folder} (PNG frames: writing {req.overlay} needs OpenCV, pip install opencv-python-headless)"
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if req.overlay.lower().endswith(".mp4") else "MJPG"))
    writer = cv2.VideoWriter(req.overlay, fourcc, 10.0, (w, h))
    for img in frames:
        writer.write(np.ascontiguousarray(img[..., ::-1]))
    writer.release()
    if not Path(req.overlay).is_file():
        raise InputError(f"{req.overlay}: OpenCV could not write this video")
    return req.overlay
