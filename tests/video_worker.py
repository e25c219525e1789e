"""The video tracking scenarios of test_sam2_video.py, run the same way on the official
``sam2.SAM2VideoPredictor`` (in the test process) and on edgesam's (here, in a fresh interpreter
with no torch).

usage: python video_worker.py BUNDLE BACKEND PRECISION FRAMES_DIR OUT.npz [MEMORY_DTYPE [first [RUNTIME_PRECISION]]]
(the tracking decoder always at runtime precision high, the combination the convert gate checks)
Each scenario returns {"name/frame/obj": the packed mask, "name/frame/obj/shape": its shape}
through ``run_scenarios(predictor, frames_dir, points)``, with the calls written as the official
examples write them.
"""
from __future__ import annotations

import sys

import numpy as np

HEAVY = ("torch", "torchvision", "timm", "onnx")
N_FRAMES = 8


def _np(m) -> np.ndarray:
    return m.numpy() if hasattr(m, "numpy") else np.asarray(m)


def _keep(res: dict, name: str, f: int, ids, masks) -> None:
    masks = _np(masks)
    for k, o in enumerate(ids):
        res[f"{name}/{f}/{o}"] = np.packbits(masks[k, 0] > 0, axis=None)
        res[f"{name}/{f}/{o}/shape"] = np.array(masks[k, 0].shape)


def run_scenarios(pred, frames: str, centres: dict, box2: list, mask3: np.ndarray, only_first: bool = False) -> dict:
    """``centres[obj][frame]``: a point inside each object (or None); ``box2``: object 2's box on
    frame 0; ``mask3``: object 3's true mask on frame 0. ``only_first``: scenario 1 alone."""
    res = {}
    # 1. two objects prompted on different frames (object 2 on frame 3: frames 0-2 see only its future
    #    conditioning frame), a point and a box; propagate forward
    st = pred.init_state(frames)
    _, ids, m = pred.add_new_points_or_box(st, 0, 1, points=[centres[1][0]], labels=[1])
    _keep(res, "two/add0", 0, ids, m)
    _, ids, m = pred.add_new_points_or_box(st, 3, 2, box=box2)
    _keep(res, "two/add3", 3, ids, m)
    for f, ids, m in pred.propagate_in_video(st):
        _keep(res, "two", f, ids, m)
    if only_first:
        return res
    # 2. a correction after propagating: a negative click on frame 6, two points on frame 7 (refines
    #    the tracked mask with it as the mask input), propagate again
    _, ids, m = pred.add_new_points_or_box(st, 6, 1, points=[[5, 5]], labels=[0])
    _keep(res, "fix/add6", 6, ids, m)
    _, ids, m = pred.add_new_points_or_box(st, 7, 1, points=[centres[1][7], [600, 60]], labels=[1, 0],
                                          clear_old_points=False)
    _keep(res, "fix/add7", 7, ids, m)
    for f, ids, m in pred.propagate_in_video(st, start_frame_idx=0):
        _keep(res, "fix", f, ids, m)
    # 3. remove object 2, clear the prompts of object 1 on frame 7
    ids, updated = pred.remove_object(st, 2)
    res["remove/ids"] = np.array(ids)
    _, ids, m = pred.clear_all_prompts_in_frame(st, 7, 1)
    _keep(res, "clear/7", 7, ids, m)
    pred.reset_state(st)
    # 4. a mask prompt, from the middle of the clip, both directions, normalised coordinates for a 2nd object
    _, ids, m = pred.add_new_mask(st, 4, 3, mask3)
    _keep(res, "mask/add4", 4, ids, m)
    h, w = mask3.shape
    x, y = centres[1][4]
    _, ids, m = pred.add_new_points_or_box(st, 4, 1, points=[[x / w, y / h]], labels=[1], normalize_coords=False)
    _keep(res, "mask/add4b", 4, ids, m)
    for f, ids, m in pred.propagate_in_video(st, start_frame_idx=4, max_frame_num_to_track=4):
        _keep(res, "mask/fwd", f, ids, m)
    for f, ids, m in pred.propagate_in_video(st, start_frame_idx=4, reverse=True):
        _keep(res, "mask/rev", f, ids, m)
    # 5. object 2 leaves the frame in the middle third and comes back
    pred.reset_state(st)
    pred.add_new_points_or_box(st, 0, 2, points=[centres[2][0]], labels=[1])
    for f, ids, m in pred.propagate_in_video(st):
        _keep(res, "away", f, ids, m)
    return res


def main(bundle: str, backend: str, precision: str, frames: str, out: str, memory_dtype: str = "float32",
         only_first: str = "", runtime_precision: str = "high") -> None:
    from edgesam.runtime import SAM2VideoPredictor

    args = np.load(f"{frames}/../prompts.npz", allow_pickle=False)
    centres = {o: [tuple(c) for c in args[f"centres{o}"]] for o in (1, 2)}
    pred = SAM2VideoPredictor(bundle, backend=backend, precision=precision, runtime_precision=runtime_precision,
                              fill_hole_area=0, memory_dtype=memory_dtype, progress=False,
                              decoder_runtime_precision="high")  # "low": the combination the gate checks
    res = run_scenarios(pred, frames, centres, list(args["box2"]), args["mask3"], only_first == "first")
    res["heavy_modules"] = np.array([m for m in HEAVY if m in sys.modules] or [""])
    np.savez(out, **res)


if __name__ == "__main__":
    main(*sys.argv[1:])
