"""``--ort-sam2``: a SAM 2 bundle's ONNX files in the contract of ONNX Runtime's own SAM 2 scripts.

ONNX Runtime ships SAM 2 tooling (``onnxruntime/transformers/models/sam2``: an exporter, a benchmark and
``SAM2ImageOnnxPredictor``, which subclasses the official ``SAM2ImagePredictor``). It reads other names
than the SAM 2 contract (samexporter's), and its decoder does more:

- encoder outputs ``image_features_0``, ``image_features_1``, ``image_embeddings``;
- decoder inputs ``image_features_0``, ``image_features_1``, ``image_embeddings``, ``point_coords``
  [L,P,2] float32 (1024 frame), ``point_labels`` [L,P] **int32**, ``input_masks`` [L,1,256,256],
  ``has_input_masks`` [L], ``original_image_size`` [2] **int32** (H, W); outputs ``masks`` [L,M,H,W]
  **bool** at the original size, ``iou_predictions`` [L,M], ``low_res_masks`` [L,M,256,256] clamped
  to +-32; the multimask choice is made at export, so there are two decoder files: M=3 (tokens 1-3)
  and M=1 (the official single-mask rule, stability fallback included).

One file cannot follow both contracts, so with ``--ort-sam2`` the bundle gets, beside its own files:
encoder.onnx with ONNX Runtime's three output names added as aliases after the contract's three
(samexporter takes outputs by position, so it still reads the first three), and
``ort_image_decoder.onnx`` / ``ort_image_decoder_multi.onnx``. edgesam's runtime does not open the
two decoders; ``ort_cells`` gates them against the official ``SAM2ImagePredictor`` before anything is
written.

The decoder is decoder.onnx's graph (``--decoder-graph``: folded by default, the official function with
fewer multiply-adds), the token choice the official ``MaskDecoder``'s own code; the upscale is appended
with ``onnx.helper`` (Resize to sizes read from ``original_image_size`` at run time), so no size of
the export's dummy can be baked in.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from edgesam.convert.full_decoder import _const
from edgesam.convert.sam2_family import ENCODER_OUTPUTS, _encoder_shapes, decoder_module
from edgesam.specs import LOWRES

ORT_ENCODER_OUTPUTS = ("image_features_0", "image_features_1", "image_embeddings")  # = ENCODER_OUTPUTS' order
ORT_DECODER_INPUTS = ("image_features_0", "image_features_1", "image_embeddings", "point_coords", "point_labels",
                      "input_masks", "has_input_masks", "original_image_size")
ORT_DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
ORT_FILES = {False: "ort_image_decoder.onnx", True: "ort_image_decoder_multi.onnx"}  # by multimask
# The dynamic axes under ONNX Runtime's names (L labels, P points, M masks), restored after onnxslim
# (``finalise_onnx(dims=...)``)
ORT_DIMS = {"point_coords": ["L", "P", 2], "point_labels": ["L", "P"], "input_masks": ["L", 1, LOWRES, LOWRES],
            "has_input_masks": ["L"], "masks": ["L", "M", "H", "W"], "iou_predictions": ["L", "M"],
            "low_res_masks": ["L", "M", LOWRES, LOWRES]}


class OrtSam2Decoder(nn.Module):
    """The bundle's decoder graph (every token) followed by the official token choice of ``MaskDecoder.forward``:
    tokens 1-3 with ``multimask``, else the single-mask rule (token 0, or with
    ``dynamic_multimask_via_stability`` the official ``_dynamic_multimask_via_stability``).
    Returns the chosen low-res logits (unclamped: the upscale reads them) and their scores."""

    def __init__(self, model: nn.Module, multimask: bool, graph: str = "folded") -> None:
        super().__init__()
        self.decoder = decoder_module(model, graph)  # decoder.onnx's graph (folded: sam2_folded.py)
        self.mask_decoder = model.sam_mask_decoder
        self.multimask = multimask

    def forward(self, image_features_0, image_features_1, image_embeddings, point_coords, point_labels,
                input_masks, has_input_masks):
        masks, iou = self.decoder(image_embeddings, image_features_0, image_features_1, point_coords,
                                  point_labels.float(), input_masks, has_input_masks)
        if self.multimask:
            return masks[:, 1:], iou[:, 1:]
        if self.mask_decoder.dynamic_multimask_via_stability:
            return self.mask_decoder._dynamic_multimask_via_stability(masks, iou)
        return masks[:, 0:1], iou[:, 0:1]


def _dummy(model: nn.Module, b: int = 2, n: int = 3) -> tuple:
    shapes = list(_encoder_shapes(model).values())
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(*s, generator=g) for s in shapes]
    return (*feats, torch.rand(b, n, 2, generator=g) * 1024, torch.randint(0, 4, (b, n), dtype=torch.int32,
                                                                          generator=g),
            torch.randn(b, 1, LOWRES, LOWRES, generator=g), torch.ones(b))


def append_upscale(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add ``original_image_size`` (int32 [2]) and turn the traced outputs (``low_res_logits``,
    ``iou_predictions``) into ``masks`` (bilinear, half-pixel = ``align_corners=False``, to H x W, then
    ``> 0``), ``iou_predictions`` and ``low_res_masks`` (clamped to +-32), in that order."""
    g = model.graph
    g.input.append(helper.make_tensor_value_info("original_image_size", TensorProto.INT32, [2]))
    g.initializer.extend([_const("ort_up_lo", -32.0, np.float32), _const("ort_up_hi", 32.0, np.float32),
                          _const("ort_up_zero", 0.0, np.float32)])
    g.node.extend([
        helper.make_node("Shape", ["low_res_logits"], ["ort_up_lm"], start=0, end=2),
        helper.make_node("Cast", ["original_image_size"], ["ort_up_hw"], to=TensorProto.INT64),
        helper.make_node("Concat", ["ort_up_lm", "ort_up_hw"], ["ort_up_sizes"], axis=0),
        helper.make_node("Resize", ["low_res_logits", "", "", "ort_up_sizes"], ["ort_up_logits"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Greater", ["ort_up_logits", "ort_up_zero"], ["masks"]),
        helper.make_node("Clip", ["low_res_logits", "ort_up_lo", "ort_up_hi"], ["low_res_masks"]),
    ])
    iou = next(o for o in g.output if o.name == "iou_predictions")
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("masks", TensorProto.BOOL, ["L", "M", "H", "W"]), iou,
                     helper.make_tensor_value_info("low_res_masks", TensorProto.FLOAT, ["L", "M", LOWRES, LOWRES])])
    return model


def export_ort_decoder(model: nn.Module, path: Path, opset: int, multimask: bool, graph: str = "folded") -> None:
    """``ort_image_decoder[_multi].onnx`` (ONNX Runtime's ``SAM2ImageDecoder`` contract)."""
    from edgesam.convert.sam_export import _export

    dyn = {"point_coords": {0: "L", 1: "P"}, "point_labels": {0: "L", 1: "P"}, "input_masks": {0: "L"},
           "has_input_masks": {0: "L"}, "low_res_logits": {0: "L"}, "iou_predictions": {0: "L"}}
    _export(OrtSam2Decoder(model, multimask, graph).eval(), _dummy(model), path, ORT_DECODER_INPUTS[:-1],
            ("low_res_logits", "iou_predictions"), dyn, opset)
    m = append_upscale(onnx.load(str(path)))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def add_encoder_aliases(path: Path) -> None:
    """encoder.onnx with ONNX Runtime's output names added (Identity) after the contract's three."""
    m = onnx.load(str(path), load_external_data=False)
    outs = {o.name: o for o in m.graph.output}
    for src, alias in zip(ENCODER_OUTPUTS, ORT_ENCODER_OUTPUTS):
        m.graph.node.append(helper.make_node("Identity", [src], [alias], name=f"ort_alias_{alias}"))
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(outs[src])
        vi.name = alias
        m.graph.output.append(vi)
    m.metadata_props.add(key="ort_sam2_outputs", value=",".join(
        f"{alias}={src}" for src, alias in zip(ENCODER_OUTPUTS, ORT_ENCODER_OUTPUTS)))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


@torch.no_grad()
def ort_cells(model: nn.Module, enc_path: Path, bundle: Path, threads: int | None) -> list:
    """The ``--ort-sam2`` files against the official ``SAM2ImagePredictor`` (torch), before the bundle
    is written: encoder.onnx's aliases equal its contract outputs exactly; each decoder, fed the
    official features and prompts prepared as ONNX Runtime's predictor prepares them, returns the
    official ``predict``'s masks (IoU), scores and clamped low-res logits, at four aspect ratios
    (the official predictor's original size set per case: only the upscale reads it)."""
    import warnings

    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from edgesam.measure.parity import compare
    from edgesam.runtime.backends import ORTBackend
    from edgesam.synthetic.gate_inputs import gate_image

    img = gate_image()
    predictor = SAM2ImagePredictor(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor.set_image(img)
    cells = []
    enc = ORTBackend(enc_path, threads).run({"image": predictor._transforms(img)[None].numpy()})
    for src, alias in zip(ENCODER_OUTPUTS, ORT_ENCODER_OUTPUTS):
        cells.append(compare("ort_sam2", f"encoder {alias}", enc[src], enc[alias], "fp32", "onnx ort-sam2",
                             src, "exact"))
    feats = {"image_features_0": predictor._features["high_res_feats"][0].numpy(),
             "image_features_1": predictor._features["high_res_feats"][1].numpy(),
             "image_embeddings": predictor._features["image_embed"].numpy()}
    decoders = {mm: ORTBackend(bundle / name, threads) for mm, name in ORT_FILES.items()}
    for h, w in ((683, 1024), (1500, 400), (37, 300), (300, 2200)):
        predictor._orig_hw = [(h, w)]
        box = np.array([0.2 * w, 0.3 * h, 0.7 * w, 0.8 * h], np.float32)
        cases = {"point multi": (dict(point_coords=[[0.4 * w, 0.5 * h]], point_labels=[1]), True),
                 "point single": (dict(point_coords=[[0.4 * w, 0.5 * h]], point_labels=[1]), False),
                 "box": (dict(box=box), False),
                 "box+point": (dict(box=box, point_coords=[[0.5 * w, 0.5 * h]], point_labels=[0]), False),
                 "3 boxes": (dict(box=np.stack([box, box * 0.8, box * 0.5 + 10])), False)}
        for name, (kw, mm) in cases.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = predictor.predict(multimask_output=mm, return_logits=False, **kw)
            got = decoders[mm].run({**feats, **_feeds(predictor, kw, h, w)})
            tag, label = f"{name} {h}x{w}", f"onnx ort-sam2{' multi' if mm else ''}"
            # predict drops the prompt axis for one prompt: back to [L, M, ...] (the files' layout)
            masks, iou, low = (x.reshape(-1, *x.shape[-k:]) for x, k in zip(want, (3, 1, 3)))
            cells.append(compare("ort_sam2", f"masks {tag}", masks, got["masks"], "fp32", label,
                                 "SAM2ImagePredictor", "masks"))
            cells.append(compare("ort_sam2", f"iou_predictions {tag}", iou, got["iou_predictions"], "fp32", label,
                                 "SAM2ImagePredictor", "scores"))
            cells.append(compare("ort_sam2", f"low_res_masks {tag}", low, got["low_res_masks"], "fp32", label,
                                 "SAM2ImagePredictor", "logits"))
    return cells


def _feeds(predictor, kw: dict, h: int, w: int) -> dict[str, np.ndarray]:
    """The decoder inputs ONNX Runtime's ``SAM2ImageOnnxPredictor._predict`` builds from a ``predict``
    call: the official prompt transform, box corners first with labels 2 and 3, int32 labels, no mask."""
    _, coords, labels, boxes = predictor._prep_prompts(kw.get("point_coords"), kw.get("point_labels"),
                                                       kw.get("box"), None, True)
    parts_c, parts_l = [], []
    if boxes is not None:
        parts_c.append(boxes.reshape(-1, 2, 2))
        parts_l.append(torch.tensor([[2, 3]], dtype=torch.int32).repeat(boxes.shape[0], 1))
    if coords is not None:
        n = parts_c[0].shape[0] if parts_c else coords.shape[0]
        parts_c.append(coords.expand(n, -1, -1))
        parts_l.append(labels.to(torch.int32).expand(n, -1))
    c, lab = torch.cat(parts_c, 1), torch.cat(parts_l, 1)
    b = c.shape[0]
    return {"point_coords": c.numpy().astype(np.float32), "point_labels": lab.numpy().astype(np.int32),
            "input_masks": np.zeros((b, 1, LOWRES, LOWRES), np.float32), "has_input_masks": np.zeros(b, np.float32),
            "original_image_size": np.array([h, w], np.int32)}
