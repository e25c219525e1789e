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
from edgesam.runtime.backends import MNNBackend, ORTBackend
from edgesam.runtime.parity import Cell, compare, top_change_rate
from edgesam.specs import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, IMAGE_SIZE, PIXEL_MEAN,
                           PIXEL_STD)


def gate_image(h: int = 683, w: int = 1024, seed: int = 7) -> np.ndarray:
    """A deterministic RGB uint8 scene (gradients, discs, a bar) that needs no file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200, yy / h * 180, (xx + yy) / (h + w) * 120], -1) + 30
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(40, 180)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img[h // 3:h // 3 + 40, :] = (240, 240, 20)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def gate_encoder_input(img: np.ndarray) -> np.ndarray:
    """Normalise and pad to 1x3x1024x1024 (resize-free: the gate image is already <= 1024)."""
    h, w = img.shape[:2]
    x = (img.astype(np.float32) - np.array(PIXEL_MEAN, np.float32)) / np.array(PIXEL_STD, np.float32)
    out = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    out[0, :, :h, :w] = x.transpose(2, 0, 1)
    return out


def gate_prompts(size: tuple[int, int], embedding: np.ndarray, prev_logits: np.ndarray | None) -> dict:
    """Named decoder feeds for points, pos+neg points, box, box+point and a batch of boxes."""
    h, w = size
    P = prompts
    cases = {
        "point": (np.array([[w * 0.3, h * 0.4]]), np.array([1]), None),
        "points_neg": (np.array([[w * 0.5, h * 0.5], [w * 0.8, h * 0.2]]), np.array([1, 0]), None),
        "box": (None, None, np.array([w * 0.1, h * 0.2, w * 0.6, h * 0.9])),
        "box_point": (np.array([[w * 0.4, h * 0.5]]), np.array([1]), np.array([w * 0.2, h * 0.1, w * 0.7, h * 0.8])),
        "boxes_batch": (None, None, np.array([[0, 0, w / 2, h / 2], [w / 3, h / 3, w, h], [10, 20, 300, 200]])),
    }
    feeds = {}
    for name, (c, l, b) in cases.items():
        coords, labels = P.validate_points(c, l)
        feeds[name] = P.decoder_feeds(coords, labels, P.validate_boxes(b), None, size, embedding)
    if prev_logits is not None:
        coords, labels = P.validate_points(np.array([[w * 0.3, h * 0.4]]), np.array([1]))
        mask = P.validate_mask_input(prev_logits, 1)
        feeds["point_mask"] = P.decoder_feeds(coords, labels, None, mask, size, embedding)
    return feeds


@torch.no_grad()
def run_gate(sam: torch.nn.Module, onnx_enc: Path, onnx_dec: Path, mnn_files: dict[str, tuple[Path, Path]],
             threads: int, log: Callable[[str], None], full: bool = False) -> list[Cell]:
    img = gate_image()
    size = img.shape[:2]
    x = gate_encoder_input(img)
    emb_t = EncoderWrapper(sam)(torch.from_numpy(x)).numpy()
    dec_t = DecoderWrapper(sam).eval()
    dec_in, dec_out = list(DECODER_INPUTS), list(DECODER_OUTPUTS)

    def torch_decode(feeds):
        outs = dec_t(*(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS))
        return dict(zip(dec_out, (o.numpy() for o in outs)))

    first = torch_decode(gate_prompts(size, emb_t, None)["point"])
    cases = gate_prompts(size, emb_t, first["low_res_masks"][:, 0])
    ref = {name: torch_decode(f) for name, f in cases.items()}

    if full:  # the full variant also takes orig_im_size and returns masks at that size
        dec_in, dec_out = dec_in + ["orig_im_size"], dec_out + ["masks"]
        for f in cases.values():
            f["orig_im_size"] = np.array(size, np.int32)
    candidates = {"onnx fp32": ("fp32", ORTBackend(onnx_enc, threads), ORTBackend(onnx_dec, threads))}
    for prec, (enc_p, dec_p) in mnn_files.items():
        candidates[f"mnn {prec}"] = (prec, MNNBackend(enc_p, list(ENCODER_INPUTS), list(ENCODER_OUTPUTS), "high",
                                                                threads),
                                     MNNBackend(dec_p, dec_in, dec_out, "high", threads))
    cells: list[Cell] = []
    for label, (prec, enc, dec) in candidates.items():
        log(f"  parity: {label}")
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
