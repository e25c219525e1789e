"""``edgesam <command>``: a thin CLI. Each command passes its arguments by name to one
library function and imports heavy modules only inside that command.

Exit codes: 0 success, 1 a check failed, 2 bad input or usage (one line on stderr),
70 an internal bug (one line naming the traceback file), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import traceback
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from edgesam import __version__
from edgesam.errors import BackendError, EdgesamError, InputError

if TYPE_CHECKING:
    from edgesam.runtime.amg import AmgOptions
    from edgesam.runtime.options import RunOptions


class _Help(argparse.RawDescriptionHelpFormatter):
    """Each flag's help ends with its default where it has one; the epilog (examples) keeps its lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        shown_at_all = not any(d is v for v in (None, False, True)) and d != argparse.SUPPRESS
        if action.option_strings and shown_at_all and "default" not in text:
            shown = ",".join(map(str, d)) if isinstance(d, (list, tuple)) else d
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse prints usage + exits 2; keep it to one line
        raise InputError(f"{self.prog}: {message}")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _csv(kind: Callable = str) -> Callable[[str], list]:
    def parse(s: str) -> list:
        try:
            return [kind(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad list {s!r}") from None
    return parse


def _floats(n_allowed: tuple[int, ...]) -> Callable[[str], list[float]]:
    def parse(s: str) -> list[float]:
        try:
            vals = [float(x) for x in s.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {s!r}") from None
        if len(vals) not in n_allowed:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(map(str, n_allowed))} numbers, got {s!r}")
        return vals
    return parse


def _defaults(options_class: type) -> dict:
    """An options dataclass's field defaults: the flags read them, so each is written once."""
    return {f.name: f.default for f in fields(options_class) if f.default is not MISSING}


def write_json(dest: Optional[str], data: dict) -> None:
    if not dest:
        return
    text = json.dumps(data, indent=2, default=float) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        return
    from edgesam.bundle import atomic_write_bytes

    atomic_write_bytes(dest, text.encode())


INT8_COMPUTE_HELP = ("int8 files on MNN: on = int8 arithmetic (MNN memory mode low), off = weights expanded to "
                     "fp32 at load, auto (default) = on where MNN has ARM sdot/i8mm kernels")


# --- commands ---------------------------------------------------------------------------

def cmd_convert(a: argparse.Namespace) -> int:
    from edgesam.convert.pipeline import ConvertOptions, convert

    opts = ConvertOptions(model=a.model, out=Path(a.out),
                          checkpoint=Path(a.checkpoint) if a.checkpoint else None,
                          random_init=a.random_init, precisions=tuple(a.precision), decoder=a.decoder,
                          single_mask=a.single_mask, ort_sam2=a.ort_sam2, video=not a.no_video,
                          decoder_graph=a.decoder_graph,
                          opset=a.opset, simplify=not a.no_simplify, force=a.force, threads=a.threads,
                          mnn_gelu="exact" if a.exact_gelu else "fused",
                          formats=tuple(a.format))
    manifest = convert(opts)
    write_json(a.json, manifest)
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from edgesam.cli.info import bundle_summary, onnx_file_summary

    one_file = Path(a.bundle).suffix.lower() == ".onnx" and not Path(a.bundle).is_dir()
    text, data = (onnx_file_summary if one_file else bundle_summary)(a.bundle)
    if a.json != "-":
        print(text)
    write_json(a.json, data)
    return 0


def _summary_and_json(a: argparse.Namespace, result: dict) -> int:
    """Print a command's one-paragraph summary (unless its JSON goes to stdout) and write --json."""
    if a.json != "-":
        print(result["summary"])
    write_json(a.json, result)
    return 0


def cmd_segment(a: argparse.Namespace) -> int:
    if a.images or a.boxes or a.coco:
        from edgesam.dataset.commands import boxes_dataset

        if not (a.images and a.boxes and a.coco) or a.image or a.point or a.box:
            raise InputError("boxes to masks takes --images DIR --boxes DETECTIONS.json --coco OUT.json, "
                             "and no image, --point or --box")
        return _dataset_result(a, boxes_dataset(a.bundle, a.images, a.boxes, a.coco, run_options(a),
                                                engine=a.engine, workers=a.workers, progress=True,
                                                address=a.ray_address))
    if not a.image:
        raise InputError("segment needs an IMAGE (or --images DIR --boxes DETECTIONS.json --coco OUT.json)")
    from edgesam.cli.segment import SegmentRequest, segment

    req = SegmentRequest(bundle=a.bundle, image=a.image, points=a.point or [], boxes=a.box or [],
                         mask_input=a.mask_input, multimask=a.multimask, run=run_options(a),
                         out=a.out, overlay=a.overlay, npz=a.npz)
    return _summary_and_json(a, segment(req))


def cmd_track(a: argparse.Namespace) -> int:
    from edgesam.cli.track import TrackRequest, track

    req = TrackRequest(bundle=a.bundle, video=a.video, points=a.point or [], box=a.box, frame=a.frame, obj=a.obj,
                       prompts=a.prompts, run=run_options(a), out=a.out, mask_format=a.format, overlay=a.overlay)
    result = track(req)
    result["summary"] = (f"tracked {len(result['objects'])} object(s) through {result['frames']} frames "
                         f"({result['ms_per_frame']} ms a frame): masks in {result['out']} ({result['format']})"
                         + (f", overlay {result['overlay']}" if result["overlay"] else ""))
    return _summary_and_json(a, result)


def add_engine_arguments(p) -> None:
    from edgesam.dataset.engine import ENGINES

    p.add_argument("--engine", default="local", choices=list(ENGINES), help="who runs the images")
    p.add_argument("--workers", type=int, default=1,
                   help="processes (local) or Ray actors, each holding the bundle once; threads are the "
                        "cores shared out unless --threads")
    p.add_argument("--ray-address", metavar="ADDR", help="--engine ray: join this Ray cluster (default: a local Ray)")


def run_options(a: argparse.Namespace) -> RunOptions:
    """The --backend ... --int8-compute flags (see add_run_arguments) as RunOptions."""
    from edgesam.runtime.options import RunOptions

    return RunOptions(backend=a.backend, precision=a.precision, threads=a.threads,
                      runtime_precision=a.runtime_precision, decoder_runtime_precision=a.decoder_runtime_precision,
                      int8_compute=a.int8_compute)


def amg_options(a: argparse.Namespace) -> AmgOptions:
    """The ``everything`` generator flags as AmgOptions. --points-per-side defaults to None on the
    command line so that giving it with --point-grids can be refused; left out, AmgOptions' default holds."""
    from edgesam.runtime.amg import AmgOptions

    given = {f.name: getattr(a, f.name) for f in fields(AmgOptions)
             if f.name not in ("points_per_side", "point_grids")}
    if a.point_grids or a.points_per_side is not None:
        given["points_per_side"] = a.points_per_side  # None with --point-grids; both given: refused by everything()
    return AmgOptions(**given)


def _dataset_result(a: argparse.Namespace, result: dict) -> int:
    """Summary and --json of a dataset run; exit 1 if any image failed (the rest were done)."""
    _summary_and_json(a, result)
    return 1 if result["failed"] else 0


def cmd_everything(a: argparse.Namespace) -> int:
    from edgesam.dataset.inputs import is_dataset_input

    out_is_dir = bool(a.out) and (Path(a.out).is_dir() or a.out.endswith(("/", os.sep)))
    if is_dataset_input(a.inputs) or a.coco or out_is_dir or a.engine != "local" or a.workers != 1 or a.ray_address:
        from edgesam.dataset.commands import everything_dataset

        if not a.out:
            raise InputError("several images, a folder or a list need --out DIR (one .json per image)")
        if a.overlay:
            raise InputError("--overlay is for one image; the dataset form writes records (--out DIR, --coco)")
        if Path(a.out).suffix.lower() in (".json", ".npz") and not Path(a.out).is_dir():
            raise InputError(f"--out {a.out}: several images need a folder (one .json per image); "
                             "--coco FILE.json gathers them in one file")
        return _dataset_result(a, everything_dataset(
            a.bundle, a.inputs, a.out, amg_options(a), a.point_grids, run_options(a), coco=a.coco,
            engine=a.engine, workers=a.workers, progress=not a.quiet, address=a.ray_address))
    from edgesam.cli.everything import EverythingRequest, everything

    req = EverythingRequest(bundle=a.bundle, image=a.inputs[0], options=amg_options(a), point_grids=a.point_grids,
                            run=run_options(a), out=a.out, overlay=a.overlay, progress=not a.quiet)
    return _summary_and_json(a, everything(req))


def cmd_parity(a: argparse.Namespace) -> int:
    from edgesam.measure.parity import Cell, format_table
    from edgesam.measure.paritymatrix import ParityOptions, parity_matrix

    torch_reference = None
    if a.reference == "torch":  # the converter (torch) only when asked for
        try:
            from edgesam.convert.reference import bundle_reference as torch_reference
        except ImportError:
            raise BackendError("--reference torch needs the convert extra: pip install 'edgesam[convert]'") from None
    report = parity_matrix(ParityOptions(bundle=a.bundle, images=tuple(a.images or ()), reference=a.reference,
                                         checkpoint=a.checkpoint, runtime_precisions=tuple(a.runtime_precision),
                                         threads=a.threads), torch_reference=torch_reference)
    if a.json != "-":
        cells = [Cell(**{k: v for k, v in c.items() if k != "ok"}) for c in report["cells"]]
        print(f"reference: {report['reference']}; images: {', '.join(report['images'])}"
              + ("  [untrained model]" if report["untrained"] else ""))
        print(format_table(cells))
    write_json(a.json, report)
    if not report["ok"]:
        from edgesam.errors import ParityError

        raise ParityError(f"{len(report['failures'])} cell(s) out of tolerance: " + " | ".join(report["failures"]))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from edgesam.measure.bench import BenchOptions, compare_reports, format_bench, run_bench

    if a.compare:
        print(compare_reports(a.compare))
        return 0
    if not a.bundle:
        raise InputError("bench needs a BUNDLE (or --compare A.json B.json)")
    report = run_bench(BenchOptions(bundle=a.bundle, image=a.image, backends=tuple(a.backend),
                                    precisions=tuple(a.precision), runtime_precisions=tuple(a.runtime_precision),
                                    threads=tuple(a.threads) if a.threads else None, runs=a.runs,
                                    warmup=a.warmup, batch=a.batch, int8_compute=tuple(a.int8_compute)))
    if a.json != "-":
        print(format_bench(report))
    write_json(a.json, report)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from edgesam.serve import LOOPBACK, TOKEN_ENV, ServeOptions, make_server

    token = a.token or os.environ.get(TOKEN_ENV) or None
    server = make_server(ServeOptions(bundle=a.bundle, host=a.host, port=a.port, run=run_options(a), token=token,
                                      max_images=a.max_images))
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"edgesam serve: http://{shown}:{port}/" + (f"?token={token}" if token else ""), flush=True)
    if a.host not in LOOPBACK:
        print(f"note: listening on {a.host}: the page and its API are reachable from the network"
              + ("" if token else " (no --token: anyone who reaches it can use it)"), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from edgesam.cli.demo import run_demo

    report = run_demo(out=Path(a.out), checkpoint=Path(a.checkpoint) if a.checkpoint else None,
                      seed=a.seed, threads=a.threads, untrained=a.untrained, model=a.model)
    write_json(a.json, report)
    return 0 if report["parity_ok"] else 1


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --precision, --runtime-precision, --decoder-runtime-precision, --threads and
    --int8-compute, defaulting to RunOptions' defaults (read by run_options), in their own group."""
    from edgesam.runtime.backends import BACKEND_TABLE, INT8_COMPUTE, ARITHMETIC_PRECISIONS
    from edgesam.runtime.options import RunOptions

    run = _defaults(RunOptions)
    p = parser.add_argument_group("how the bundle runs")
    p.add_argument("--backend", default=run["backend"], choices=list(BACKEND_TABLE), help="runtime for both models")
    p.add_argument("--precision", default=run["precision"], help="model precision in the bundle: fp32, fp16, int8")
    p.add_argument("--runtime-precision", default=run["runtime_precision"], choices=list(ARITHMETIC_PRECISIONS),
                   help="arithmetic: low = fp16 for MNN on ARMv8.2+, the plugin's choice for OpenVINO "
                        "(bf16 on CPUs with AVX-512 BF16 or AMX)")
    p.add_argument("--decoder-runtime-precision", choices=list(ARITHMETIC_PRECISIONS),
                   default=run["decoder_runtime_precision"],
                   help="the decoder's (SAM 2 video: the tracking decoder's), if different "
                        "(e.g. low encoder, high decoder)")
    p.add_argument("--threads", type=int, default=run["threads"], help="CPU threads (default: every core)")
    p.add_argument("--int8-compute", default=run["int8_compute"], choices=list(INT8_COMPUTE), help=INT8_COMPUTE_HELP)


def build_parser() -> argparse.ArgumentParser:
    from edgesam.cli.everything import OUTPUT_MODE
    from edgesam.convert.pipeline import ConvertOptions  # no torch at import
    from edgesam.manifest import DECODER_GRAPHS
    from edgesam.manifest import VARIANTS as DECODER_VARIANTS
    from edgesam.measure.bench import BenchOptions
    from edgesam.measure.paritymatrix import ParityOptions
    from edgesam.runtime.amg import OUTPUT_MODES, AmgOptions

    p = _Parser(prog="edgesam", description="Segment Anything on edge devices: convert, run, check, measure.",
                epilog=_examples("edgesam demo", "edgesam convert --model vit_t --checkpoint mobile_sam.pt --out bundle/",
                                 "edgesam segment bundle/ photo.jpg --point 500,375 --overlay over.png",
                                 "edgesam <command> --help"))
    p.add_argument("--version", action="version", version=f"edgesam {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    conv = _defaults(ConvertOptions)
    c = sub.add_parser("convert", help="checkpoint -> verified ONNX/MNN bundle",
                       description="Convert a checkpoint into a bundle: ONNX, MNN and OpenVINO files and a manifest, "
                                   "written only after the parity gate passes.",
                       epilog=_examples("edgesam convert --model vit_t --checkpoint mobile_sam.pt --out bundle/",
                                        "edgesam convert --model vit_b --checkpoint sam_vit_b_01ec64.pth --out b/ "
                                        "--precision fp32,fp16",
                                        "edgesam convert --model sam2.1_hiera_t --checkpoint sam2.1_hiera_tiny.pt "
                                        "--out b2/ --format onnx,mnn,openvino"))
    from edgesam.specs import MODELS

    c.add_argument("--model", required=True, choices=[n for n, m in MODELS.items() if m.user_visible],
                   help="which model the checkpoint is")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="official state_dict (.pt/.pth), loaded with weights_only=True")
    src.add_argument("--random-init", type=int, metavar="SEED", help="seeded random weights (untrained)")
    c.add_argument("--out", required=True, help="the bundle folder to write")
    c.add_argument("--precision", type=_csv(), default=list(conv["precisions"]), help="comma list of fp32,fp16,int8")
    c.add_argument("--format", type=_csv(), default=list(conv["formats"]),
                   help="comma list: onnx,mnn,openvino,tensorrt (tensorrt = checked ONNX, profile and trtexec "
                        "lines; engines are built on the device)")
    c.add_argument("--decoder", default=conv["decoder"], choices=DECODER_VARIANTS,
                   help="lowres: scores and low-res logits (edgesam's runtime); full: segment-anything's "
                        "SamOnnxModel contract, for other tools")
    c.add_argument("--single-mask", action="store_true",
                   help="with --decoder full: decoder.onnx returns one mask per prompt, picked as the official "
                        "SamOnnxModel(return_single_mask=True) does (the official notebook's export); edgesam's "
                        "runtime uses the bundle's MNN/OpenVINO files, which keep all four")
    c.add_argument("--ort-sam2", action="store_true",
                   help="SAM 2 models: also follow ONNX Runtime's SAM 2 scripts' contract (encoder.onnx gains "
                        "their output names; ort_image_decoder.onnx and ort_image_decoder_multi.onnx are added, "
                        "gated against the official SAM2ImagePredictor)")
    c.add_argument("--no-video", action="store_true",
                   help="SAM 2 models: leave out the video graphs (memory attention, memory encoder, tracking "
                        "decoder) that `edgesam track` and SAM2VideoPredictor run: an image-only bundle")
    c.add_argument("--decoder-graph", default=conv["decoder_graph"], choices=DECODER_GRAPHS,
                   help="folded: the official function with its projections folded onto the prompt tokens "
                        "(2.1 instead of 3.7 GFLOP a prompt on vit_t); reference: the official step-by-step graph")
    c.add_argument("--opset", type=int, default=conv["opset"], help="ONNX opset")
    c.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    c.add_argument("--force", action="store_true", help="replace an existing --out")
    c.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    c.add_argument("--exact-gelu", action="store_true",
                   help="MNN files always compute GELU exactly (a rewritten graph; vit_t's encoder 1.4x slower). "
                        "Default: MNN's fused GELU kernel wherever the parity gate holds, exact elsewhere")
    c.add_argument("--json", metavar="FILE", help="the manifest, also here ('-': stdout)")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="verify every file hash and summarise a bundle, or show what one .onnx "
                                    "file is (its metadata_props, inputs and outputs)",
                       epilog=_examples("edgesam info bundle/", "edgesam info bundle/decoder.onnx"))
    i.add_argument("bundle", help="a bundle folder, or an .onnx file")
    i.add_argument("--json", metavar="FILE", help="the summary as JSON ('-': stdout)")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("segment", help="segment one image with point/box prompts, or turn a COCO file's "
                                       "boxes into masks (--images, --boxes, --coco)",
                       description="Segment one image with points and boxes (original-image pixels, x before y), "
                                   "or give every box of a COCO detection file its mask.",
                       epilog=_examples("edgesam segment bundle/ photo.jpg --point 500,375 --out mask.png "
                                        "--overlay over.png",
                                        "edgesam segment bundle/ photo.jpg --box 425,600,700,875 --point 575,750,0 "
                                        "--npz out.npz",
                                        "edgesam segment bundle/ --images val2017/ --boxes detections.json "
                                        "--coco segm.json --workers 2"))
    s.add_argument("bundle", help="the bundle folder")
    s.add_argument("image", nargs="?", help="JPEG, PNG or BMP (grey, RGB or RGBA)")
    pr = s.add_argument_group("prompts")
    pr.add_argument("--point", action="append", type=_floats((2, 3)), metavar="X,Y[,LABEL]",
                    help="a point, label 1 (object, the default) or 0 (background); repeat for more")
    pr.add_argument("--box", action="append", type=_floats((4,)), metavar="X0,Y0,X1,Y1",
                    help="a box; several boxes give one mask each")
    pr.add_argument("--mask-input", metavar="FILE.npy", help="1x256x256 low-res logits of an earlier prediction")
    pr.add_argument("--multimask", action="store_true", help="three masks per prompt, as multimask_output=True")
    add_run_arguments(s)
    o = s.add_argument_group("output")
    o.add_argument("--out", metavar="MASK.png", help="the best mask as a PNG")
    o.add_argument("--overlay", metavar="OUT.png", help="the masks tinted over the image")
    o.add_argument("--npz", metavar="FILE.npz", help="masks (bool CxHxW), scores (C), low_res_logits (Cx256x256)")
    o.add_argument("--json", metavar="FILE", help="summary: scores, areas, boxes, timings ('-': stdout)")
    ds = s.add_argument_group("dataset form (--images, --boxes, --coco)")
    ds.add_argument("--images", metavar="DIR", help="the folder the detection file's file_names are relative to")
    ds.add_argument("--boxes", metavar="DETECTIONS.json", help="COCO file with 'images' and 'annotations' (bbox XYWH)")
    ds.add_argument("--coco", metavar="OUT.json", help="the annotations written back with 'segmentation' (RLE) "
                                                       "added; per-image parts in OUT.json.parts/ make a rerun resume")
    add_engine_arguments(ds)
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("everything", help="automatic mask generation (segment everything) on one image, or on "
                                          "many (images, folders, list files) with --out DIR",
                       description="Segment everything: the official automatic mask generator's options and records, "
                                   "on one image or (with --out DIR) on many.",
                       epilog=_examples("edgesam everything bundle/ photo.jpg --out masks.json --overlay all.png",
                                        "edgesam everything bundle/ photo.jpg --points-per-side 16 --crop-n-layers 1 "
                                        "--out masks.json",
                                        "edgesam everything bundle/ photos/ --out masks/ --coco masks/instances.json "
                                        "--workers 2"))
    e.add_argument("bundle", help="the bundle folder")
    e.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="an image; or several, folders (searched recursively) and .txt lists of images, with --out DIR")
    amg = _defaults(AmgOptions)
    from edgesam.manifest import AMG_DEFAULTS

    g = e.add_argument_group("the generator (the official keywords)")
    g.add_argument("--points-per-side", type=int, default=None,
                   help=f"grid points per side (default: {amg['points_per_side']})")
    g.add_argument("--point-grids", metavar="FILE.npy", help="Nx2 or LxNx2 points in [0,1], one grid per crop layer")
    g.add_argument("--points-per-batch", type=int, default=amg["points_per_batch"], help="prompts per decoder call")
    g.add_argument("--pred-iou-thresh", type=float, default=None,
                   help=f"keep masks whose predicted IoU is above this (default: the bundle's, its family's official "
                        f"one: {AMG_DEFAULTS['sam']['pred_iou_thresh']} SAM and MobileSAM, "
                        f"{AMG_DEFAULTS['sam2']['pred_iou_thresh']} SAM 2)")
    g.add_argument("--stability-score-thresh", type=float, default=amg["stability_score_thresh"],
                   help="keep masks at least this stable")
    g.add_argument("--stability-score-offset", type=float, default=amg["stability_score_offset"],
                   help="logit offset of the stability score")
    g.add_argument("--box-nms-thresh", type=float, default=amg["box_nms_thresh"], help="box IoU for NMS in a crop")
    g.add_argument("--crop-n-layers", type=int, default=amg["crop_n_layers"], help="layers of image crops")
    g.add_argument("--crop-nms-thresh", type=float, default=amg["crop_nms_thresh"], help="box IoU for NMS across crops")
    g.add_argument("--crop-overlap-ratio", type=float, default=amg["crop_overlap_ratio"], help="crop overlap")
    g.add_argument("--crop-n-points-downscale-factor", type=int, default=amg["crop_n_points_downscale_factor"],
                   help="grid points per side divided by this in each crop layer")
    g.add_argument("--min-mask-region-area", type=int, default=amg["min_mask_region_area"],
                   help="remove holes and islands smaller than this (pixels)")
    g.add_argument("--mask-threshold", type=float, default=amg["mask_threshold"],
                   help="SAM 2's generator keyword (default: the bundle's mask threshold)")
    g.add_argument("--use-m2m", action="store_true", help="SAM 2's one refinement step of every mask")
    g.add_argument("--no-multimask-output", dest="multimask_output", action="store_false",
                   help="one mask per grid point (SAM 2's multimask_output=False)")
    add_run_arguments(e)
    o = e.add_argument_group("output")
    o.add_argument("--output-mode", default=OUTPUT_MODE, choices=list(OUTPUT_MODES),
                   help="records in --out: RLE in a .json file, or binary masks in a .npz")
    o.add_argument("--out", metavar="masks.json", help="the records (official keys); a folder for many images")
    o.add_argument("--overlay", metavar="OUT.png", help="every mask tinted over the image")
    o.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    o.add_argument("--json", metavar="FILE", help="summary: counts, areas, boxes, scores, timings ('-': stdout)")
    ds = e.add_argument_group("dataset form (--out DIR)")
    ds.add_argument("--coco", metavar="FILE.json", help="one COCO instances file of every image's masks")
    add_engine_arguments(ds)
    e.set_defaults(func=cmd_everything)

    q = sub.add_parser("parity", help="stage x format x precision parity matrix of a bundle",
                       epilog=_examples("edgesam parity bundle/", "edgesam parity bundle/ --images photos/ --json -",
                                        "edgesam parity bundle/ --reference torch --checkpoint mobile_sam.pt"))
    q.add_argument("bundle", help="the bundle folder")
    q.add_argument("--images", nargs="+", metavar="PATH", help="image files or folders (default: synthetic scenes)")
    parity = _defaults(ParityOptions)
    q.add_argument("--reference", default=parity["reference"], choices=["onnx", "torch"],
                   help="what every file is compared with (torch needs the convert extra)")
    q.add_argument("--checkpoint", help="with --reference torch, for a bundle made from a checkpoint")
    q.add_argument("--runtime-precision", type=_csv(), default=list(parity["runtime_precisions"]),
                   help="MNN arithmetic precisions to check (high,normal,low)")
    q.add_argument("--threads", type=int, default=parity["threads"], help="CPU threads (default: every core)")
    q.add_argument("--json", metavar="FILE", help="every cell as JSON ('-': stdout)")
    q.set_defaults(func=cmd_parity)

    bn = sub.add_parser("bench", help="per-stage latency, swept over backends/precisions/threads",
                        epilog=_examples("edgesam bench bundle/ --backend mnn,ort --precision fp32,fp16 --threads 1,2,4",
                                         "edgesam bench --compare pi5.json jetson.json"))
    bn.add_argument("bundle", nargs="?", help="the bundle folder")
    bn.add_argument("--image", help="JPEG/PNG/BMP (default: a synthetic 600x400 image)")
    bench = _defaults(BenchOptions)
    bn.add_argument("--backend", type=_csv(), default=list(bench["backends"]), help="comma list: mnn,ort,openvino "
                    "(tensorrt: only where the tensorrt package imports)")
    bn.add_argument("--precision", type=_csv(), default=list(bench["precisions"]),
                    help="model precisions: fp32,fp16,int8")
    bn.add_argument("--runtime-precision", type=_csv(), default=list(bench["runtime_precisions"]),
                    help="MNN arithmetic: high,normal,low")
    bn.add_argument("--int8-compute", type=_csv(), default=list(bench["int8_compute"]),
                    help="int8 files on MNN: comma list of auto,on,off (on = int8 arithmetic)")
    bn.add_argument("--threads", type=_csv(int), default=bench["threads"],
                    help="comma list, e.g. 1,2,4 (default: every core)")
    bn.add_argument("--runs", type=int, default=bench["runs"], help="timed runs per configuration")
    bn.add_argument("--warmup", type=int, default=bench["warmup"], help="untimed runs first")
    bn.add_argument("--batch", type=int, default=bench["batch"], help="prompts in the batched decoder stage")
    bn.add_argument("--compare", nargs="+", metavar="JSON", help="print bench JSON files side by side")
    bn.add_argument("--json", metavar="FILE", help="every figure and the machine as JSON ('-': stdout)")
    bn.set_defaults(func=cmd_bench)

    tr = sub.add_parser("track", help="follow objects prompted on a frame through a clip (SAM 2 bundles)",
                        description="Prompt objects on a frame of a clip (a folder of JPEG frames named by index, "
                                    "or a video file through OpenCV) and track them through it with SAM 2's "
                                    "memory, as the official SAM2VideoPredictor does. Points and boxes are in "
                                    "frame pixels, x before y.",
                        epilog=_examples("edgesam track bundle/ frames/ --point 320,240 --out masks/ "
                                         "--overlay overlay.mp4",
                                         "edgesam track bundle/ clip.mp4 --box 100,80,300,260 --frame 10 --obj 2 "
                                         "--out masks/ --format coco",
                                         "edgesam track bundle/ frames/ --prompts prompts.json --out masks/"))
    tr.add_argument("bundle", help="a SAM 2 / 2.1 bundle with video graphs")
    tr.add_argument("video", help="a folder of JPEG frames (00000.jpg, 00001.jpg, ...) or a video file")
    pr = tr.add_argument_group("prompts")
    pr.add_argument("--point", action="append", type=_floats((2, 3)), metavar="X,Y[,LABEL]",
                    help="a point, label 1 (object, the default) or 0 (background); repeat for more")
    pr.add_argument("--box", type=_floats((4,)), metavar="X0,Y0,X1,Y1", help="a box")
    pr.add_argument("--frame", type=int, default=0, help="the frame the prompt is on (default 0)")
    pr.add_argument("--obj", type=int, default=1, help="the object's id (default 1)")
    pr.add_argument("--prompts", metavar="FILE.json", help='several objects: [{"frame": 0, "obj": 1, "points": '
                    '[[x, y]], "labels": [1]}, {"frame": 4, "obj": 2, "box": [x0, y0, x1, y1]}]')
    add_run_arguments(tr)
    o = tr.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the masks")
    o.add_argument("--format", default="png", choices=["png", "coco"],
                   help="png: DIR/obj{ID}/{frame}.png; coco: DIR/{frame}.json, {obj id: COCO RLE}")
    o.add_argument("--overlay", metavar="OUT.mp4", help="the masks tinted over the clip (OpenCV; without it, PNG "
                                                         "frames in DIR/overlay/)")
    o.add_argument("--json", metavar="FILE", help="summary: frames, objects, timings ('-': stdout)")
    tr.set_defaults(func=cmd_track)

    sv = sub.add_parser("serve", help="a browser page and an HTTP API that segment images with a bundle",
                        description="Serve a page to click on images and see the masks, with its JSON API "
                                    "(docs/serve.md). Loopback only unless --host says otherwise.",
                        epilog=_examples("edgesam serve bundle/", "edgesam serve bundle/ --host 0.0.0.0 --port 8080 "
                                         "--token s3cret --precision fp16"))
    sv.add_argument("bundle", help="the bundle folder")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network interface)")
    sv.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    sv.add_argument("--token", help="the page and every API call need it (default: $EDGESAM_SERVE_TOKEN, else none)")
    sv.add_argument("--max-images", type=int, default=8,
                    help="embedded images kept; the least recently used is dropped")
    add_run_arguments(sv)
    sv.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="build, convert, check and run the built-in default model",
                       epilog=_examples("edgesam demo", "edgesam demo --checkpoint mobile_sam.pt --out demo-official"))
    d.add_argument("--out", default="edgesam-demo", help="where the bundle, overlays and report go")
    d.add_argument("--model", default="vit_t", choices=[n for n, m in MODELS.items() if m.user_visible],
                   help="the model to convert and run (vit_t: the built-in demo model; any other needs "
                        "--checkpoint or --untrained)")
    d.add_argument("--checkpoint", help="a vit_t state_dict to use instead of the built-in model "
                   "(assets/demo_vit_t.pt, trained on synthetic shapes)")
    d.add_argument("--untrained", action="store_true", help="seeded random weights instead of the built-in model")
    d.add_argument("--seed", type=int, default=0, help="seed for --untrained")
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    d.add_argument("--json", metavar="FILE", help="the report as JSON ('-': stdout)")
    d.set_defaults(func=cmd_demo)
    return p


def _on_sigterm(signum, frame):  # turn SIGTERM into KeyboardInterrupt so cleanup handlers run
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    from edgesam.runtime import _mnn

    _mnn.QUIET = True  # this program owns stdout (--json -): MNN's import banner is kept off it
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        # answered before the parser is built: its defaults come from dataclasses that import numpy
        print(f"edgesam {__version__}")
        return 0
    try:
        args = build_parser().parse_args(argv)
        dest = getattr(args, "json", None)
        if dest and dest != "-":  # an unwritable --json fails before the work, not after it
            from edgesam.bundle import check_writable_file

            check_writable_file(dest)
        rc = args.func(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is the except below
        return rc
    except EdgesamError as e:
        print(f"edgesam: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgesam: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout's reader left (`edgesam info B | head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not raise again
        return 141  # 128 + SIGPIPE, the shell's code for a writer whose pipe closed
    except Exception:  # a bug: keep the traceback, but in a file, and say where
        fd, path = tempfile.mkstemp(prefix="edgesam-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        etype = sys.exc_info()[0].__name__
        print(f"edgesam: internal error ({etype}); please report it with the traceback in {path}",
              file=sys.stderr)
        return 70

