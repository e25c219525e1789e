"""The parity gate run by ``convert`` before anything is written: torch -> ONNX -> MNN (-> OpenVINO).

The candidates are the files just converted, opened as the runtime opens them (every way it can
run an MNN file: ``mnn_candidates``); the comparison is the one parity engine's
(``edgesam.measure.parity_engine``), the same as ``edgesam parity``'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgesam.convert.families import FAMILIES, Family
from edgesam.convert.families import contract as family_contract
from edgesam.measure.parity_engine import Runner, run_parity
from edgesam.measure.parity import Cell, compare, tolerance_key
from edgesam.runtime import prompts
from edgesam.runtime.backends import MNNBackend, OpenVINOBackend, ORTBackend, openvino_low_arithmetic
from edgesam.specs import IMAGE_SIZE
from edgesam.synthetic.gate_inputs import gate_image


def gate_encoder_input(img: np.ndarray) -> np.ndarray:
    """The 1x3x1024x1024 encoder input the runtime makes of ``img`` (runtime.preprocess: the one
    resize-and-normalise of the project)."""
    from edgesam.runtime.preprocess import SAM_PREPROCESS, preprocess

    return preprocess(img, SAM_PREPROCESS)[0]


def mnn_candidates(prec: str) -> list[tuple[str, str, str, str]]:
    """(label, tolerance key, runtime precision, memory mode) of every way the runtime can run an MNN
    file of ``prec``: fp32 arithmetic; runtime "low" (fp16 arithmetic on ARMv8.2, fp32 on x86, where
    the ARM lane checks the real thing); and for int8 files int8 arithmetic (memory mode low)."""
    rows = [(f"mnn {prec}", prec, "high", "normal"), (f"mnn {prec} low", tolerance_key(prec, "low"), "low", "normal")]
    if prec == "int8":
        rows.append((f"mnn {prec} i8", prec, "high", "low"))
    return rows


@torch.no_grad()
def run_gate(sam: torch.nn.Module, onnx_enc: Path | None, onnx_dec: Path | None,
             mnn_files: dict[str, tuple[Path, Path]], threads: int | None, log: Callable[[str], None],
             full: bool = False, openvino_files: dict[str, tuple[Path, Path]] | None = None,
             family: Family | None = None) -> list[Cell]:
    """Every candidate against torch, through the one parity engine (measure/parity_engine.py), with the
    tensor names the bundle's manifest will have. ``onnx_enc=None`` leaves ONNX Runtime out (a
    re-check of re-converted MNN files only). ``family``: the model's export family (default: SAM's)."""
    family = family or FAMILIES["sam"]
    contract = family_contract(family, "full" if full else "lowres")
    enc_in = [contract.encoder.image_input]
    enc_out = list(contract.encoder.outputs)  # every one is a decoder input of the same name
    dec_in = enc_out + [contract.decoder.inputs[k] for k in ("point_coords", "point_labels", "mask_input",
                                                             "has_mask_input")]
    dec_out = [contract.decoder.outputs["scores"], contract.decoder.outputs["low_res_logits"]]
    if full:  # the full variant also takes orig_im_size and returns masks at that size
        dec_in, dec_out = dec_in + [contract.decoder.inputs["orig_im_size"]], dec_out + ["masks"]
    candidates: list[Runner] = []
    if onnx_enc is not None:
        candidates.append(Runner("onnx fp32", "fp32", lambda: (ORTBackend(onnx_enc, threads),
                                                               ORTBackend(onnx_dec, threads))))
    for prec, (enc_p, dec_p) in mnn_files.items():
        for label, tol, rp, memory in mnn_candidates(prec):
            candidates.append(Runner(label, tol, lambda e=enc_p, d=dec_p, rp=rp, m=memory: (
                MNNBackend(e, enc_in, enc_out, rp, threads, memory=m),
                MNNBackend(d, dec_in, dec_out, rp, threads, memory=m))))
    low = openvino_low_arithmetic() if openvino_files else "fp32"
    for prec, (enc_p, dec_p) in (openvino_files or {}).items():
        # fp16 IR = half weights, f32 arithmetic: judged by the fp16 tolerances like MNN fp16. Runtime
        # "low" is the plugin's choice on this CPU (bf16 with AVX512-BF16 or AMX, else f32), judged by
        # that arithmetic's row.
        for rp in ("high", "low"):
            label = f"openvino {prec}" + (" low" if rp == "low" else "")
            candidates.append(Runner(label, tolerance_key(prec, rp, low), lambda e=enc_p, d=dec_p, rp=rp: (
                OpenVINOBackend(e, threads, rp), OpenVINOBackend(d, threads, rp))))
    reference = family.reference(sam)
    extra = _full_variant_cells if full else None
    report = run_parity(reference, candidates, [("gate scene", gate_image())], contract, log, extra)
    return report.cells


def _full_variant_cells(runner: Runner, enc, dec, references: list[dict]) -> list[Cell]:
    """The full variant's ``masks`` output against torch's postprocess_masks, at several aspect ratios:
    the decoder fed torch's embedding and the batch of boxes (the engine's reference run of them)."""
    ref = references[0]
    feeds = {**ref["encoded"], **ref["cases"]["boxes_batch"]}
    return _full_cells(dec, feeds, ref["outputs"]["boxes_batch"], runner.tolerance, runner.label)


def _full_cells(dec, feeds: dict, ref: dict, prec: str, label: str) -> list[Cell]:
    """The full variant's ``masks`` against torch's postprocess_masks, at several aspect ratios."""
    from torch.nn import functional as F

    cells = []
    for hw in ((683, 1024), (1500, 400), (37, 300), (300, 2200)):
        got = dec.run(dict(feeds, orig_im_size=np.array(hw, np.float32)))["masks"]
        low = torch.from_numpy(ref["low_res_masks"])
        up = F.interpolate(low, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        ph, pw = prompts.preprocess_shape(*hw, IMAGE_SIZE)
        want = F.interpolate(up[..., :ph, :pw], hw, mode="bilinear", align_corners=False).numpy()
        cells.append(compare("full_post", f"masks {hw[0]}x{hw[1]}", want, got, prec, label, "torch", "logits"))
    return cells


@torch.no_grad()
def single_mask_cells(sam: torch.nn.Module, dec_path: Path, threads: int | None) -> list[Cell]:
    """A ``--single-mask`` decoder.onnx against the official ``SamOnnxModel(return_single_mask=True)``
    run eagerly in torch (eager, its float32 crop size follows each image), on the gate scene's
    embedding: prompts of 2, 3 and 4 tokens (the rule turns on the count) at three aspect ratios."""
    from segment_anything.utils.onnx import SamOnnxModel

    official = SamOnnxModel(sam, return_single_mask=True).eval()
    emb = sam.image_encoder(torch.from_numpy(gate_encoder_input(gate_image())))
    dec = ORTBackend(dec_path, threads)
    cells = []
    for hw in ((683, 1024), (1500, 400), (300, 2200)):
        h, w = hw
        cases = {"point": ([[0.4 * w, 0.5 * h], [0, 0]], [1, -1]),  # N=2: the best multimask token
                 "box": ([[0.2 * w, 0.3 * h], [0.7 * w, 0.8 * h]], [2, 3]),
                 "box+point": ([[0.5 * w, 0.5 * h], [0.2 * w, 0.3 * h], [0.7 * w, 0.8 * h]], [0, 2, 3]),  # token 0
                 "3 points": ([[0.4 * w, 0.5 * h], [0.6 * w, 0.3 * h], [0.1 * w, 0.9 * h], [0, 0]], [1, 1, 0, -1])}
        for name, (coords, labels) in cases.items():
            c = prompts.sam_transform().apply_coords(np.array(coords, np.float64), hw).astype(np.float32)[None]
            feeds = {"image_embeddings": emb.numpy(), "point_coords": c,
                     "point_labels": np.array([labels], np.float32),
                     "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
                     "orig_im_size": np.array(hw, np.float32)}
            want = official(*(torch.from_numpy(feeds[k]) for k in dec.inputs))
            got = dec.run(feeds)
            tag = f"{name} {h}x{w}"
            cells.append(compare("single_mask", f"masks {tag}", want[0].numpy(), got["masks"], "fp32",
                                 "onnx fp32", "SamOnnxModel", "logits"))
            cells.append(compare("single_mask", f"iou_predictions {tag}", want[1].numpy(), got["iou_predictions"],
                                 "fp32", "onnx fp32", "SamOnnxModel", "scores"))
    return cells
