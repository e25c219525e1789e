"""``edgesam parity``: the stage x format x precision matrix of a bundle against a reference.

Stages: encoder embedding; decoder logits and scores (fed the *reference* embedding,
so each stage's error is its own); final masks at the original size (each candidate's
own embedding, decoder and upscale: what a user gets). Runs on a board with only
the base install: without ONNX Runtime the reference falls back to MNN fp32 at
runtime precision "high", and the output says so.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgesam.bundle import Bundle, load_bundle
from edgesam.errors import BackendError, InputError
from edgesam.runtime.backends import MNN_PRECISIONS, MNNBackend, OpenVINOBackend, ORTBackend
from edgesam.measure.parity import Cell, compare, tolerance_key, top_change_rate
from edgesam.runtime.postprocess import upscale_logits
from edgesam.runtime.preprocess import preprocess
from edgesam.synthetic.gate import prompt_set, scene
from edgesam.specs import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS

SYNTHETIC_SIZES = ((683, 1024), (1024, 600), (300, 1000))  # landscape, portrait, panorama
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True, kw_only=True)
class ParityOptions:
    bundle: str
    images: tuple[str, ...] = ()  # files or folders; empty = three synthetic scenes
    reference: str = "onnx"  # "onnx" (ONNX Runtime fp32) or "torch" (needs the convert extra)
    checkpoint: Optional[str] = None  # for --reference torch on a checkpoint-made bundle
    runtime_precisions: tuple[str, ...] = MNN_PRECISIONS
    # The one run setting shared with RunOptions. Not a RunOptions: the matrix runs every format and
    # precision in the bundle itself, so a backend, precision or int8 compute given here would do nothing.
    threads: Optional[int] = None  # None: every core


def _collect_images(paths: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    from edgesam.runtime.imageio import read_image

    if not paths:
        return [(f"synthetic {h}x{w}", scene(h, w, seed=i)) for i, (h, w) in enumerate(SYNTHETIC_SIZES)]
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    if not files:
        raise InputError(f"no JPEG/PNG/BMP images in {', '.join(paths)}")
    return [(str(f), read_image(f)) for f in files]


class _TorchReference:
    """The bundle's weights in torch, wrapped as two Backends (host with the convert extra only)."""

    def __init__(self, bundle: Bundle, checkpoint: Optional[str]):
        try:
            import torch

            from edgesam.convert import models
            from edgesam.convert.export import DecoderWrapper, EncoderWrapper
        except ImportError:
            raise BackendError("--reference torch needs the convert extra: pip install 'edgesam[convert]'") from None
        ck = bundle.manifest["checkpoint"]
        if "random_init_seed" in ck:
            sam = models.random_model(bundle.model, int(ck["random_init_seed"]))
        else:
            if not checkpoint:
                raise InputError("this bundle was made from a checkpoint: pass --checkpoint PATH for --reference torch")
            from edgesam.bundle import sha256_file

            if sha256_file(Path(checkpoint)) != ck.get("sha256"):
                raise InputError(f"{checkpoint}: sha256 differs from the checkpoint this bundle was made from")
            sam = models.model_from_checkpoint(bundle.model, checkpoint)
        self.torch, self.enc, self.dec = torch, EncoderWrapper(sam).eval(), DecoderWrapper(sam).eval()

    def encoder(self):
        return _TorchBackend(self.torch, self.enc, list(ENCODER_INPUTS), list(ENCODER_OUTPUTS))

    def decoder(self):
        return _TorchBackend(self.torch, self.dec, list(DECODER_INPUTS), list(DECODER_OUTPUTS))


class _TorchBackend:
    name = "torch"

    def __init__(self, torch, module, inputs, outputs):
        self.torch, self.module, self.inputs, self.outputs = torch, module, inputs, outputs

    def run(self, inputs):
        with self.torch.no_grad():
            outs = self.module(*(self.torch.from_numpy(inputs[k]) for k in self.inputs))
        outs = outs if isinstance(outs, tuple) else (outs,)
        return dict(zip(self.outputs, (o.numpy() for o in outs)))


def _reference(bundle: Bundle, opts: ParityOptions) -> tuple[str, object, object]:
    if opts.reference == "torch":
        ref = _TorchReference(bundle, opts.checkpoint)
        return "torch", ref.encoder(), ref.decoder()
    if opts.reference != "onnx":
        raise InputError(f"--reference must be onnx or torch, not {opts.reference!r}")
    try:
        return ("onnx fp32", ORTBackend(bundle.find("encoder", "onnx", "fp32"), opts.threads),
                ORTBackend(bundle.find("decoder", "onnx", "fp32"), opts.threads))
    except BackendError:  # a board without onnxruntime: MNN fp32 in fp32 arithmetic stands in
        return ("mnn fp32/high (onnxruntime not installed)", *_mnn_pair(bundle, "fp32", "high", opts.threads))


def _mnn_pair(bundle: Bundle, precision: str, runtime_precision: str, threads: int | None, memory: str = "normal"):
    enc = MNNBackend(bundle.find("encoder", "mnn", precision), list(ENCODER_INPUTS), list(ENCODER_OUTPUTS),
                     runtime_precision, threads, memory=memory)
    dec = MNNBackend(bundle.find("decoder", "mnn", precision), list(DECODER_INPUTS), list(DECODER_OUTPUTS),
                     runtime_precision, threads, memory=memory)
    return enc, dec


def _candidates(bundle: Bundle, opts: ParityOptions, ref_label: str, skipped: list[str]):
    """(label, tolerance key, encoder, decoder) for every format x precision x runtime precision.

    OpenVINO runs at f32 arithmetic only ("high"): its fp16 IR is judged as fp16 weights.
    A format whose package is not installed is listed in ``skipped``, not failed.
    """
    if opts.reference == "torch":
        try:
            yield ("onnx fp32", "fp32", ORTBackend(bundle.find("encoder", "onnx", "fp32"), opts.threads),
                   ORTBackend(bundle.find("decoder", "onnx", "fp32"), opts.threads))
        except BackendError:
            pass
    for prec in bundle.precisions("mnn"):
        for rp in opts.runtime_precisions:
            label = f"mnn {prec}/{rp}"
            if ref_label.startswith(f"mnn {prec}/{rp}"):
                continue
            yield (label, tolerance_key(prec, rp), *_mnn_pair(bundle, prec, rp, opts.threads))
            if prec == "int8":  # int8 arithmetic (MNN memory mode low): the default on ARM sdot/i8mm boards
                yield (f"{label} i8", "int8", *_mnn_pair(bundle, prec, rp, opts.threads, memory="low"))
    for prec in bundle.precisions("openvino"):
        if importlib.util.find_spec("openvino") is None:  # a board without it: say so, don't fail
            skipped.append(f"openvino {prec}: openvino is not installed (pip install 'edgesam[openvino]')")
            continue
        yield (f"openvino {prec}", prec, OpenVINOBackend(bundle.find("encoder", "openvino", prec), opts.threads),
               OpenVINOBackend(bundle.find("decoder", "openvino", prec), opts.threads, outputs=list(DECODER_OUTPUTS)))


def _stage_outputs(enc, dec, ref_emb_by_image, images, ref_feeds_by_image, is_reference: bool = False) -> dict:
    """Run one format over every image: embeddings, decoder outputs on the reference embedding,
    and final logits at the original size from its own embedding (the same run, for the reference)."""
    emb, logits, scores, final = [], [], [], []
    for (name, img), ref_emb, feeds in zip(images, ref_emb_by_image, ref_feeds_by_image):
        x, input_size = preprocess(img)
        own = ref_emb if is_reference else enc.run({"image": x})["image_embeddings"]
        emb.append(own)
        for case, f in feeds.items():
            out = dec.run(f)
            logits.append(out["low_res_masks"].ravel())
            scores.append(out["iou_predictions"])
            own_out = out if is_reference else dec.run(dict(f, image_embeddings=own))
            final.append(upscale_logits(own_out["low_res_masks"][:, 1:], input_size, img.shape[:2]).ravel())
    return {"emb": np.concatenate(emb), "logits": np.concatenate(logits), "scores": np.concatenate(scores),
            "final": np.concatenate(final)}


def run_parity(opts: ParityOptions, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """The parity matrix as a report: {"reference", "images", "cells": [...], "ok", "failures"}."""
    for rp in opts.runtime_precisions:
        if rp not in MNN_PRECISIONS:
            raise InputError(f"runtime precision must be one of {', '.join(MNN_PRECISIONS)}, not {rp!r}")
    bundle = load_bundle(opts.bundle, verify=True)
    images = _collect_images(opts.images)
    ref_label, ref_enc, ref_dec = _reference(bundle, opts)
    log(f"parity: reference {ref_label}, {len(images)} image(s)")
    ref_embs, ref_feeds = [], []
    for name, img in images:
        x, _ = preprocess(img)
        e = ref_enc.run({"image": x})["image_embeddings"]
        first = ref_dec.run(prompt_set(img.shape[:2], e, None)["point"])
        ref_embs.append(e)
        ref_feeds.append(prompt_set(img.shape[:2], e, first["low_res_masks"][:, 0]))
    ref = _stage_outputs(ref_enc, ref_dec, ref_embs, images, ref_feeds, is_reference=True)
    cells: list[Cell] = []
    skipped: list[str] = []
    for label, tol, enc, dec in _candidates(bundle, opts, ref_label, skipped):
        log(f"  {label}")
        got = _stage_outputs(enc, dec, ref_embs, images, ref_feeds)
        row = [compare("encoder", "image_embeddings", ref["emb"], got["emb"], tol, label, ref_label),
               compare("decoder", "low_res_masks", ref["logits"], got["logits"], tol, label, ref_label, "logits"),
               compare("decoder", "iou_predictions", ref["scores"], got["scores"], tol, label, ref_label, "scores"),
               compare("final", "masks", ref["final"], got["final"], tol, label, ref_label, "logits")]
        row[2].top_change_rate = top_change_rate(ref["scores"], got["scores"])
        cells.extend(row)
    failures = [f"{c.candidate} {c.stage} {c.output}: {'; '.join(c.failures)}" for c in cells if not c.ok]
    for s in skipped:
        log(f"  not checked: {s}")
    return {"bundle": str(bundle.root), "model": bundle.model, "untrained": bundle.untrained,
            "reference": ref_label, "images": [n for n, _ in images], "ok": not failures,
            "failures": failures, "skipped": skipped, "cells": [c.as_dict() for c in cells]}
