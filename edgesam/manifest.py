"""The bundle manifest, typed and validated: what the runtime reads to run a bundle.

``parse_manifest(data, where)`` checks every key the runtime relies on and returns a frozen
``Manifest``; a missing or wrong-typed key is a ``BundleError`` naming it (``files[3].bytes``).
The runtime takes preprocessing, tensor names, mask threshold and token rules from here and
hard-codes none of them. The format, key by key: docs/bundle-format.md.

Versions:
- 1: no ``family``; ``preprocess`` without ``resize``; decoder token keys and the files'
  ``inputs``/``outputs`` optional. Read as what they meant then: SAM's longest-side resize,
  SAM's token rule (token 0 alone, or tokens 1..3), the fixed tensor names of ``edgesam.specs``.
- 2: ``family``, ``preprocess.resize`` and ``decoder.lowres_size`` and the token keys are
  required, and every model file lists its ``inputs`` and ``outputs``. Keys added since, optional,
  whose absence means what SAM does: ``encoder.outputs`` (every encoder output, fed to the decoder
  input of the same name; default: the embedding alone), ``decoder.prompt_layout`` ("sam": points,
  box corners, and a padding point from the caller when there is no box; "sam2": box corners
  first, then points, and the graph adds the padding point), ``decoder.single_mask`` ("token":
  ``single_mask_token`` alone; "stability": SAM 2's fallback to the best multimask token when the
  single-mask token's stability is below ``stability_thresh``, at offset ``stability_delta``)
  and ``decoder.low_res_clamp`` (low-res logits returned clamped to +-it, as SAM 2 does).
- 3: the ``full`` decoder follows the official ``SamOnnxModel`` contract: ``orig_im_size`` is
  float32 (it was int32) and the outputs come in the order ``masks, iou_predictions,
  low_res_masks``. The keys are those of version 2. A reader of version 2 fed a version 3 full
  decoder int32 sizes and would fail, hence the new number; version 1 and 2 bundles still load,
  their full decoders fed int32 (``DecoderSpec.orig_im_size_dtype``).

Optional at every version: ``amg``, the automatic mask generator's defaults that the family's
official generator sets (``AMG_DEFAULTS``). A bundle written before the key reads as its family's
official generator (``LEGACY_AMG``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

from edgesam.errors import BundleError

FORMAT = "edgesam-bundle"
VERSION = 3
FAMILIES = ("sam", "mobilesam", "sam2")
# "longest_side": SAM's ResizeLongestSide, padded bottom-right; "square": SAM 2's resize to
# image_size x image_size (aspect not kept, no padding; masks upscale straight from low-res).
RESIZES = ("longest_side", "square")
PADS = {"longest_side": "bottom-right", "square": "none"}
PROMPT_LAYOUTS = ("sam", "sam2")
SINGLE_MASK_RULES = ("token", "stability")
VARIANTS = ("lowres", "full")
# SAM 2's video graphs (convert/sam2_video.py, runtime/video_memory.py): roles of model files too
VIDEO_GRAPHS = ("memory_attention", "memory_encoder", "track_decoder")
MODEL_ROLES = ("encoder", "decoder", *VIDEO_GRAPHS)
MODEL_FORMATS = ("onnx", "mnn", "openvino")  # formats a backend opens; the others are companions
# Companion files that a model file needs beside it (verified when the model file is opened).
COMPANIONS = {"onnx": ("onnx_external_data",), "mnn": ("mnn_external_weight",), "openvino": ("openvino_weights",)}
PRECISIONS = ("fp32", "fp16", "int8")
# How the decoder graph is exported: "folded" (the cross-attention projections of the image tokens
# folded onto the prompt tokens) or "reference" (the official computation step by step).
DECODER_GRAPHS = ("folded", "reference")
# SAM 2's single-mask fallback: the stability offset and the stability below which the best
# multimask token replaces the single-mask token (the official mask decoder's dynamic_multimask_*).
STABILITY_DELTA, STABILITY_THRESH = 0.05, 0.98
# The automatic mask generator's defaults where the families' official generators differ:
# segment-anything's SamAutomaticMaskGenerator and sam2's SAM2AutomaticMaskGenerator. A bundle
# records its family's in its "amg" section; the runtime's generator reads them from there.
# "predictor_fills_holes": the generator sets its predictor's max_hole_area and max_sprinkle_area
# to min_mask_region_area (SAM 2's does; SAM's removes small regions itself, after NMS).
AMG_DEFAULTS = {"sam": {"pred_iou_thresh": 0.88, "predictor_fills_holes": False},
                "sam2": {"pred_iou_thresh": 0.8, "mask_threshold": 0.0, "predictor_fills_holes": True}}
LEGACY_AMG = {"sam": "sam", "mobilesam": "sam", "sam2": "sam2"}  # bundles without "amg": the family's generator


@dataclass(frozen=True)
class Preprocess:
    """Image -> encoder input: resize mode, square side, mean/std (0-255 units), order, padding."""
    resize: str
    image_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    channel_order: str
    pad: str


@dataclass(frozen=True)
class EncoderSpec:
    """Tensor names: the image input, the output the predictor returns as "the embedding", and every
    output, each fed to the decoder input of the same name (SAM: the embedding alone)."""
    image_input: str
    embedding_output: str
    outputs: tuple[str, ...] = ()


# The decoder's tensors by meaning -> by name, as the exported graphs name them.
DECODER_PROMPT_INPUTS = ("point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_RESULTS = ("scores", "low_res_logits")
# The ONNX contracts by name: each ONNX file's metadata_props and its manifest
# section say which one it follows, so a file found alone says which code can load it.
CONTRACTS = {
    "sam-encoder": "SAM image encoder: image [1,3,1024,1024] (normalised, padded bottom-right) -> image_embeddings",
    "sam-onnx-model": "segment-anything's SamOnnxModel decoder (the official ONNX example, samexporter): "
                      "masks, iou_predictions, low_res_masks",
    "sam-onnx-model-single-mask": "segment-anything's SamOnnxModel(return_single_mask=True) decoder (the "
                                  "official notebook's export): one mask per prompt",
    "edgesam-lowres": "edgesam's fastest SAM decoder: iou_predictions, low_res_masks (the caller upscales)",
    "sam2-encoder": "SAM 2 image encoder: image [1,3,1024,1024] -> high_res_feats_0, high_res_feats_1, image_embed",
    "sam2-decoder": "SAM 2 decoder (samexporter's SAM 2 classes): masks (every token, 256x256), iou_predictions",
    "ort-sam2-decoder": "ONNX Runtime's SAM 2 image decoder (its SAM2ImageOnnxPredictor, single mask): masks at "
                        "original_image_size (bool), iou_predictions, low_res_masks",
    "ort-sam2-decoder-multi": "ONNX Runtime's SAM 2 image decoder, multimask (3 masks)",
}
# SAM's tensor names (edgesam.specs holds them with their shapes), by meaning.
SAM_TENSORS = {"encoder": {"image_input": "image", "embedding_output": "image_embeddings",
                          "outputs": ["image_embeddings"]},
              "inputs": {k: k for k in DECODER_PROMPT_INPUTS},
              "outputs": {"scores": "iou_predictions", "low_res_logits": "low_res_masks"},
              "full_inputs": {"orig_im_size": "orig_im_size"}}


@dataclass(frozen=True)
class DecoderSpec:
    """What the decoder takes and returns, and how the runtime picks masks from it."""
    variant: str  # "lowres" (low-res logits + scores) or "full" (also upscaled masks)
    inputs: dict  # meaning (DECODER_PROMPT_INPUTS, and "orig_im_size" for full) -> tensor name
    outputs: dict  # meaning (DECODER_RESULTS) -> tensor name
    lowres_size: int  # low-res logits are lowres_size x lowres_size
    mask_tokens: int  # masks per prompt the graph returns
    single_mask_token: int  # the token taken without multimask output
    multimask_tokens: tuple[int, ...]  # the tokens taken with multimask output
    mask_threshold: float  # logits above it are the mask
    prompt_layout: str = "sam"  # PROMPT_LAYOUTS (module docstring)
    single_mask: str = "token"  # SINGLE_MASK_RULES
    stability_delta: float = STABILITY_DELTA  # the "stability" rule's logit offset
    stability_thresh: float = STABILITY_THRESH  # ... and the stability below which it falls back
    low_res_clamp: Optional[float] = None  # low-res logits returned clamped to +-this
    orig_im_size_dtype: str = "float32"  # a full decoder's orig_im_size: float32 (v3), int32 (v1, v2)


@dataclass(frozen=True)
class FileEntry:
    role: str
    format: str
    precision: str
    path: str
    sha256: str
    bytes: int
    inputs: dict  # name -> shape (ints, or strings for dynamic axes)
    outputs: dict
    record: dict  # the whole manifest record, for keys only some tools read


@dataclass(frozen=True)
class Manifest:
    version: int
    family: str
    model: str
    untrained: bool
    preprocess: Preprocess
    encoder: EncoderSpec
    decoder: DecoderSpec
    files: tuple[FileEntry, ...]
    amg: dict = None  # the generator's family defaults (AMG_DEFAULTS); parse_manifest always sets it
    video: Optional["VideoSpec"] = None  # SAM 2 bundles with video graphs: the memory bank and tracking rules


@dataclass(frozen=True)
class VideoSpec:
    """A bundle's ``video`` section: the memory bank's shape and the tracking rules, read from the
    model's config at conversion (names as ``SAM2Base``'s attributes)."""
    num_maskmem: int
    max_obj_ptrs_in_encoder: int
    memory_temporal_stride_for_eval: int
    max_cond_frames_in_attn: int
    hidden_dim: int
    mem_dim: int
    image_size: int
    add_tpos_enc_to_obj_ptrs: bool
    use_signed_tpos_enc_to_obj_ptrs: bool
    only_obj_ptrs_in_the_past_for_eval: bool
    binarize_mask_from_pts_for_mem_enc: bool
    multimask_output_in_sam: bool
    multimask_output_for_tracking: bool
    multimask_min_pt_num: int
    multimask_max_pt_num: int
    use_multimask_token_for_obj_ptr: bool
    pred_obj_scores: bool
    soft_no_obj_ptr: bool
    fixed_no_obj_ptr: bool
    use_mask_input_as_output_without_sam: bool
    fill_hole_area: int

    graphs: tuple[str, ...] = VIDEO_GRAPHS  # the roles of its three graph files
    constants: str = "video_constants.npz"  # the learned vectors the bookkeeping mixes in

    @classmethod
    def parse(cls, data: Any, where: str) -> "VideoSpec":
        if not isinstance(data, dict):
            raise BundleError(f"{where}: video must be an object")
        values = {}
        for f in fields(cls):
            if f.name in ("graphs", "constants"):
                continue
            if f.name not in data:
                raise BundleError(f"{where}: video.{f.name} is missing")
            v = data[f.name]
            if f.type == "bool" and not isinstance(v, bool) or \
                    f.type == "int" and (isinstance(v, bool) or not isinstance(v, int)):
                raise BundleError(f"{where}: video.{f.name} must be {'a boolean' if f.type == 'bool' else 'an integer'}")
            values[f.name] = v
        graphs = data.get("graphs", list(VIDEO_GRAPHS))
        if sorted(graphs) != sorted(VIDEO_GRAPHS):
            raise BundleError(f"{where}: video.graphs must be {', '.join(VIDEO_GRAPHS)}")
        constants = data.get("constants", "video_constants.npz")
        if not isinstance(constants, str):
            raise BundleError(f"{where}: video.constants must be a file name")
        return cls(**values, graphs=tuple(VIDEO_GRAPHS), constants=constants)




class _Reader:
    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, what: str) -> BundleError:
        return BundleError(f"{self.where}: key {key!r} {what}")

    def get(self, d: dict, key: str, kind: type | tuple, path: str, default: Any = ...) -> Any:
        full = f"{path}.{key}" if path else key
        if key not in d:
            if default is ...:
                raise self.fail(full, "is missing")
            return default
        v = d[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python: a manifest saying "bytes": true is still wrong
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(full, f"must be {names}, not {type(v).__name__} ({str(v)[:40]})")
        return v

    def choice(self, d: dict, key: str, options: tuple, path: str, default: Any = ...) -> str:
        v = self.get(d, key, str, path, default)
        if v not in options:
            raise self.fail(f"{path}.{key}" if path else key, f"is {v!r}; this edgesam knows {', '.join(options)}")
        return v

    def numbers(self, d: dict, key: str, n: int, path: str) -> tuple[float, ...]:
        v = self.get(d, key, list, path)
        if len(v) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise self.fail(f"{path}.{key}", f"must be a list of {n} numbers, not {str(v)[:60]}")
        return tuple(float(x) for x in v)

    def names(self, d: dict, key: str, needed: tuple, path: str, default: Any = ...) -> dict:
        v = self.get(d, key, dict, path, default)
        for k in needed:
            if not isinstance(v.get(k), str):
                raise self.fail(f"{path}.{key}.{k}", "is missing" if k not in v else "must be a tensor name (str)")
        return {k: v[k] for k in needed}

    def shapes(self, d: dict, key: str, path: str) -> dict:
        v = self.get(d, key, dict, path)
        for name, shape in v.items():
            if not isinstance(shape, list) or not all(isinstance(x, (int, str)) and not isinstance(x, bool)
                                                      for x in shape):
                raise self.fail(f"{path}.{key}.{name}", f"must be a shape (list of ints or axis names), not {shape!r}")
        return v


def _v1_io(role: str) -> tuple[dict, dict]:
    from edgesam.specs import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS

    return ((dict(ENCODER_INPUTS), dict(ENCODER_OUTPUTS)) if role == "encoder"
            else (dict(DECODER_INPUTS), dict(DECODER_OUTPUTS)))


def parse_manifest(data: Any, where: str) -> Manifest:
    """Validate a manifest's JSON value; ``where`` (its path) starts every error message."""
    r = _Reader(where)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{where}: not an edgesam bundle manifest")
    version = r.get(data, "version", int, "")
    if version > VERSION:
        raise BundleError(f"{where}: bundle format version {version} is newer than this edgesam reads "
                          f"({VERSION}); upgrade edgesam")
    if version < 1:
        raise r.fail("version", f"is {version}; versions start at 1")
    v1 = version == 1
    model = r.get(data, "model", str, "")
    if v1:
        from edgesam.specs import MODELS

        if model not in MODELS:
            raise r.fail("model", f"is {model!r}, which this edgesam does not know")
        family = MODELS[model].family
    else:
        family = r.choice(data, "family", FAMILIES, "")
    pre, enc, dec = parse_sections(data, where, v1)
    files = r.get(data, "files", list, "")
    entries = []
    for i, f in enumerate(files):
        at = f"files[{i}]"
        if not isinstance(f, dict):
            raise r.fail(at, "must be an object")
        role = r.get(f, "role", str, at)
        fmt = r.get(f, "format", str, at)
        model_file = role in MODEL_ROLES and fmt in MODEL_FORMATS
        if model_file:
            ins, outs = (r.shapes(f, "inputs", at), r.shapes(f, "outputs", at)) if not v1 or "inputs" in f \
                else _v1_io(role)
        else:
            ins, outs = {}, {}
        size = r.get(f, "bytes", int, at)
        if size < 0:
            raise r.fail(f"{at}.bytes", f"must be >= 0, not {size}")
        entries.append(FileEntry(role=role, format=fmt, precision=r.get(f, "precision", str, at),
                                 path=r.get(f, "path", str, at), sha256=r.get(f, "sha256", str, at),
                                 bytes=size, inputs=ins, outputs=outs, record=f))
    seen: dict[tuple, str] = {}
    for e in entries:
        key = (e.role, e.format, e.precision)
        if key in seen and e.format in MODEL_FORMATS:
            raise BundleError(f"{where}: two {e.format} {e.role} files at precision {e.precision} "
                              f"({seen[key]}, {e.path}); a bundle holds one of each")
        seen[key] = e.path
    untrained = data.get("untrained")
    if untrained is None:
        untrained = "random_init_seed" in (data.get("checkpoint") or {})
    amg = r.get(data, "amg", dict, "", AMG_DEFAULTS[LEGACY_AMG[family]])
    for k, v in amg.items():
        if not isinstance(v, (int, float)):
            raise r.fail(f"amg.{k}", f"must be a number or a boolean, not {str(v)[:40]}")
    video = VideoSpec.parse(data["video"], where) if data.get("video") is not None else None
    if video is not None and family != "sam2":
        raise r.fail("video", f"is for SAM 2 bundles, not {family}")
    return Manifest(version=version, family=family, model=model, untrained=bool(untrained),
                    preprocess=pre, encoder=enc, decoder=dec, files=tuple(entries), amg=dict(amg), video=video)


def parse_sections(data: dict, where: str, v1: bool = False) -> tuple[Preprocess, EncoderSpec, DecoderSpec]:
    """The "preprocess", "encoder" and "decoder" sections of a manifest, validated and typed."""
    r = _Reader(where)
    p = r.get(data, "preprocess", dict, "")
    pre = Preprocess(resize=r.choice(p, "resize", RESIZES, "preprocess", "longest_side" if v1 else ...),
                     image_size=r.get(p, "image_size", int, "preprocess"),
                     pixel_mean=r.numbers(p, "pixel_mean", 3, "preprocess"),
                     pixel_std=r.numbers(p, "pixel_std", 3, "preprocess"),
                     channel_order=r.choice(p, "channel_order", ("RGB", "BGR"), "preprocess"),
                     pad=r.choice(p, "pad", tuple(PADS.values()), "preprocess"))
    if pre.image_size < 1 or min(pre.pixel_std) <= 0:
        raise r.fail("preprocess", "needs image_size >= 1 and positive pixel_std")
    if pre.pad != PADS[pre.resize]:
        raise r.fail("preprocess.pad", f"is {pre.pad!r}; resize {pre.resize!r} pads {PADS[pre.resize]!r}")
    d = r.get(data, "decoder", dict, "")
    old = {} if not v1 else {"lowres_size": 256, "mask_tokens": 4, "single_mask_token": 0,
                             "multimask_tokens": [1, 2, 3], "mask_threshold": 0.0}
    tokens = r.get(d, "multimask_tokens", list, "decoder", old.get("multimask_tokens", ...))
    variant = r.choice(d, "variant", VARIANTS, "decoder", "lowres" if v1 else ...)
    needed = DECODER_PROMPT_INPUTS + (("orig_im_size",) if variant == "full" else ())
    e = r.get(data, "encoder", dict, "", SAM_TENSORS["encoder"] if v1 else ...)
    embedding = r.get(e, "embedding_output", str, "encoder")
    outputs = r.get(e, "outputs", list, "encoder", [embedding])
    if not outputs or not all(isinstance(o, str) for o in outputs) or embedding not in outputs:
        raise r.fail("encoder.outputs", f"must list tensor names, the embedding {embedding!r} among them")
    enc = EncoderSpec(image_input=r.get(e, "image_input", str, "encoder"), embedding_output=embedding,
                      outputs=tuple(outputs))
    clamp = r.get(d, "low_res_clamp", (int, float, type(None)), "decoder", None)
    dec = DecoderSpec(variant=variant,
                      inputs=r.names(d, "inputs", needed, "decoder",
                                     {**SAM_TENSORS["inputs"], **SAM_TENSORS["full_inputs"]} if v1 else ...),
                      outputs=r.names(d, "outputs", DECODER_RESULTS, "decoder", SAM_TENSORS["outputs"] if v1 else ...),
                      lowres_size=r.get(d, "lowres_size", int, "decoder", old.get("lowres_size", ...)),
                      mask_tokens=r.get(d, "mask_tokens", int, "decoder", old.get("mask_tokens", ...)),
                      single_mask_token=r.get(d, "single_mask_token", int, "decoder",
                                              old.get("single_mask_token", ...)),
                      multimask_tokens=tuple(tokens),
                      mask_threshold=float(r.get(d, "mask_threshold", (int, float), "decoder",
                                                 old.get("mask_threshold", ...))),
                      prompt_layout=r.choice(d, "prompt_layout", PROMPT_LAYOUTS, "decoder", "sam"),
                      single_mask=r.choice(d, "single_mask", SINGLE_MASK_RULES, "decoder", "token"),
                      stability_delta=float(r.get(d, "stability_delta", (int, float), "decoder", STABILITY_DELTA)),
                      stability_thresh=float(r.get(d, "stability_thresh", (int, float), "decoder", STABILITY_THRESH)),
                      low_res_clamp=None if clamp is None else float(clamp),
                      orig_im_size_dtype="int32" if data.get("version", VERSION) < 3 else "float32")
    used = (dec.single_mask_token, *dec.multimask_tokens)
    if not tokens or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < dec.mask_tokens
                             for t in used):
        raise r.fail("decoder.multimask_tokens", f"must list token indices below mask_tokens ({dec.mask_tokens})")
    return pre, enc, dec


def sam_sections(variant: str) -> dict:
    """The "preprocess", "encoder" and "decoder" sections of a SAM / MobileSAM bundle: what the
    converter writes, and what its parity gate checks the files against before they are written."""
    from edgesam.specs import IMAGE_SIZE, LOWRES, PIXEL_MEAN, PIXEL_STD

    return {"preprocess": {"resize": "longest_side", "image_size": IMAGE_SIZE, "pixel_mean": list(PIXEL_MEAN),
                           "pixel_std": list(PIXEL_STD), "channel_order": "RGB", "pad": "bottom-right"},
            "encoder": {**SAM_TENSORS["encoder"], "contract": "sam-encoder"},
            "decoder": {"variant": variant, "contract": "sam-onnx-model" if variant == "full" else "edgesam-lowres",
                        "lowres_size": LOWRES, "mask_tokens": 4, "single_mask_token": 0,
                        "multimask_tokens": [1, 2, 3], "mask_threshold": 0.0,
                        "inputs": {**SAM_TENSORS["inputs"], **(SAM_TENSORS["full_inputs"] if variant == "full" else {})},
                        "outputs": dict(SAM_TENSORS["outputs"])},
            "amg": dict(AMG_DEFAULTS["sam"])}


SAM2_TENSORS = {"encoder": {"image_input": "image", "embedding_output": "image_embed",
                           "outputs": ["high_res_feats_0", "high_res_feats_1", "image_embed"]},
                "inputs": dict(SAM_TENSORS["inputs"]),
                "outputs": {"scores": "iou_predictions", "low_res_logits": "masks"}}


def sam2_sections() -> dict:
    """The "preprocess", "encoder" and "decoder" sections of a SAM 2 / 2.1 bundle: SAM2Transforms'
    preprocessing (square 1024 resize, ImageNet mean/std: in 0-255 units the numbers are SAM's), the
    tensor names of the SAM 2 ONNX contract (samexporter's), and the official mask decoder's
    token rule with its stability-based fallback for single-mask output."""
    from edgesam.specs import IMAGE_SIZE, LOWRES, PIXEL_MEAN, PIXEL_STD

    return {"preprocess": {"resize": "square", "image_size": IMAGE_SIZE, "pixel_mean": list(PIXEL_MEAN),
                           "pixel_std": list(PIXEL_STD), "channel_order": "RGB", "pad": "none"},
            "encoder": {**SAM2_TENSORS["encoder"], "outputs": list(SAM2_TENSORS["encoder"]["outputs"]),
                        "contract": "sam2-encoder"},
            "decoder": {"variant": "lowres", "contract": "sam2-decoder", "lowres_size": LOWRES, "mask_tokens": 4,
                        "single_mask_token": 0, "multimask_tokens": [1, 2, 3], "mask_threshold": 0.0, "prompt_layout": "sam2",
                        "single_mask": "stability", "stability_delta": STABILITY_DELTA,
                        "stability_thresh": STABILITY_THRESH, "low_res_clamp": 32.0,
                        "inputs": dict(SAM2_TENSORS["inputs"]), "outputs": dict(SAM2_TENSORS["outputs"])},
            "amg": dict(AMG_DEFAULTS["sam2"])}


def find_entry(m: Manifest, role: str, format: str, precision: str) -> Optional[FileEntry]:
    """The one file with this role/format/precision (parse_manifest refuses duplicates), or None."""
    for e in m.files:
        if (e.role, e.format, e.precision) == (role, format, precision):
            return e
    return None
