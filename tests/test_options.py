"""Options objects: keyword-only, frozen, defaults written once and checked where they are read."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from edgesam.cli import amg_options, build_parser, run_options
from edgesam.errors import InputError
from edgesam.runtime.amg import (SAM2_DEFAULTS, SAM2_ONLY, AmgOptions, SAM2AutomaticMaskGenerator,
                                 SamAutomaticMaskGenerator)
from edgesam.runtime.options import RunOptions


def _values(opts) -> dict:
    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}


def _signature_defaults(func) -> dict:
    return {k: p.default for k, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_amg_options_are_keyword_only():
    with pytest.raises(TypeError):
        AmgOptions(32)
    with pytest.raises(TypeError):
        AmgOptions(32, 64, 0.88, 0.95, 1.0, 0.7, 0, 0.7, 512 / 1500, 1, None, 0, "binary_mask")
    assert AmgOptions(points_per_side=16).points_per_side == 16


def _sam_values(opts) -> dict:
    """AmgOptions' fields that SAM's generator takes (the others are SAM 2's generator's own)."""
    return {k: v for k, v in _values(opts).items() if k not in SAM2_ONLY}


def test_generator_signature_defaults_are_amg_options():
    sig = _signature_defaults(SamAutomaticMaskGenerator.__init__)
    sig.pop("progress")  # ours only: a callback, not a generator option
    assert sig == _sam_values(AmgOptions())
    sig2 = _signature_defaults(SAM2AutomaticMaskGenerator.__init__)
    sig2.pop("progress")
    assert sig2 == _values(SAM2_DEFAULTS)


def test_sam2_generator_defaults_are_the_official_ones():
    pytest.importorskip("sam2")
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Official

    official = _signature_defaults(Official.__init__)
    assert official == _values(SAM2_DEFAULTS)


def test_everything_cli_defaults_are_amg_options():
    a = build_parser().parse_args(["everything", "bundle", "image.png"])
    got = _values(amg_options(a))
    # The deliberate differences: the CLI writes records to a file, RLE in JSON by default, and
    # leaves --pred-iou-thresh to the bundle's family (0.88 for SAM, 0.8 for SAM 2: everything()).
    assert got.pop("output_mode") == "coco_rle"
    assert got.pop("pred_iou_thresh") is None
    want = _values(AmgOptions())
    want.pop("output_mode")
    want.pop("pred_iou_thresh")
    assert got == want


def test_amg_defaults_are_the_official_ones():
    sa = pytest.importorskip("segment_anything")
    official = _signature_defaults(sa.SamAutomaticMaskGenerator.__init__)
    ours = _sam_values(AmgOptions())
    assert set(official) == set(ours)
    assert official == ours
    cli = _sam_values(amg_options(build_parser().parse_args(["everything", "bundle", "image.png"])))
    assert {k: v for k, v in cli.items() if k not in ("output_mode", "pred_iou_thresh")} == \
        {k: v for k, v in official.items() if k not in ("output_mode", "pred_iou_thresh")}


def test_run_options_defaults_are_the_predictors():
    from edgesam.runtime.predictor import SamPredictor

    sig = _signature_defaults(SamPredictor.__init__)
    assert sig == _values(RunOptions())  # same names and defaults: predictor() passes them through
    from edgesam.runtime.sam2_predictor import SAM2ImagePredictor

    sig2 = _signature_defaults(SAM2ImagePredictor.__init__)
    assert {k: sig2[k] for k in _values(RunOptions())} == _values(RunOptions())
    assert sig2["mask_threshold"] is None  # left out: the bundle's (manifest) threshold


@pytest.mark.parametrize("command", [["segment", "b", "i.png"], ["everything", "b", "i.png"]])
def test_cli_run_flags_default_to_run_options(command):
    assert run_options(build_parser().parse_args(command)) == RunOptions()
    given = build_parser().parse_args(command + ["--backend", "ort", "--threads", "3", "--runtime-precision", "low",
                                                 "--decoder-runtime-precision", "high", "--int8-compute", "off"])
    assert run_options(given) == RunOptions(backend="ort", threads=3, runtime_precision="low",
                                            decoder_runtime_precision="high", int8_compute="off")


def test_run_options_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        RunOptions("mnn")
    run = RunOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.threads = 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(backend="tflite"), "backend must be one of mnn, ort, openvino, tensorrt, not 'tflite'"),
    (dict(threads=0), "threads must be an integer >= 1"),
    (dict(threads=1.5), "threads must be an integer >= 1"),
    (dict(runtime_precision="fp16"), "runtime precision must be one of high, normal, low"),
    (dict(decoder_runtime_precision="max"), "decoder runtime precision must be one of"),
    (dict(interpolation="cubic"), "interpolation must be one of pyramid, linear"),
    (dict(int8_compute="yes"), "int8 compute must be one of auto, on, off"),
    (dict(backend="ort", precision="int8"), "backend 'ort' runs the fp32 ONNX models only"),
])
def test_bad_run_options_are_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        RunOptions(**kwargs)


def test_predictor_kwargs_name_the_predictors_keywords():
    run = RunOptions(backend="openvino", precision="fp16", threads=2, runtime_precision="low",
                     decoder_runtime_precision="high", interpolation="linear", int8_compute="on")
    assert run.predictor_kwargs() == {"backend": "openvino", "precision": "fp16", "threads": 2,
                                      "runtime_precision": "low", "decoder_runtime_precision": "high",
                                      "interpolation": "linear", "int8_compute": "on"}


def test_requests_compose_run_options_and_are_keyword_only():
    from edgesam.cli.everything import EverythingRequest
    from edgesam.cli.segment import SegmentRequest

    for cls in (SegmentRequest, EverythingRequest):
        names = {f.name for f in dataclasses.fields(cls)}
        assert "run" in names and not names & {"backend", "precision", "threads", "int8_compute"}
        with pytest.raises(TypeError):
            cls("bundle", "image.png")
        req = cls(bundle="b", image="i.png")
        assert req.run == RunOptions()
        with pytest.raises(dataclasses.FrozenInstanceError):
            req.image = "j.png"
    assert EverythingRequest(bundle="b", image="i.png").options.output_mode == "coco_rle"


def test_bench_and_parity_options_keyword_only_with_cli_defaults():
    from edgesam.measure.bench import BenchOptions
    from edgesam.measure.paritymatrix import ParityOptions

    for cls in (BenchOptions, ParityOptions):
        with pytest.raises(TypeError):
            cls("bundle")
    bench = BenchOptions(bundle="b")
    a = build_parser().parse_args(["bench", "b"])
    assert (tuple(a.backend), tuple(a.precision), tuple(a.runtime_precision), tuple(a.int8_compute)) == \
        (bench.backends, bench.precisions, bench.runtime_precisions, bench.int8_compute)
    assert (a.threads, a.runs, a.warmup, a.batch) == (bench.threads, bench.runs, bench.warmup, bench.batch)
    parity = ParityOptions(bundle="b")
    q = build_parser().parse_args(["parity", "b"])
    assert (q.reference, tuple(q.runtime_precision), q.threads) == \
        (parity.reference, parity.runtime_precisions, parity.threads)


@pytest.mark.parametrize("kwargs,match", [
    (dict(backends=("mnn", "tflite")), "backend must be one of mnn, ort, openvino, tensorrt, not 'tflite'"),
    (dict(backends=()), "--backend needs at least one value"),
    (dict(runtime_precisions=("high", "fp16")), "runtime precision must be one of high, normal, low"),
    (dict(int8_compute=("auto", "yes")), "int8 compute must be one of auto, on, off"),
    (dict(threads=(1, 0)), "threads must be an integer >= 1"),
    (dict(runs=0), "--runs and --batch must be >= 1"),
])
def test_bench_values_checked_like_run_options(kwargs, match):
    from edgesam.measure.bench import BenchOptions

    with pytest.raises(InputError, match=match):
        BenchOptions(bundle="b", **kwargs).validate()


def test_every_flag_is_documented_and_every_command_has_examples():
    """`edgesam CMD --help` reads as a reference: a help line for every flag, its default shown where it
    has one, and examples at the end."""
    import argparse

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "examples:" in parser.format_help()
    for name, sp in subs.choices.items():
        text = sp.format_help()
        assert text.rstrip().splitlines()[-1].startswith("  edgesam "), (name, text[-300:])
        for action in sp._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
    segment = subs.choices["segment"].format_help()
    assert "(default: mnn)" in segment and "(default: fp32)" in segment and "(default: 1)" in segment
