"""``SamPredictor`` without torch: the official API on a bundle's encoder and decoder."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from edgesam.bundle import Bundle, load_bundle
from edgesam.errors import BackendError, BundleError, InputError
from edgesam.manifest import DECODER_PROMPT_INPUTS, DECODER_RESULTS, FAMILIES, DecoderSpec
from edgesam.runtime import prompts
from edgesam.runtime.backends import (BACKEND_TABLE, Backend, ModelRequest, mnn_memory_mode, require_tensorrt,
                                      resolve_threads)
from edgesam.runtime.options import RUN_DEFAULTS, RunOptions
from edgesam.runtime.postprocess import fill_holes_and_sprinkles, mask_geometry, postprocess_masks
from edgesam.runtime.preprocess import check_image_array, preprocess



def open_backend(bundle: Bundle, role: str, backend: str, precision: str, threads: int | None = None,
                 runtime_precision: str = "high", int8_compute: str = "auto") -> Backend:
    """The ``role`` model of ``bundle`` on ``backend``, found by role/format/precision, with the
    tensor names of its manifest record (checked against the manifest's hash as it is opened).

    A full decoder is opened as its lowres subgraph (no ``orig_im_size``, no upscaled ``masks``):
    the runtime upscales the low-res logits itself, exactly (postprocess.py).
    ``int8_compute`` (MNN, int8 files): "on" runs int8 arithmetic (MNN memory mode low), "off"
    expands the weights to float32 at load, "auto" picks int8 arithmetic where MNN has int8
    dot-product kernels (ARM sdot/i8mm) and float32 elsewhere (``backends.int8_compute_default``)."""
    if backend == "tensorrt":
        require_tensorrt()  # one clear line where TensorRT is absent (everywhere but NVIDIA boards)
        raise BackendError("backend 'tensorrt' has no runtime in this version: build engines with the trtexec "
                           "commands in the bundle's manifest (key 'tensorrt') and time them with trtexec")
    kind = BACKEND_TABLE.get(backend)
    if kind is None:
        raise InputError(f"unknown backend {backend!r}; choose {', '.join(BACKEND_TABLE)}")
    listed = bundle.entry(role, kind.format, precision)
    if listed.record.get("single_mask"):  # refused before its hash is checked
        raise BackendError(f"{bundle.root / listed.path} returns one mask per prompt (--single-mask, the official "
                           "notebook's export, for other tools); edgesam runs this bundle on mnn or openvino")
    path, entry = bundle.open(role, kind.format, precision)
    spec = bundle.spec
    if role == "encoder":
        inputs, outputs = [spec.encoder.image_input], list(spec.encoder.outputs)
    else:
        prompt = [spec.decoder.inputs[k] for k in DECODER_PROMPT_INPUTS]
        inputs = [n for n in entry.inputs if n in prompt or n not in spec.decoder.inputs.values()]
        outputs = [spec.decoder.outputs[k] for k in DECODER_RESULTS]
    missing = [n for n in outputs if n not in entry.outputs]
    if missing:
        raise BundleError(f"{bundle.root / entry.path}: the manifest lists no output {missing[0]!r} for this "
                          f"{role} (it lists {', '.join(entry.outputs)})")
    memory = mnn_memory_mode(precision, int8_compute) if backend == "mnn" else "normal"
    return kind.open(ModelRequest(path=path, inputs=inputs, outputs=outputs, threads=threads,
                                  runtime_precision=runtime_precision, memory=memory))


class SamPredictor:
    """Drop-in for ``segment_anything.SamPredictor`` on an edgesam bundle.

    Arguments:
      bundle: path to a bundle folder (or a loaded ``Bundle``).
      backend: "mnn" (default), "ort" (ONNX Runtime, fp32 only) or "openvino" (IR fp32 or fp16).
      precision: which model files to use: "fp32", "fp16" or "int8" (MNN).
      threads: CPU threads (default: every core this process may use).
      runtime_precision: the encoder's arithmetic. MNN: "high" (fp32), "normal", "low" (fp16 on
        ARMv8.2+); OpenVINO: "high" pins f32, "low" lets the CPU plugin choose (bf16 on AMX CPUs).
      decoder_runtime_precision: the decoder's arithmetic, if it should differ from the encoder's
        (default: the same). "high" keeps the decoder in fp32 while the encoder, where nearly all
        the time goes, runs in fp16; the fp16 decoder costs about 0.01 of mask IoU (the ARM lane).
      interpolation: preprocessing downscale, "pyramid" (closest to the official PIL resize) or "linear".
      int8_compute: with ``precision="int8"`` on MNN: "auto" (int8 arithmetic where MNN has ARM
        sdot/i8mm kernels, float32 arithmetic on int8-stored weights elsewhere), "on" or "off".
    """

    # SAM 2's clean-up of the low-res logits (SAM2ImagePredictor's keywords; off for SAM, as there)
    max_hole_area = 0.0
    max_sprinkle_area = 0.0

    def __init__(self, bundle: str | os.PathLike | Bundle, backend: str = RUN_DEFAULTS.backend,
                 precision: str = RUN_DEFAULTS.precision, threads: Optional[int] = RUN_DEFAULTS.threads,
                 runtime_precision: str = RUN_DEFAULTS.runtime_precision,
                 interpolation: str = RUN_DEFAULTS.interpolation,
                 decoder_runtime_precision: Optional[str] = RUN_DEFAULTS.decoder_runtime_precision,
                 int8_compute: str = RUN_DEFAULTS.int8_compute) -> None:
        # The settings are checked by RunOptions, the one set of rules every entry point uses, and kept.
        self.options = RunOptions(backend=backend, precision=precision, threads=threads,
                                  runtime_precision=runtime_precision, decoder_runtime_precision=decoder_runtime_precision,
                                  interpolation=interpolation, int8_compute=int8_compute)
        # Files are hashed as they are opened (Bundle.open): only the two models this predictor loads.
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=False)
        spec = self.bundle.spec
        if spec.family not in FAMILIES:
            raise BundleError(f"{self.bundle.root}: model family {spec.family!r} is not served by SamPredictor")
        self.preprocess_spec = spec.preprocess
        self.decoder_spec = spec.decoder
        # the official predictor's ``transform`` (ResizeLongestSide(img_size)), here from the manifest
        self.transform = prompts.Transform.of(spec.preprocess, spec.decoder)
        self.mask_threshold = spec.decoder.mask_threshold  # the official predictor reads model.mask_threshold
        self.backend_name, self.precision = backend, precision
        threads = resolve_threads(threads)
        self.threads = threads
        self.encoder = open_backend(self.bundle, "encoder", backend, precision, threads, runtime_precision,
                                    int8_compute=int8_compute)
        self.runtime_precision = {"encoder": runtime_precision, "decoder": decoder_runtime_precision or runtime_precision}
        self.decoder = open_backend(self.bundle, "decoder", backend, precision, threads,
                                    self.runtime_precision["decoder"], int8_compute=int8_compute)
        self.interpolation = interpolation
        self.reset_image()

    # --- image ----------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image (RGB or BGR, as segment-anything)."""
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
        check_image_array(image)
        x, input_size = preprocess(image, self.preprocess_spec, bgr=image_format == "BGR",
                                   interpolation=self.interpolation)
        self._embed(x, input_size, image.shape[:2])

    def set_image_file(self, path: str | os.PathLike) -> None:
        """Decode with MNN.cv (JPEG/PNG/BMP; grey and RGBA become RGB) and embed."""
        from edgesam.runtime.imageio import read_image_var

        var = read_image_var(path)
        h, w = var.shape[:2]
        x, input_size = preprocess(var, self.preprocess_spec, bgr=True, interpolation=self.interpolation)
        self._embed(x, input_size, (h, w))

    def _embed(self, x: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int]) -> None:
        self.reset_image()
        # Every encoder output goes to the decoder input of the same name (one tensor for SAM).
        self._encoded = self.encoder.run({self.bundle.spec.encoder.image_input: x})
        self.features = self._encoded[self.bundle.spec.encoder.embedding_output]
        self.input_size = tuple(int(v) for v in input_size)
        self.original_size = tuple(int(v) for v in original_size)
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """The 1x256x64x64 float32 embedding of the current image."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self._encoded = {}
        self.original_size = None
        self.input_size = None

    # --- prompts --------------------------------------------------------------------------
    def predict(self, point_coords: Optional[np.ndarray] = None, point_labels: Optional[np.ndarray] = None,
                box: Optional[np.ndarray] = None, mask_input: Optional[np.ndarray] = None,
                multimask_output: bool = True, return_logits: bool = False):
        """One prompt -> (masks CxHxW bool, scores C float32, low_res_logits Cx256x256 float32).

        point_coords: Nx2 (X, Y) original pixels; point_labels: N, 1 foreground / 0 background;
        box: length-4 XYXY; mask_input: 1x256x256 logits from a previous call.
        C is 3 with ``multimask_output`` and 1 without. Points outside the image are
        passed on as the official predictor does (the model extrapolates its encoding).
        """
        coords, labels = prompts.validate_points(point_coords, point_labels)
        if coords is not None and coords.shape[0] != 1:
            raise InputError("predict takes Nx2 point_coords; use predict_batch for several prompts")
        boxes = prompts.validate_boxes(box)
        if boxes is not None and boxes.shape[0] != 1:
            raise InputError("predict takes one box (length 4); use predict_batch for several boxes")
        masks, scores, low = self.predict_batch(coords, labels, boxes, mask_input, multimask_output, return_logits)
        return masks[0], scores[0], low[0]

    def predict_batch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False):
        """Batched prompts in one decoder call, like ``predict_torch`` (but original-pixel inputs).

        point_coords BxNx2, point_labels BxN, boxes Bx4 XYXY, mask_input Bx1x256x256 or 1x256x256.
        Returns masks BxCxHxW, scores BxC, low_res_logits BxCx256x256.
        """
        low, scores = self.decode(point_coords, point_labels, boxes, mask_input, multimask_output)
        clean = fill_holes_and_sprinkles(low, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area)
        return self.upscale(clean, return_logits), scores, self.clamp_low_res(low)

    def clamp_low_res(self, low_res: np.ndarray) -> np.ndarray:
        """Low-res logits as the family's predictor returns them (SAM 2: clamped to +-32; SAM: as they are)."""
        clamp = self.decoder_spec.low_res_clamp
        return low_res if clamp is None else np.clip(low_res, -clamp, clamp)

    def mask_geometry(self) -> tuple[tuple[int, int], int]:
        """(input_size, frame) for ``postprocess.upscale_logits`` and friends (``postprocess.mask_geometry``)."""
        p = self.preprocess_spec
        return mask_geometry(p.resize, p.image_size, self.input_size, self.decoder_spec.lowres_size)

    def upscale(self, low_res: np.ndarray, return_logits: bool = False) -> np.ndarray:
        """Low-res logits (...x256x256) -> masks at the original size (bool, or float32 logits), as the
        bundle's family does it (SAM: through the padded 1024 frame; SAM 2: straight bilinear)."""
        size, frame = self.mask_geometry()
        return postprocess_masks(low_res, size, self.original_size, return_logits, self.mask_threshold, frame=frame)

    def decode(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
               multimask_output: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Run the decoder only: (low_res_logits BxCx256x256, scores BxC), no upscaling."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        coords, labels = prompts.validate_points(point_coords, point_labels)
        boxes = prompts.validate_boxes(boxes)
        batch = coords.shape[0] if coords is not None else (boxes.shape[0] if boxes is not None else 1)
        d = self.decoder_spec
        mask = self.transform.validate_mask_input(mask_input, batch)
        prompt = self.transform.decoder_feeds(coords, labels, boxes, mask, self.original_size)
        feeds = {**self._encoded, **{d.inputs[k]: v for k, v in prompt.items()}}
        if "orig_im_size" in d.inputs:  # a full decoder: ONNX Runtime wants every graph input fed
            feeds[d.inputs["orig_im_size"]] = np.array(self.input_size, d.orig_im_size_dtype)
        out = self.decoder.run(feeds)
        return select_tokens(out[d.outputs["low_res_logits"]], out[d.outputs["scores"]], multimask_output, d)

    @property
    def device(self) -> str:
        return "cpu"


def select_tokens(low_res: np.ndarray, scores: np.ndarray, multimask_output: bool,
                  spec: DecoderSpec) -> tuple[np.ndarray, np.ndarray]:
    """Every mask token's logits (BxTx256x256) and scores (BxT) -> the ones the official decoder
    returns, by the manifest's rule: the multimask tokens, or for single-mask output the single-mask
    token ("token", SAM), or that token unless its stability is below the threshold, when the best
    multimask token by predicted IoU is taken instead ("stability", SAM 2's
    ``_dynamic_multimask_via_stability``; stability = area above +delta over area above -delta)."""
    if multimask_output:
        tokens = list(spec.multimask_tokens)
        return low_res[:, tokens], scores[:, tokens]
    single = spec.single_mask_token
    low, score = low_res[:, single:single + 1], scores[:, single:single + 1]
    if spec.single_mask == "token":
        return low, score
    flat = low_res[:, single].reshape(low_res.shape[0], -1)
    inner = np.count_nonzero(flat > spec.stability_delta, axis=1).astype(np.float32)
    outer = np.count_nonzero(flat > -spec.stability_delta, axis=1).astype(np.float32)
    stability = np.where(outer > 0, inner / np.maximum(outer, 1), np.float32(1.0))
    multi = np.asarray(spec.multimask_tokens)
    best = multi[np.argmax(scores[:, multi], axis=1)]
    rows = np.arange(low_res.shape[0])
    stable = stability >= spec.stability_thresh
    low = np.where(stable[:, None, None, None], low, low_res[rows, best][:, None])
    score = np.where(stable[:, None], score, scores[rows, best][:, None])
    return low, score
