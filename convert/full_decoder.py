"""The ``full`` decoder variant: the lowres decoder plus SAM's mask postprocessing as ONNX nodes, with
the official ``SamOnnxModel`` contract (docs/bundle-format.md, ``decoder.contract``): ``orig_im_size`` float32 [H, W], outputs in
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


def _rename_tensor(g: onnx.GraphProto, old: str, new: str) -> None:
    for node in g.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]


def append_single_mask(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a full decoder that returns one mask per prompt, chosen as the official
    ``SamOnnxModel(return_single_mask=True)`` chooses (``--single-mask``; the official notebook's
    export): the prompt's N points (padding included) add (N - 2.5) * 1000 to token 0's predicted IoU,
    and the highest wins, so N >= 3 takes token 0 and N <= 2 the best multimask token. The outputs keep
    their names and order, with 1 mask token in place of 4; the upscale runs on the chosen token only."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = [o.name for o in g.output]
    if names != ["masks", "iou_predictions", "low_res_masks"]:
        raise ValueError(f"expected a full decoder's outputs, got {names}")
    # drop the 4-token upscale (the nodes that only feed "masks"); it is redone on the chosen token
    post = [n for n in g.node if any(o.startswith("pp_") or o == "masks" for o in n.output)]
    for n in post:
        g.node.remove(n)
    for t in [t for t in g.initializer if t.name.startswith("pp_")]:
        g.initializer.remove(t)
    for name in ("iou_predictions", "low_res_masks"):
        _rename_tensor(g, name, f"all_{name}")
    g.initializer.extend([_const("sm_one", [1]), _const("sm_reweight", [[1000.0, 0.0, 0.0, 0.0]], np.float32),
                          _const("sm_half", [2.5], np.float32), _const("sm_mask_shape_keep", [1, 0, 1, 1]),
                          _const("sm_mask_shape_one", [0, 1, 0, 0]), _const("sm_axes23", [2, 3])])
    n = helper.make_node
    g.node.extend([
        n("Shape", ["point_coords"], ["sm_pc_shape"]),
        n("Gather", ["sm_pc_shape", "sm_one"], ["sm_n"], axis=0),
        n("Cast", ["sm_n"], ["sm_nf"], to=TensorProto.FLOAT),
        n("Sub", ["sm_nf", "sm_half"], ["sm_shift"]),
        n("Mul", ["sm_shift", "sm_reweight"], ["sm_bonus"]),
        n("Add", ["all_iou_predictions", "sm_bonus"], ["sm_score"]),
        n("ArgMax", ["sm_score"], ["sm_best"], axis=1, keepdims=1),
        n("GatherElements", ["all_iou_predictions", "sm_best"], ["iou_predictions"], axis=1),
        n("Unsqueeze", ["sm_best", "sm_axes23"], ["sm_best4"]),
        n("Shape", ["all_low_res_masks"], ["sm_low_shape"]),
        n("Mul", ["sm_low_shape", "sm_mask_shape_keep"], ["sm_low_keep"]),
        n("Add", ["sm_low_keep", "sm_mask_shape_one"], ["sm_index_shape"]),
        n("Expand", ["sm_best4", "sm_index_shape"], ["sm_index"]),
        n("GatherElements", ["all_low_res_masks", "sm_index"], ["low_res_masks"], axis=1),
    ])
    size = next(i for i in g.input if i.name == "orig_im_size")
    g.input.remove(size)
    outs = {o.name: o for o in g.output}
    del g.output[:]
    g.output.extend([outs["iou_predictions"], outs["low_res_masks"]])
    for o in g.output:
        o.type.tensor_type.shape.dim[1].dim_value = 1
    return append_postprocessing(m, tokens=1)


def append_postprocessing(model: onnx.ModelProto, tokens: int = 4) -> onnx.ModelProto:
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
    masks = helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["B", tokens, "H", "W"])
    order = [masks, lowres["iou_predictions"], lowres["low_res_masks"]]
    kept = [onnx.ValueInfoProto() for _ in order]
    for k, o in zip(kept, order):
        k.CopyFrom(o)
    del g.output[:]
    g.output.extend(kept)
    onnx.checker.check_model(m)
    return m


def write_single_mask(path) -> None:
    """Rewrite the full decoder.onnx at ``path`` in place as its ``--single-mask`` form (metadata kept)."""
    model = append_single_mask(onnx.load(str(path)))
    for prop in model.metadata_props:
        if prop.key == "contract":
            prop.value = "sam-onnx-model-single-mask"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
