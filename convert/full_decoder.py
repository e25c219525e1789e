"""The ``full`` decoder variant: the lowres decoder plus SAM's mask postprocessing as ONNX nodes, with
the official ``SamOnnxModel`` contract (shared/DESIGN.md): ``orig_im_size`` float32 [H, W], outputs in
the order ``masks, iou_predictions, low_res_masks``, so code written for the official ONNX example and
samexporter runs it unchanged.

Appended with ``onnx.helper`` rather than traced, because tracing
``F.interpolate(size=(h, w))`` with tensor sizes and the official float32
``floor(scale * size + 0.5)`` both risk baking the export dummy's aspect ratio
in. Here every size is computed in int64 from ``orig_im_size`` (whole numbers carried as float32, exact
up to 2**24) at run time:

  up   = Resize(low_res_masks, 1024x1024)            bilinear, half_pixel (= align_corners=False)
  pre  = (2*1024*hw + max(hw)) // (2*max(hw))       = int(hw * 1024/max(hw) + 0.5), exactly
  crop = up[..., :pre_h, :pre_w]
  out  = Resize(crop, orig_im_size)                  bilinear, half_pixel
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesam.specs import IMAGE_SIZE


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def append_postprocessing(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of the lowres decoder with input ``orig_im_size`` (float32 [H, W]) and the outputs
    ``masks, iou_predictions, low_res_masks`` in that order (the official contract's)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    g.input.append(helper.make_tensor_value_info("orig_im_size", TensorProto.FLOAT, [2]))
    g.initializer.extend([
        _const("pp_zero", [0]), _const("pp_two", [2]), _const("pp_axes23", [2, 3]),
        _const("pp_zeros2", [0, 0]), _const("pp_side", [IMAGE_SIZE, IMAGE_SIZE]),
        _const("pp_2side", [2 * IMAGE_SIZE]),
    ])
    n = helper.make_node
    g.node.extend([
        n("Shape", ["low_res_masks"], ["pp_shape"]),
        n("Slice", ["pp_shape", "pp_zero", "pp_two"], ["pp_bc"]),
        n("Concat", ["pp_bc", "pp_side"], ["pp_up_sizes"], axis=0),
        n("Resize", ["low_res_masks", "", "", "pp_up_sizes"], ["pp_up"], mode="linear",
          coordinate_transformation_mode="half_pixel"),
        n("Cast", ["orig_im_size"], ["pp_hw"], to=TensorProto.INT64),
        n("ReduceMax", ["pp_hw"], ["pp_max"], keepdims=1),
        n("Mul", ["pp_hw", "pp_2side"], ["pp_num0"]),
        n("Add", ["pp_num0", "pp_max"], ["pp_num"]),
        n("Mul", ["pp_max", "pp_two"], ["pp_den"]),
        n("Div", ["pp_num", "pp_den"], ["pp_pre"]),  # int64 Div truncates: floor for positives
        n("Slice", ["pp_up", "pp_zeros2", "pp_pre", "pp_axes23"], ["pp_crop"]),
        n("Concat", ["pp_bc", "pp_hw"], ["pp_out_sizes"], axis=0),
        n("Resize", ["pp_crop", "", "", "pp_out_sizes"], ["masks"], mode="linear",
          coordinate_transformation_mode="half_pixel"),
    ])
    lowres = {o.name: o for o in g.output}
    if set(lowres) != {"iou_predictions", "low_res_masks"}:
        raise ValueError(f"expected the lowres decoder's outputs, got {sorted(lowres)}")
    masks = helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["B", 4, "H", "W"])
    order = [masks, lowres["iou_predictions"], lowres["low_res_masks"]]
    kept = [onnx.ValueInfoProto() for _ in order]
    for k, o in zip(kept, order):
        k.CopyFrom(o)
    del g.output[:]
    g.output.extend(kept)
    onnx.checker.check_model(m)
    return m
