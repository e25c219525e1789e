"""``SAM2VideoPredictor`` without torch: SAM 2's video tracking on a bundle with video graphs.

The official ``sam2.sam2_video_predictor.SAM2VideoPredictor`` API: ``init_state``,
``add_new_points_or_box``, ``add_new_mask``, ``propagate_in_video``, ``clear_all_prompts_in_frame``,
``remove_object``, ``reset_state``, with its arguments and its inference-state keys. Masks come
back as numpy float32 logits (the official returns torch tensors), ``num_objects x 1 x H x W``.
The per-frame step is ``runtime.video_memory.TrackStep``; frames are read and preprocessed with
MNN.cv as the image predictor does, one at a time, when a frame is visited (the official loads the
whole clip into memory first).

``SAM2VideoStream`` is the form for live cameras: prompt the first frame, then push frames and
get masks back, with the memory bounded by the bank.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from edgesam.bundle import Bundle, load_bundle
from edgesam.errors import BundleError, InputError
from edgesam.runtime.options import RUN_DEFAULTS
from edgesam.runtime.video_memory import (MEMORY_DTYPES, NO_OBJ_SCORE, TrackStep, fill_small_holes, resize_aa,
                                          resize_bilinear)

JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")  # what the official frame folder reader takes


def frame_sources(video_path) -> list:
    """The frames of ``video_path``: a folder of JPEG frames named by index (as the official
    ``init_state`` reads them), a video file (through OpenCV, where it is installed), or a list of
    HxWx3 uint8 RGB arrays. Returns a list of paths or arrays, in frame order."""
    if isinstance(video_path, (list, tuple)):
        if not video_path:
            raise InputError("video has no frames (an empty list)")
        for i, f in enumerate(video_path):
            if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise InputError(f"frame {i} must be an HxWx3 uint8 RGB numpy array")
        return list(video_path)
    path = Path(os.fspath(video_path))
    if path.is_dir():
        names = [p for p in path.iterdir() if p.suffix in JPEG_SUFFIXES]
        if not names:
            raise InputError(f"{path}: no JPEG frames (*.jpg, *.jpeg) in this folder")
        try:
            names.sort(key=lambda p: int(p.stem))
        except ValueError:
            raise InputError(f"{path}: frame files must be named by their index (00000.jpg, 00001.jpg, ...), "
                             f"as the official video predictor reads them") from None
        return names
    if path.is_file():
        return read_video_file(path)
    raise InputError(f"{path}: no such folder of frames or video file")


def read_video_file(path: Path) -> list:
    try:
        import cv2
    except ImportError:
        raise InputError(f"{path}: reading a video file needs OpenCV (pip install opencv-python-headless); "
                         "or pass a folder of JPEG frames") from None
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    cap.release()
    if not frames:
        raise InputError(f"{path}: no frames could be read from this file")
    return frames


def _frame_array(src) -> np.ndarray:
    if isinstance(src, np.ndarray):
        return src
    from edgesam.runtime.imageio import read_image

    return read_image(src)


class _Session:
    """What the predictor runs per frame: the encoder, the three video graphs (``run`` callables),
    the step. ``open_session`` builds one from a bundle; the convert gate from the files it checks."""

    def __init__(self, encoder, graphs: dict, constants: dict, video, preprocess_spec, decoder_spec,
                 image_input: str, interpolation: str, memory_dtype: str) -> None:
        self.encoder, self.spec = encoder, video
        self.preprocess_spec, self.image_input, self.interpolation = preprocess_spec, image_input, interpolation
        self.step = TrackStep(video, decoder_spec, constants, graphs, memory_dtype)

    def features(self, frame: np.ndarray) -> dict:
        from edgesam.runtime.preprocess import check_image_array, preprocess

        x, _ = preprocess(check_image_array(frame), self.preprocess_spec, interpolation=self.interpolation)
        return self.step.frame_features(self.encoder.run({self.image_input: x}))


def graph_arithmetic(name: str, runtime_precision: str, decoder_runtime_precision: Optional[str]) -> str:
    """The arithmetic a video graph (or "encoder") runs in: the tracking decoder's own where given."""
    return (decoder_runtime_precision or runtime_precision) if name == "track_decoder" else runtime_precision


def open_session(bundle: Bundle, backend: str, precision: str, threads: Optional[int], runtime_precision: str,
                 interpolation: str, int8_compute: str, memory_dtype: str,
                 decoder_runtime_precision: Optional[str] = None) -> _Session:
    """The encoder and the video graphs opened for tracking; ``decoder_runtime_precision`` is the
    tracking decoder's arithmetic where it differs from the others'."""
    from edgesam.runtime.backends import BACKEND_TABLE, ModelRequest, mnn_memory_mode, resolve_threads
    from edgesam.runtime.predictor import open_backend

    spec = bundle.spec
    video = spec.video
    if spec.family != "sam2":
        raise BundleError(f"{bundle.root}: a {spec.family} bundle; video tracking needs a SAM 2 / 2.1 bundle")
    if video is None:
        raise BundleError(f"{bundle.root}: this SAM 2 bundle has no video graphs (converted with --no-video "
                          "or by an older edgesam): convert it again to track objects in video")
    threads = resolve_threads(threads)
    encoder = open_backend(bundle, "encoder", backend, precision, threads, runtime_precision,
                           int8_compute=int8_compute)
    kind = BACKEND_TABLE[backend]
    graphs = {}
    for name in video.graphs:
        path, entry = bundle.open(name, kind.format, precision)
        memory = mnn_memory_mode(precision, int8_compute) if backend == "mnn" else "normal"
        graphs[name] = kind.open(ModelRequest(path=path, inputs=list(entry.inputs), outputs=list(entry.outputs),
                                              threads=threads, memory=memory,
                                              runtime_precision=graph_arithmetic(
                                                  name, runtime_precision, decoder_runtime_precision))).run
    path, _ = bundle.open("video_constants", "npz", "fp32")  # video.constants, hashed as it is opened
    with np.load(path, allow_pickle=False) as z:
        constants = {k: z[k] for k in z.files}
    return _Session(encoder, graphs, constants, video, spec.preprocess, spec.decoder, spec.encoder.image_input,
                    interpolation, memory_dtype)


class SAM2VideoPredictor:
    """Drop-in for ``sam2.sam2_video_predictor.SAM2VideoPredictor`` on an edgesam SAM 2 bundle.

    ``bundle`` is a bundle folder (or a loaded ``Bundle``) where the official class takes a model;
    ``backend``, ``precision``, ``threads``, ``runtime_precision``, ``interpolation`` and
    ``int8_compute`` are ``SamPredictor``'s; ``decoder_runtime_precision`` is the tracking decoder's
    arithmetic where it should differ (OpenVINO's "low" is gated with the decoder at "high": bf16 in
    the decoder moved the test model's masks most, docs/performance.md). The official constructor's
    keywords keep their meaning:
    ``fill_hole_area`` (default: the bundle's, 8, which the official code applies only with its
    CUDA extension), ``non_overlap_masks``, ``clear_non_cond_mem_around_input``,
    ``add_all_frames_to_correct_as_cond``. ``memory_dtype``: how the bank stores mask memories,
    "float32" (default), "float16", or "bfloat16" (what the official stores).
    """

    def __init__(self, bundle: str | os.PathLike | Bundle, backend: str = RUN_DEFAULTS.backend,
                 precision: str = RUN_DEFAULTS.precision, threads: Optional[int] = RUN_DEFAULTS.threads,
                 runtime_precision: str = RUN_DEFAULTS.runtime_precision,
                 interpolation: str = RUN_DEFAULTS.interpolation, int8_compute: str = RUN_DEFAULTS.int8_compute,
                 *, fill_hole_area: Optional[int] = None, non_overlap_masks: bool = False,
                 clear_non_cond_mem_around_input: bool = False, add_all_frames_to_correct_as_cond: bool = False,
                 memory_dtype: str = "float32", progress: bool = True,
                 decoder_runtime_precision: Optional[str] = RUN_DEFAULTS.decoder_runtime_precision) -> None:
        from edgesam.runtime.options import RunOptions

        RunOptions(backend=backend, precision=precision, threads=threads, runtime_precision=runtime_precision,
                   interpolation=interpolation, int8_compute=int8_compute,
                   decoder_runtime_precision=decoder_runtime_precision)
        if memory_dtype not in MEMORY_DTYPES:
            raise InputError(f"memory_dtype must be one of {', '.join(MEMORY_DTYPES)}, not {memory_dtype!r}")
        if isinstance(bundle, _Session):  # the convert gate: files not yet in a bundle
            self.bundle, self._s = None, bundle
        else:
            self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=False)
            if backend == "tensorrt":
                from edgesam.errors import BackendError
                from edgesam.runtime.backends import require_tensorrt

                require_tensorrt()  # one clear line where TensorRT is absent
                raise BackendError("backend 'tensorrt' has no video runtime in this version: use mnn, ort or openvino")
            self._s = open_session(self.bundle, backend, precision, threads, runtime_precision, interpolation,
                                   int8_compute, memory_dtype, decoder_runtime_precision)
        self.spec = self._s.spec
        self.image_size = self.spec.image_size
        self.num_maskmem = self.spec.num_maskmem
        if fill_hole_area is None:
            fill_hole_area = self.spec.fill_hole_area
        if int(fill_hole_area) != fill_hole_area or fill_hole_area < 0:
            raise InputError(f"fill_hole_area must be an integer >= 0, not {fill_hole_area!r}")
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = bool(non_overlap_masks)
        self.clear_non_cond_mem_around_input = bool(clear_non_cond_mem_around_input)
        self.add_all_frames_to_correct_as_cond = bool(add_all_frames_to_correct_as_cond)
        self.progress = progress

    # --- state ----------------------------------------------------------------------------
    def init_state(self, video_path, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> dict:
        """A new inference state over ``video_path``: a folder of JPEG frames named by index, a video
        file (OpenCV), or a list of HxWx3 uint8 RGB arrays. Every frame must have the first's size.
        (The offload and async keywords are the official's; frames are read on demand here.)"""
        sources = frame_sources(video_path)
        first = _frame_array(sources[0])
        state = {"images": sources, "num_frames": len(sources), "video_height": int(first.shape[0]),
                 "video_width": int(first.shape[1]), "offload_video_to_cpu": offload_video_to_cpu,
                 "offload_state_to_cpu": offload_state_to_cpu, "device": "cpu", "storage_device": "cpu",
                 "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
                 "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
                 "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {}}
        self._get_features(state, 0)
        return state

    def _get_features(self, state: dict, frame_idx: int) -> dict:
        cached = state["cached_features"].get(frame_idx)
        if cached is not None:
            return cached
        frame = _frame_array(state["images"][frame_idx])
        if frame.shape[:2] != (state["video_height"], state["video_width"]):
            raise InputError(f"frame {frame_idx} is {frame.shape[1]}x{frame.shape[0]}, not the video's "
                             f"{state['video_width']}x{state['video_height']}")
        feats = self._s.features(frame)
        state["cached_features"] = {frame_idx: feats}  # the most recent frame only, as the official
        return feats

    def _obj_id_to_idx(self, state: dict, obj_id) -> int:
        idx = state["obj_id_to_idx"].get(obj_id)
        if idx is not None:
            return idx
        idx = len(state["obj_id_to_idx"])
        state["obj_id_to_idx"][obj_id] = idx
        state["obj_idx_to_id"][idx] = obj_id
        state["obj_ids"] = list(state["obj_id_to_idx"])
        state["point_inputs_per_obj"][idx] = {}
        state["mask_inputs_per_obj"][idx] = {}
        state["output_dict_per_obj"][idx] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        state["temp_output_dict_per_obj"][idx] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        state["frames_tracked_per_obj"][idx] = {}
        return idx

    def _obj_idx_to_id(self, state: dict, obj_idx: int):
        return state["obj_idx_to_id"][obj_idx]

    def _get_obj_num(self, state: dict) -> int:
        return len(state["obj_idx_to_id"])

    def _check_frame(self, state: dict, frame_idx) -> int:
        if isinstance(frame_idx, bool) or int(frame_idx) != frame_idx or not 0 <= frame_idx < state["num_frames"]:
            raise InputError(f"frame_idx {frame_idx!r} is outside the video's frames 0..{state['num_frames'] - 1}")
        return int(frame_idx)

    # --- prompts --------------------------------------------------------------------------
    def add_new_points_or_box(self, inference_state: dict, frame_idx: int, obj_id, points=None, labels=None,
                              clear_old_points: bool = True, normalize_coords: bool = True, box=None):
        """Points (and/or a box, as its two corners with labels 2 and 3 before the points) on a frame
        for one object; returns ``(frame_idx, obj_ids, video_res_masks)`` for every object."""
        state = inference_state
        frame_idx = self._check_frame(state, frame_idx)
        if (points is not None) != (labels is not None):
            raise InputError("points and labels must be provided together")
        if points is None and box is None:
            raise InputError("at least one of points or box must be provided as input")
        pts = np.zeros((1, 0, 2), np.float32) if points is None else np.asarray(points, np.float32)
        lab = np.zeros((1, 0), np.int32) if labels is None else np.asarray(labels, np.int32)
        if pts.ndim == 2:
            pts = pts[None]
        if lab.ndim == 1:
            lab = lab[None]
        if pts.ndim != 3 or pts.shape[0] != 1 or pts.shape[2] != 2 or lab.shape != pts.shape[:2]:
            raise InputError(f"points must be Nx2 with N labels, got points {pts.shape} and labels {lab.shape}")
        if not np.isfinite(pts).all():
            raise InputError("points must be finite numbers")
        if box is not None:
            if not clear_old_points:
                raise InputError("cannot add box without clearing old points, since box prompt must be provided "
                                 "before any point prompt (please use clear_old_points=True instead)")
            b = np.asarray(box, np.float32).reshape(-1)
            if b.size != 4 or not np.isfinite(b).all():
                raise InputError(f"box must be 4 finite numbers x0, y0, x1, y1, got {np.asarray(box).tolist()}")
            pts = np.concatenate([b.reshape(1, 2, 2), pts], axis=1)
            lab = np.concatenate([np.array([[2, 3]], np.int32), lab], axis=1)
        obj_idx = self._obj_id_to_idx(state, obj_id)
        if normalize_coords:
            pts = pts / np.array([state["video_width"], state["video_height"]], np.float32)
        pts = (pts * np.float32(self.image_size)).astype(np.float32)
        per_frame = state["point_inputs_per_obj"][obj_idx]
        old = per_frame.get(frame_idx) if not clear_old_points else None
        if old is not None:
            pts = np.concatenate([old["point_coords"], pts], axis=1)
            lab = np.concatenate([old["point_labels"], lab], axis=1)
        point_inputs = {"point_coords": pts, "point_labels": lab}
        per_frame[frame_idx] = point_inputs
        state["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        return self._add_inputs(state, frame_idx, obj_idx, point_inputs=point_inputs, mask_inputs=None)

    add_new_points = add_new_points_or_box  # the official's deprecated name

    def add_new_mask(self, inference_state: dict, frame_idx: int, obj_id, mask):
        """A mask (HxW, bool or 0/1) on a frame for one object; resized to the model's input as the
        official (bilinear with antialias, then >= 0.5)."""
        state = inference_state
        frame_idx = self._check_frame(state, frame_idx)
        m = np.asarray(mask)
        if m.ndim != 2 or min(m.shape) < 1:
            raise InputError(f"mask must be a 2-D HxW array, got shape {m.shape}")
        m = m.astype(np.float32)[None, None]
        if m.shape[-2:] != (self.image_size, self.image_size):
            m = (resize_aa(m, (self.image_size, self.image_size)) >= 0.5).astype(np.float32)
        obj_idx = self._obj_id_to_idx(state, obj_id)
        state["mask_inputs_per_obj"][obj_idx][frame_idx] = m
        state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        return self._add_inputs(state, frame_idx, obj_idx, point_inputs=None, mask_inputs=m)

    def _add_inputs(self, state: dict, frame_idx: int, obj_idx: int, point_inputs, mask_inputs):
        tracked = state["frames_tracked_per_obj"][obj_idx]
        is_init = frame_idx not in tracked
        reverse = False if is_init else tracked[frame_idx]["reverse"]
        out_dict = state["output_dict_per_obj"][obj_idx]
        temp = state["temp_output_dict_per_obj"][obj_idx]
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        prev_logits = None
        if point_inputs is not None:
            prev = temp[key].get(frame_idx)
            if prev is None:
                prev = out_dict["cond_frame_outputs"].get(frame_idx)
                if prev is None:
                    prev = out_dict["non_cond_frame_outputs"].get(frame_idx)
            if prev is not None and prev["pred_masks"] is not None:
                prev_logits = np.clip(prev["pred_masks"], -32.0, 32.0)
        out = self._run_single_frame_inference(state, out_dict, frame_idx, is_init, point_inputs, mask_inputs,
                                               reverse, run_mem_encoder=False, prev_sam_mask_logits=prev_logits)
        temp[key][frame_idx] = out
        return frame_idx, state["obj_ids"], self._consolidated_video_res(state, frame_idx, is_cond)

    def _run_single_frame_inference(self, state: dict, output_dict: dict, frame_idx: int, is_init_cond_frame: bool,
                                    point_inputs, mask_inputs, reverse: bool, run_mem_encoder: bool,
                                    prev_sam_mask_logits=None) -> dict:
        feats = self._get_features(state, frame_idx)
        out = self._s.step.step(feats, frame_idx, is_init_cond_frame, point_inputs, mask_inputs, output_dict,
                                state["num_frames"], reverse, run_mem_encoder, prev_sam_mask_logits)
        out["pred_masks"] = fill_small_holes(out["pred_masks"], self.fill_hole_area)
        return out

    def _consolidated_video_res(self, state: dict, frame_idx: int, is_cond: bool) -> np.ndarray:
        """Every object's mask on a frame at the video's size (an object without one: NO_OBJ_SCORE)."""
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        h, w = state["video_height"], state["video_width"]
        n = self._get_obj_num(state)
        out = np.full((n, 1, h, w), NO_OBJ_SCORE, np.float32)
        for obj_idx in range(n):
            o = state["temp_output_dict_per_obj"][obj_idx][key].get(frame_idx)
            if o is None:
                o = state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"].get(frame_idx)
            if o is None:
                o = state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"].get(frame_idx)
            if o is None:
                continue
            out[obj_idx:obj_idx + 1] = resize_bilinear(o["pred_masks"], (h, w))
        return self._non_overlap(out)

    def _non_overlap(self, masks: np.ndarray) -> np.ndarray:
        if not self.non_overlap_masks or masks.shape[0] == 1:
            return masks
        keep = np.argmax(masks, axis=0)[None] == np.arange(masks.shape[0])[:, None, None, None]
        return np.where(keep, masks, np.minimum(masks, -10.0)).astype(np.float32)

    # --- tracking -------------------------------------------------------------------------
    def propagate_in_video_preflight(self, inference_state: dict) -> None:
        state = inference_state
        n = self._get_obj_num(state)
        if n == 0:
            raise InputError("No input points or masks are provided for any object; please add inputs first.")
        for obj_idx in range(n):
            out_dict = state["output_dict_per_obj"][obj_idx]
            temp = state["temp_output_dict_per_obj"][obj_idx]
            for is_cond in (False, True):
                key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
                for frame_idx, out in temp[key].items():
                    if out["maskmem_features"] is None:
                        feats = self._get_features(state, frame_idx)
                        out["maskmem_features"] = self._s.step.encode_memory(
                            feats, out["pred_masks"], out["object_score_logits"], from_points=True)
                    out_dict[key][frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(state, frame_idx, obj_idx)
                temp[key].clear()
            if not out_dict["cond_frame_outputs"]:
                raise InputError(f"No input points or masks are provided for object id "
                                 f"{self._obj_idx_to_id(state, obj_idx)}; please add inputs first.")
            for frame_idx in out_dict["cond_frame_outputs"]:
                out_dict["non_cond_frame_outputs"].pop(frame_idx, None)

    def propagate_in_video(self, inference_state: dict, start_frame_idx: Optional[int] = None,
                           max_frame_num_to_track: Optional[int] = None,
                           reverse: bool = False) -> Iterator[tuple[int, list, np.ndarray]]:
        """Track every object through the video; yields ``(frame_idx, obj_ids, video_res_masks)``."""
        state = inference_state
        self.propagate_in_video_preflight(state)
        n, num_frames = self._get_obj_num(state), state["num_frames"]
        if start_frame_idx is None:
            start_frame_idx = min(t for d in state["output_dict_per_obj"].values() for t in d["cond_frame_outputs"])
        start_frame_idx = self._check_frame(state, start_frame_idx)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if int(max_frame_num_to_track) != max_frame_num_to_track or max_frame_num_to_track < 0:
            raise InputError(f"max_frame_num_to_track must be an integer >= 0, not {max_frame_num_to_track!r}")
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            order = range(start_frame_idx, end + 1)
        from tqdm import tqdm

        for frame_idx in tqdm(order, desc="propagate in video", disable=not self.progress):
            masks = []
            for obj_idx in range(n):
                out_dict = state["output_dict_per_obj"][obj_idx]
                if frame_idx in out_dict["cond_frame_outputs"]:
                    pred = out_dict["cond_frame_outputs"][frame_idx]["pred_masks"]
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(state, frame_idx, obj_idx)
                else:
                    out = self._run_single_frame_inference(state, out_dict, frame_idx, False, None, None, reverse,
                                                           run_mem_encoder=True)
                    out_dict["non_cond_frame_outputs"][frame_idx] = out
                    pred = out["pred_masks"]
                state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}
                masks.append(pred)
            low = np.concatenate(masks)
            video = resize_bilinear(low, (state["video_height"], state["video_width"]))
            yield frame_idx, state["obj_ids"], self._non_overlap(video)

    def _clear_obj_non_cond_mem_around_input(self, state: dict, frame_idx: int, obj_idx: int) -> None:
        r = self.spec.memory_temporal_stride_for_eval
        non_cond = state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]
        for t in range(frame_idx - r * self.num_maskmem, frame_idx + r * self.num_maskmem + 1):
            non_cond.pop(t, None)

    # --- editing --------------------------------------------------------------------------
    def clear_all_prompts_in_frame(self, inference_state: dict, frame_idx: int, obj_id, need_output: bool = True):
        state = inference_state
        frame_idx = self._check_frame(state, frame_idx)
        obj_idx = self._obj_id_to_idx(state, obj_id)
        state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        state["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        temp = state["temp_output_dict_per_obj"]
        temp[obj_idx]["cond_frame_outputs"].pop(frame_idx, None)
        temp[obj_idx]["non_cond_frame_outputs"].pop(frame_idx, None)
        out_dict = state["output_dict_per_obj"][obj_idx]
        out = out_dict["cond_frame_outputs"].pop(frame_idx, None)
        if out is not None:  # no longer a conditioning frame: its output stays as a tracked one
            out_dict["non_cond_frame_outputs"][frame_idx] = out
            state["frames_tracked_per_obj"][obj_idx].pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in t["cond_frame_outputs"] for t in temp.values())
        return frame_idx, state["obj_ids"], self._consolidated_video_res(state, frame_idx, is_cond)

    def reset_state(self, inference_state: dict) -> None:
        state = inference_state
        self._reset_tracking_results(state)
        for k in ("obj_id_to_idx", "obj_idx_to_id", "point_inputs_per_obj", "mask_inputs_per_obj",
                  "output_dict_per_obj", "temp_output_dict_per_obj", "frames_tracked_per_obj"):
            state[k].clear()
        state["obj_ids"].clear()

    def _reset_tracking_results(self, state: dict) -> None:
        for k in ("point_inputs_per_obj", "mask_inputs_per_obj", "frames_tracked_per_obj"):
            for v in state[k].values():
                v.clear()
        for k in ("output_dict_per_obj", "temp_output_dict_per_obj"):
            for v in state[k].values():
                v["cond_frame_outputs"].clear()
                v["non_cond_frame_outputs"].clear()

    def remove_object(self, inference_state: dict, obj_id, strict: bool = False, need_output: bool = True):
        state = inference_state
        old_idx = state["obj_id_to_idx"].get(obj_id)
        updated = []
        if old_idx is None:
            if not strict:
                return state["obj_ids"], updated
            raise InputError(f"Cannot remove object id {obj_id} as it doesn't exist. "
                             f"All existing object ids: {state['obj_ids']}.")
        if len(state["obj_id_to_idx"]) == 1:
            self.reset_state(state)
            return state["obj_ids"], updated
        input_frames = set(state["point_inputs_per_obj"][old_idx]) | set(state["mask_inputs_per_obj"][old_idx])
        for frame_idx in input_frames:
            self.clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=False)
        old_ids = state["obj_ids"]
        remain = [i for i in range(len(old_ids)) if i != old_idx]
        new_ids = [old_ids[i] for i in remain]
        old_to_new = {old: new for new, old in enumerate(remain)}
        state["obj_id_to_idx"] = OrderedDict((oid, i) for i, oid in enumerate(new_ids))
        state["obj_idx_to_id"] = OrderedDict((i, oid) for i, oid in enumerate(new_ids))
        state["obj_ids"] = new_ids
        for k in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "temp_output_dict_per_obj",
                  "frames_tracked_per_obj"):
            old = dict(state[k])
            state[k].clear()
            state[k].update({old_to_new[i]: v for i, v in old.items() if i in old_to_new})
        if need_output:
            temp = state["temp_output_dict_per_obj"]
            for frame_idx in sorted(input_frames):
                is_cond = any(frame_idx in t["cond_frame_outputs"] for t in temp.values())
                updated.append((frame_idx, self._consolidated_video_res(state, frame_idx, is_cond)))
        return state["obj_ids"], updated


class SAM2VideoStream:
    """Tracking for a live camera: prompt objects on the first frame, then ``track(frame)`` each new
    frame and get every object's mask back. Only what the bank can still attend to is kept (the
    last ``num_maskmem - 1`` frames' memories, the last ``max_obj_ptrs_in_encoder - 1`` pointers and
    the prompted frame), so memory stays bounded however long the stream runs. On a clip of at
    least ``max_obj_ptrs_in_encoder`` frames the masks are ``SAM2VideoPredictor``'s.

        stream = SAM2VideoStream("bundle/")
        stream.start(first_frame, obj_id=1, points=[[320, 240]], labels=[1])
        for frame in camera:
            obj_ids, masks = stream.track(frame)      # masks: objects x 1 x H x W logits
    """

    def __init__(self, bundle: str | os.PathLike | Bundle, backend: str = RUN_DEFAULTS.backend,
                 precision: str = RUN_DEFAULTS.precision, threads: Optional[int] = RUN_DEFAULTS.threads,
                 runtime_precision: str = RUN_DEFAULTS.runtime_precision, *, fill_hole_area: Optional[int] = None,
                 memory_dtype: str = "float32",
                 decoder_runtime_precision: Optional[str] = RUN_DEFAULTS.decoder_runtime_precision) -> None:
        self.predictor = SAM2VideoPredictor(bundle, backend, precision, threads, runtime_precision,
                                            fill_hole_area=fill_hole_area, memory_dtype=memory_dtype, progress=False,
                                            decoder_runtime_precision=decoder_runtime_precision)
        self.state: Optional[dict] = None
        self.frame_idx = -1

    def start(self, frame: np.ndarray, obj_id=1, points=None, labels=None, box=None, mask=None) -> np.ndarray:
        """Prompt one object on the first frame (call again for more objects, before ``track``);
        returns every prompted object's mask on it (objects x 1 x H x W logits)."""
        p = self.predictor
        if self.state is None or self.frame_idx > 0:  # a new stream
            self.state = p.init_state([frame])
            self.frame_idx = 0
        elif frame.shape[:2] != (self.state["video_height"], self.state["video_width"]):
            raise InputError("every prompt of a stream goes on its first frame")
        if mask is not None:
            _, _, masks = p.add_new_mask(self.state, 0, obj_id, mask)
        else:
            _, _, masks = p.add_new_points_or_box(self.state, 0, obj_id, points, labels, box=box)
        return masks

    def track(self, frame: np.ndarray) -> tuple[list, np.ndarray]:
        """The next frame: every object's mask (objects x 1 x H x W logits)."""
        p, state = self.predictor, self.state
        if state is None:
            raise InputError("start() the stream with a prompt on its first frame before track()")
        if self.frame_idx == 0:
            p.propagate_in_video_preflight(state)
            state["num_frames"] = None  # unbounded: the pointer window is the bank's
        self.frame_idx += 1
        t = self.frame_idx
        state["images"] = _Window(t, frame)
        masks = []
        for obj_idx in range(p._get_obj_num(state)):
            out_dict = state["output_dict_per_obj"][obj_idx]
            out = p._run_single_frame_inference(state, out_dict, t, False, None, None, False, run_mem_encoder=True)
            out_dict["non_cond_frame_outputs"][t] = out
            self._forget(out_dict, t)
            masks.append(out["pred_masks"])
        video = resize_bilinear(np.concatenate(masks), (state["video_height"], state["video_width"]))
        return list(state["obj_ids"]), p._non_overlap(video)

    def _forget(self, out_dict: dict, t: int) -> None:
        """Drop what no later frame attends to: memories older than the bank's recent slots, pointers
        older than its pointer window."""
        spec = self.predictor.spec
        stride = spec.memory_temporal_stride_for_eval
        non_cond = out_dict["non_cond_frame_outputs"]
        for f in [f for f in non_cond if f <= t - spec.max_obj_ptrs_in_encoder + 1 and f <= t - spec.num_maskmem * stride]:
            del non_cond[f]
        for f, out in non_cond.items():
            if f <= t - spec.num_maskmem * stride:
                out["maskmem_features"] = None


class _Window:
    """A stream's frames as ``state["images"]``: only the newest one is held."""

    def __init__(self, index: int, frame: np.ndarray) -> None:
        self.index, self.frame = index, frame

    def __getitem__(self, i: int) -> np.ndarray:
        if i != self.index:
            raise InputError(f"frame {i} of the stream is no longer held")
        return self.frame

    def __len__(self) -> int:
        return self.index + 1
