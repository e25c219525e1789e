"""The parity gate run by ``convert`` before anything is written: torch -> ONNX -> MNN.

The decoder is compared on the torch embedding, so each stage's error is its own;
the end-to-end row then feeds each format's own embedding to its own decoder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgesam.convert.export import DecoderWrapper, EncoderWrapper
from edgesam.runtime import prompts
from edgesam.runtime.backends import MNNBackend, OpenVINOBackend, ORTBackend
from edgesam.measure.parity import Cell, compare, tolerance_key, top_change_rate
from edgesam.synthetic.gate import prompt_set, scene
from edgesam.specs import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, IMAGE_SIZE, PIXEL_MEAN,
                           PIXEL_STD)


def gate_encoder_input(img: np.ndarray) -> np.ndarray:
    """Normalise and pad to 1x3x1024x1024 (resize-free: the gate scene is already <= 1024)."""
    h, w = img.shape[:2]
    x = (img.astype(np.float32) - np.array(PIXEL_MEAN, np.float32)) / np.array(PIXEL_STD, np.float32)
    out = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    out[0, :, :h, :w] = x.transpose(2, 0, 1)
    return out


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
             full: bool = False, openvino_files: dict[str, tuple[Path, Path]] | None = None) -> list[Cell]:
    """Every candidate against torch. ``onnx_enc=None`` leaves ONNX Runtime out (a re-check of
    re-converted MNN files only)."""
    img = scene()
    size = img.shape[:2]
    x = gate_encoder_input(img)
    emb_t = EncoderWrapper(sam)(torch.from_numpy(x)).numpy()
    dec_t = DecoderWrapper(sam).eval()
    dec_in, dec_out = list(DECODER_INPUTS), list(DECODER_OUTPUTS)

    def torch_decode(feeds):
        outs = dec_t(*(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS))
        return dict(zip(dec_out, (o.numpy() for o in outs)))

    first = torch_decode(prompt_set(size, emb_t, None)["point"])
    cases = prompt_set(size, emb_t, first["low_res_masks"][:, 0])
    ref = {name: torch_decode(f) for name, f in cases.items()}

    if full:  # the full variant also takes orig_im_size and returns masks at that size
        dec_in, dec_out = dec_in + ["orig_im_size"], dec_out + ["masks"]
        for f in cases.values():
            f["orig_im_size"] = np.array(size, np.int32)
    # Each candidate's models are loaded when its turn comes and dropped after (vit_h: GBs each).
    candidates: dict[str, tuple[str, Callable[[], tuple]]] = {}
    if onnx_enc is not None:
        candidates["onnx fp32"] = ("fp32", lambda: (ORTBackend(onnx_enc, threads), ORTBackend(onnx_dec, threads)))
    for prec, (enc_p, dec_p) in mnn_files.items():
        for label, tol, rp, memory in mnn_candidates(prec):
            candidates[label] = (tol, lambda e=enc_p, d=dec_p, rp=rp, m=memory: (
                MNNBackend(e, list(ENCODER_INPUTS), list(ENCODER_OUTPUTS), rp, threads, memory=m),
                MNNBackend(d, dec_in, dec_out, rp, threads, memory=m)))
    for prec, (enc_p, dec_p) in (openvino_files or {}).items():
        # fp16 IR = half weights, f32 arithmetic: judged by the fp16 tolerances like MNN fp16.
        candidates[f"openvino {prec}"] = (prec, lambda e=enc_p, d=dec_p: (OpenVINOBackend(e, threads),
                                                                          OpenVINOBackend(d, threads)))
    cells: list[Cell] = []
    for label, (prec, load) in candidates.items():
        log(f"  parity: {label}")
        enc, dec = load()
        emb = enc.run({"image": x})["image_embeddings"]
        cells.append(compare("encoder", "image_embeddings", emb_t, emb, prec, label, "torch"))
        got = {name: dec.run(f) for name, f in cases.items()}
        logits_r = np.concatenate([ref[n]["low_res_masks"] for n in cases])
        logits_g = np.concatenate([got[n]["low_res_masks"] for n in cases])
        scores_r = np.concatenate([ref[n]["iou_predictions"] for n in cases])
        scores_g = np.concatenate([got[n]["iou_predictions"] for n in cases])
        cells.append(compare("decoder", "low_res_masks", logits_r, logits_g, prec, label, "torch", "logits"))
        c = compare("decoder", "iou_predictions", scores_r, scores_g, prec, label, "torch", "scores")
        c.top_change_rate = top_change_rate(scores_r, scores_g)
        cells.append(c)
        # End to end: this format's embedding into this format's decoder.
        e2e_feeds = dict(cases["box_point"], image_embeddings=emb)
        if full:
            e2e_feeds["orig_im_size"] = np.array(size, np.int32)
        e2e = dec.run(e2e_feeds)["low_res_masks"]
        cells.append(compare("end_to_end", "low_res_masks", ref["box_point"]["low_res_masks"], e2e, prec,
                             label, "torch", "logits"))
        if full:
            cells.extend(_full_cells(dec, cases["boxes_batch"], ref["boxes_batch"], prec, label))
    return cells


def _full_cells(dec, feeds: dict, ref: dict, prec: str, label: str) -> list[Cell]:
    """The full variant's ``masks`` against torch's postprocess_masks, at several aspect ratios."""
    from torch.nn import functional as F

    cells = []
    for hw in ((683, 1024), (1500, 400), (37, 300), (300, 2200)):
        got = dec.run(dict(feeds, orig_im_size=np.array(hw, np.int32)))["masks"]
        low = torch.from_numpy(ref["low_res_masks"])
        up = F.interpolate(low, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        ph, pw = prompts.preprocess_shape(*hw)
        want = F.interpolate(up[..., :ph, :pw], hw, mode="bilinear", align_corners=False).numpy()
        cells.append(compare("full_post", f"masks {hw[0]}x{hw[1]}", want, got, prec, label, "torch", "logits"))
    return cells
