"""``edgesam parity``: the stage x format x precision matrix of a bundle against a reference.

The comparison is the one parity engine's (measure/parity_engine.py: encoder, decoder, end to end); this
module picks the reference and the candidates from the bundle. Runs on a board with only the base
install: without ONNX Runtime the reference falls back to MNN fp32 at runtime precision "high",
and the output says so.
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
from edgesam.measure import parity_engine as engine
from edgesam.measure.parity_engine import Contract, Runner
from edgesam.measure.parity import tolerance_key
from edgesam.runtime.backends import ARITHMETIC_PRECISIONS, openvino_low_arithmetic
from edgesam.synthetic.scenes import make_scene

SYNTHETIC_SIZES = ((683, 1024), (1024, 600), (300, 1000))  # landscape, portrait, panorama
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True, kw_only=True)
class ParityOptions:
    bundle: str
    images: tuple[str, ...] = ()  # files or folders; empty = three synthetic scenes
    reference: str = "onnx"  # "onnx" (ONNX Runtime fp32) or "torch" (needs the convert extra)
    checkpoint: Optional[str] = None  # for --reference torch on a checkpoint-made bundle
    runtime_precisions: tuple[str, ...] = ARITHMETIC_PRECISIONS
    # The one run setting shared with RunOptions. Not a RunOptions: the matrix runs every format and
    # precision in the bundle itself, so a backend, precision or int8 compute given here would do nothing.
    threads: Optional[int] = None  # None: every core


def _collect_images(paths: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    from edgesam.runtime.imageio import read_image

    if not paths:
        return [(f"synthetic {h}x{w}", make_scene(i, (h, w), style="gate").image)
                for i, (h, w) in enumerate(SYNTHETIC_SIZES)]
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    if not files:
        raise InputError(f"no JPEG/PNG/BMP images in {', '.join(paths)}")
    return [(str(f), read_image(f)) for f in files]


def _pair(bundle: Bundle, backend: str, precision: str, threads: int | None, runtime_precision: str = "high",
          int8_compute: str = "off"):
    """Encoder and decoder as the predictor opens them (tensor names from the manifest)."""
    from edgesam.runtime.predictor import open_backend

    return tuple(open_backend(bundle, role, backend, precision, threads, runtime_precision, int8_compute)
                 for role in ("encoder", "decoder"))


def _runner(bundle: Bundle, label: str, tolerance: str, backend: str, precision: str, threads: int | None,
            runtime_precision: str = "high", int8_compute: str = "off") -> Runner:
    return Runner(label, tolerance, lambda: _pair(bundle, backend, precision, threads, runtime_precision,
                                                  int8_compute))


# builds the torch reference of a bundle (edgesam.convert.reference.bundle_reference); injected by the
# caller so that this module, which runs on boards, never imports the converter
TorchReference = Callable[[Bundle, Optional[str]], Runner]


def _reference(bundle: Bundle, opts: ParityOptions, torch_reference: Optional[TorchReference]) -> Runner:
    if opts.reference == "torch":
        if torch_reference is None:
            raise BackendError("--reference torch needs the convert extra: pip install 'edgesam[convert]'")
        return torch_reference(bundle, opts.checkpoint)
    if opts.reference != "onnx":
        raise InputError(f"--reference must be onnx or torch, not {opts.reference!r}")
    if importlib.util.find_spec("onnxruntime") is not None:
        return _runner(bundle, "onnx fp32", "fp32", "ort", "fp32", opts.threads)
    # a board without onnxruntime: MNN fp32 in fp32 arithmetic stands in
    return _runner(bundle, "mnn fp32/high (onnxruntime not installed)", "fp32", "mnn", "fp32", opts.threads)


def _candidates(bundle: Bundle, opts: ParityOptions, ref_label: str, skipped: list[str]) -> list[Runner]:
    """A runner for every format x precision x runtime precision.

    OpenVINO always runs at f32 arithmetic, its fp16 IR judged as fp16 weights; where "low" is asked
    for, also at the plugin's choice (bf16 on CPUs with AVX512-BF16 or AMX), judged by that
    arithmetic's row ("normal" has no OpenVINO twin).
    A format whose package is not installed is listed in ``skipped``, not failed.
    """
    out = []
    if opts.reference == "torch":
        if importlib.util.find_spec("onnxruntime") is not None:
            out.append(_runner(bundle, "onnx fp32", "fp32", "ort", "fp32", opts.threads))
    for prec in bundle.precisions("mnn"):
        for rp in opts.runtime_precisions:
            label = f"mnn {prec}/{rp}"
            if ref_label.startswith(f"mnn {prec}/{rp}"):
                continue
            out.append(_runner(bundle, label, tolerance_key(prec, rp), "mnn", prec, opts.threads, rp))
            if prec == "int8":  # int8 arithmetic (MNN memory mode low): the default on ARM sdot/i8mm boards
                out.append(_runner(bundle, f"{label} i8", "int8", "mnn", prec, opts.threads, rp, "on"))
    low = None  # what OpenVINO's plugin computes in at "low", asked once
    for prec in bundle.precisions("openvino"):
        if importlib.util.find_spec("openvino") is None:  # a board without it: say so, don't fail
            skipped.append(f"openvino {prec}: openvino is not installed (pip install 'edgesam[openvino]')")
            continue
        low = low or openvino_low_arithmetic()
        for rp in ("high", "low") if "low" in opts.runtime_precisions else ("high",):
            label = f"openvino {prec}" + ("/low" if rp == "low" else "")
            out.append(_runner(bundle, label, tolerance_key(prec, rp, low), "openvino", prec, opts.threads, rp))
    return out


def parity_matrix(opts: ParityOptions, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                  torch_reference: Optional[TorchReference] = None) -> dict:
    """The parity matrix as a report: {"reference", "images", "cells": [...], "ok", "failures"}.
    ``torch_reference``: what builds the reference for ``opts.reference == "torch"``."""
    for rp in opts.runtime_precisions:
        if rp not in ARITHMETIC_PRECISIONS:
            raise InputError(f"runtime precision must be one of {', '.join(ARITHMETIC_PRECISIONS)}, not {rp!r}")
    bundle = load_bundle(opts.bundle, verify=True)
    images = _collect_images(opts.images)
    reference = _reference(bundle, opts, torch_reference)
    log(f"parity: reference {reference.label}, {len(images)} image(s)")
    skipped: list[str] = []
    candidates = _candidates(bundle, opts, reference.label, skipped)
    contract = Contract(bundle.spec.preprocess, bundle.spec.encoder, bundle.spec.decoder)
    report = engine.run_parity(reference, candidates, images, contract, log)
    for s in skipped:
        log(f"  not checked: {s}")
    return {"bundle": str(bundle.root), "model": bundle.model, "untrained": bundle.untrained,
            "reference": report.reference, "images": report.images, "ok": report.ok,
            "failures": report.failures, "skipped": skipped, "cells": [c.as_dict() for c in report.cells]}
