"""A TensorRT-ready export: the ONNX files, a shape profile and the exact ``trtexec`` lines.

Nothing here needs TensorRT or a GPU, and nothing here has been run on one. What
``convert --format ...,tensorrt`` does verify on this host, and records under the
manifest key ``tensorrt``:

- the ONNX files TensorRT would take pass ``onnx.checker``;
- the lowres decoder runs in ONNX Runtime at the profile's min, opt and max shapes
  and matches torch there (fp32 tolerances);
- which layers are kept in fp32 in the ``--fp16`` engines, and why: every
  LayerNormalization, every LayerNorm2d written out as ReduceMean/Pow/Sqrt (its
  ``(x - mean)^2`` is the classic fp16 overflow), and any node whose output
  magnitude on the parity scene comes within 8x of the fp16 limit.

The profile bounds ``B`` (prompts per call), ``N`` (points per prompt, including
the padding point or the two box corners) and ``M`` (masks: 1, shared, or B).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesam.errors import InputError
from edgesam.specs import DECODER_INPUTS, DECODER_OUTPUTS, EMBED_SHAPE, IMAGE_SIZE, LOWRES

FP16_MAX = 65504.0
RISK_FRACTION = 1 / 8  # flag outputs above FP16_MAX/8: a trained checkpoint or another image may go higher
LAYERNORM2D_OPS = {"ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Mul"}


@dataclass(frozen=True)
class TensorRTProfile:
    """min/opt/max of the decoder's dynamic axes (``M`` follows: 1, 1, max prompts)."""

    prompts: tuple[int, int, int] = (1, 1, 64)  # B: 64 = the official AMG's points_per_batch
    points: tuple[int, int, int] = (1, 2, 16)  # N: one point + padding is the common case

    def validate(self) -> None:
        for name, (lo, opt, hi) in (("prompts", self.prompts), ("points", self.points)):
            if not 1 <= lo <= opt <= hi:
                raise InputError(f"TensorRT profile {name} must satisfy 1 <= min <= opt <= max, got {lo, opt, hi}")

    def shapes(self, which: str) -> dict[str, list[int]]:
        i = ("min", "opt", "max").index(which)
        b, n = self.prompts[i], self.points[i]
        m = b if which == "max" else 1  # mask_input is shared (1) or one per prompt (B)
        return {"point_coords": [b, n, 2], "point_labels": [b, n], "mask_input": [m, 1, LOWRES, LOWRES],
                "has_mask_input": [m]}


def restore_dim_names(model, spec: dict | None = None) -> None:
    """Put the decoder's dynamic axis names back on its graph inputs/outputs, in place: ``spec``
    {tensor: dims} (default: the SAM decoder's, ``specs.DECODER_INPUTS``/``DECODER_OUTPUTS``).

    onnxslim's shape inference renames ``mask_input``'s ``M`` to ``B``. ONNX Runtime and MNN
    ignore the names, but TensorRT 10 treats equally named dimensions as equal, which would
    forbid one shared mask for a batch of prompts.
    """
    spec = spec or {**DECODER_INPUTS, **DECODER_OUTPUTS}
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name not in spec or not vi.type.tensor_type.HasField("shape"):
            continue
        for dim, want in zip(vi.type.tensor_type.shape.dim, spec[vi.name]):
            if isinstance(want, str):
                dim.dim_param = want


def lowres_decoder(full_path: Path, out_path: Path) -> None:
    """The lowres subgraph of a ``full`` decoder (no ``orig_im_size`` shape input)."""
    import onnx.utils

    onnx.utils.extract_model(str(full_path), str(out_path), list(DECODER_INPUTS), list(DECODER_OUTPUTS))


def subgraphs(graph) -> list:
    """The graphs nested in ``graph``'s nodes (If branches, Loop bodies), recursively."""
    found = []
    for node in graph.node:
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found += [g, *subgraphs(g)]
    return found


def fp32_layers(model, scan: dict[str, float]) -> dict[str, str]:
    """{ONNX node name: reason} for the nodes to keep in fp32 in an ``--fp16`` engine."""
    keep: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            keep[node.name] = "LayerNormalization"
    scopes = {n.name.rsplit("/", 1)[0] for n in model.graph.node if n.op_type == "Pow" and "/" in n.name}
    for node in model.graph.node:
        if node.op_type in LAYERNORM2D_OPS and "/" in node.name and node.name.rsplit("/", 1)[0] in scopes:
            keep.setdefault(node.name, "LayerNorm2d (ReduceMean/Pow/Sqrt)")
    for graph in subgraphs(model.graph):
        # A branch's nodes carry no scope (the folded decoder's mask head behind an If): a branch that
        # squares keeps every LayerNorm2d-type node in fp32, a few more than the norms themselves.
        if any(n.op_type == "Pow" for n in graph.node):
            for node in graph.node:
                if node.op_type in LAYERNORM2D_OPS:
                    keep.setdefault(node.name, "LayerNorm2d in an If branch (ReduceMean/Pow/Sqrt)")
    for name, peak in scan.items():
        if name and peak > FP16_MAX * RISK_FRACTION:
            keep.setdefault(name, f"output reaches {peak:.0f} on the parity scene (fp16 max {FP16_MAX:.0f})")
    return keep


def activation_peaks(model, feeds: dict[str, np.ndarray], threads: int) -> dict[str, float]:
    """max |output| of every float node output, from one ONNX Runtime run (scalars only, low memory)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    floats = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
              if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    producer, extra = {}, []
    for node in list(m.graph.node):
        for out in node.output:
            if out in floats and out not in producer:
                producer[out] = node.name
                red = f"__peak_{len(extra)}"
                m.graph.node.extend([helper.make_node("Abs", [out], [red + "_abs"]),
                                     helper.make_node("ReduceMax", [red + "_abs"], [red], keepdims=0)])
                extra.append((red, node.name))
                m.graph.output.append(helper.make_tensor_value_info(red, TensorProto.FLOAT, []))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [r for r, _ in extra]
    vals = sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})
    peaks: dict[str, float] = {}
    for (_, node), v in zip(extra, vals):
        peaks[node] = max(peaks.get(node, 0.0), float(v))
    return peaks


def _shape_arg(shapes: dict[str, list[int]]) -> str:
    return ",".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())


def trtexec_commands(onnx_file: str, engine_stem: str, keep: dict[str, str],
                     profile: TensorRTProfile | None) -> dict[str, str]:
    """The fp32 and fp16 ``trtexec`` lines for one ONNX file (run in the bundle folder)."""
    base = ["trtexec", f"--onnx={onnx_file}"]
    if profile is not None:
        base += [f"--{w}Shapes={_shape_arg(profile.shapes(w))}" for w in ("min", "opt", "max")]
    fp16 = base + [f"--saveEngine={engine_stem}.fp16.plan", "--fp16"]
    if keep:
        spec = ",".join(f"{n}:fp32" for n in keep)
        fp16 += ["--precisionConstraints=obey", f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}"]
    return {"fp32": shlex.join(base + [f"--saveEngine={engine_stem}.fp32.plan"]), "fp16": shlex.join(fp16)}


def profile_feeds(profile: TensorRTProfile, which: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Decoder inputs at one profile point: points, a box and padding labels, a real mask when M > 1."""
    rng = np.random.default_rng(seed)
    s = profile.shapes(which)
    b, n = s["point_coords"][:2]
    labels = rng.integers(0, 2, size=(b, n)).astype(np.float32)
    if n >= 3:
        labels[:, -2:] = (2, 3)  # box corners
    elif n == 2:
        labels[:, -1] = -1  # padding point
    m = s["mask_input"][0]
    return {"image_embeddings": rng.standard_normal(EMBED_SHAPE).astype(np.float32),
            "point_coords": rng.uniform(0, IMAGE_SIZE, size=(b, n, 2)).astype(np.float32),
            "point_labels": labels,
            "mask_input": rng.standard_normal((m, 1, LOWRES, LOWRES)).astype(np.float32) * 4,
            "has_mask_input": np.full((m,), 1.0 if m > 1 else 0.0, np.float32)}


def prepare(sam, enc_onnx: Path, dec_onnx: Path, encoder_input: np.ndarray, profile: TensorRTProfile,
            threads: int, log) -> tuple[dict, list]:
    """Check, run and describe the TensorRT inputs. Returns (manifest ``tensorrt`` section, parity cells)."""
    import onnx
    import torch

    from edgesam.convert.sam_export import EXTERNAL_DATA_BYTES, DecoderWrapper
    from edgesam.runtime.backends import ORTBackend
    from edgesam.measure.parity import compare

    profile.validate()
    section: dict = {"profile": {"B": list(profile.prompts), "N": list(profile.points),
                                 "M": [1, 1, profile.prompts[2]],
                                 "shapes": {w: profile.shapes(w) for w in ("min", "opt", "max")}},
                     "fp16_layer_rule": f"LayerNormalization, LayerNorm2d written out, outputs > fp16 max x "
                                        f"{RISK_FRACTION:g} on the parity scene",
                     "files": {}, "commands": {}, "fp32_layers": {}, "verified": {}}
    dec_t = DecoderWrapper(sam).eval()
    cells = []
    for role, path in (("encoder", enc_onnx), ("decoder", dec_onnx)):
        onnx.checker.check_model(str(path))  # path form: also checks external data
        section["files"][role] = path.name
        model = onnx.load(str(path), load_external_data=False)
        large = path.with_name(path.name + ".data").exists() or \
            sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
        if role == "encoder":
            feeds = {"image": encoder_input}
        else:
            feeds = profile_feeds(profile, "opt")
        if large:  # ORT cannot take a >2 GiB model as bytes: the structural rule alone
            scan, scan_note = {}, "skipped (external data)"
        else:
            log(f"  tensorrt: fp16 range scan of {path.name}")
            scan = activation_peaks(onnx.load(str(path)), feeds, threads)
            scan_note = f"max |output| over {len(scan)} nodes: {max(scan.values(), default=0):.3g}"
        keep = fp32_layers(model, scan)
        section["fp32_layers"][role] = keep
        section["verified"][f"{role}_range_scan"] = scan_note
        section["commands"][role] = trtexec_commands(path.name, role, keep, profile if role == "decoder" else None)
    section["verified"]["onnx_checker"] = True
    ort_dec = ORTBackend(dec_onnx, threads)
    for which in ("min", "opt", "max"):
        log(f"  tensorrt: decoder at the {which} profile shapes in ONNX Runtime vs torch")
        feeds = profile_feeds(profile, which, seed=("min", "opt", "max").index(which))
        with torch.no_grad():
            ref = dec_t(*(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS))
        got = ort_dec.run(feeds)
        b, n = feeds["point_coords"].shape[:2]
        label = f"trt {which} B{b} N{n} M{feeds['mask_input'].shape[0]}"
        for name, r, kind in zip(DECODER_OUTPUTS, ref, ("scores", "logits")):
            cells.append(compare("profile", name, r.numpy(), got[name], "fp32", label, "torch", kind))
    section["verified"]["ort_profile_shapes_vs_torch"] = all(c.ok for c in cells)
    section["verified"]["not_verified"] = ("no TensorRT or GPU on the converting host: engines were not built, "
                                           "layer names were not matched against TensorRT's, fp16 accuracy and "
                                           "speed were not measured")
    return section, cells
