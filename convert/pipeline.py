"""``edgesam convert``: checkpoint -> ONNX -> MNN bundle, written only if parity holds."""
from __future__ import annotations

import contextlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, TypeVar

from edgesam import __version__
from edgesam.bundle import FORMAT, VERSION, atomic_dir, check_out_dir, file_record, sha256_file, write_manifest
from edgesam.errors import InputError, ParityError
from edgesam.manifest import DECODER_GRAPHS, PRECISIONS
from edgesam.manifest import VARIANTS as DECODER_VARIANTS
from edgesam.specs import get_spec

FORMATS = ("onnx", "mnn", "openvino", "tensorrt")  # tensorrt = checked ONNX + profile + trtexec lines
MNN_GELU = ("fused", "exact")
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    model: str
    out: Path
    checkpoint: Optional[Path] = None
    random_init: Optional[int] = None
    precisions: tuple[str, ...] = PRECISIONS
    decoder: str = "lowres"
    # --decoder full only: decoder.onnx returns the one mask SamOnnxModel(return_single_mask=True)
    # picks (the official notebook's export); the bundle's other formats keep all four tokens
    single_mask: bool = False
    # SAM 2 only: also ONNX Runtime's SAM 2 scripts' contract (convert/sam2_ort.py)
    ort_sam2: bool = False
    decoder_graph: str = "folded"  # or "reference" (the official steps); same function (sam_folded.py)
    opset: int = 17
    simplify: bool = True
    force: bool = False
    threads: Optional[int] = None  # None: every core
    formats: tuple[str, ...] = ("onnx", "mnn")
    # MNN files: "fused" (default) converts torch's GELU as exported, which MNN fuses into its fast
    # approximate kernel, and falls back to "exact" for any file that then fails the parity gate;
    # "exact" always converts the rewritten copy (mnn.unfused_gelu) that MNN computes exactly.
    mnn_gelu: str = "fused"
    # SAM 2 only: the video graphs (memory attention, memory encoder, tracking decoder), gated against
    # the official SAM2VideoPredictor; False (--no-video) for an image-only bundle
    video: bool = True

    def validate(self) -> None:
        if get_spec(self.model).family == "sam2":
            if self.decoder != "lowres":
                raise InputError("--decoder full is for SAM and MobileSAM; a SAM 2 bundle's decoder follows "
                                 "the SAM 2 ONNX contract (low-res masks; the runtime upscales); add --ort-sam2 "
                                 "for ONNX Runtime's SAM 2 scripts (masks at the original size)")
            if "tensorrt" in self.formats:
                raise InputError("--format tensorrt is not available for SAM 2 models in this version")
        elif self.ort_sam2:
            raise InputError("--ort-sam2 is for SAM 2 models (ONNX Runtime's SAM 2 scripts); for SAM and "
                             "MobileSAM use --decoder full (the official SamOnnxModel contract)")
        if any(f not in FORMATS for f in self.formats) or "onnx" not in self.formats:
            raise InputError(f"--format takes a comma list of {','.join(FORMATS)} that includes onnx "
                             f"(every other format is made from it), got {','.join(self.formats)}")
        if "openvino" in self.formats and not set(self.precisions) & {"fp32", "fp16"}:
            raise InputError("--format openvino writes fp32 and fp16 IR: add fp32 or fp16 to --precision")
        if (self.checkpoint is None) == (self.random_init is None):
            raise InputError("give exactly one of --checkpoint PATH or --random-init SEED")
        if not self.precisions or any(p not in PRECISIONS for p in self.precisions):
            raise InputError(f"--precision takes a comma list of {','.join(PRECISIONS)}, got {','.join(self.precisions)}")
        if self.decoder not in DECODER_VARIANTS:
            raise InputError(f"--decoder must be lowres or full, not {self.decoder!r}")
        if self.single_mask and self.decoder != "full":
            raise InputError("--single-mask changes the full decoder's output: add --decoder full")
        if self.single_mask and "tensorrt" in self.formats:
            raise InputError("--single-mask is for the ONNX contract's readers; TensorRT takes the lowres "
                             "decoder: convert without --single-mask for --format tensorrt")
        if self.decoder_graph not in DECODER_GRAPHS:
            raise InputError(f"--decoder-graph must be {' or '.join(DECODER_GRAPHS)}, not {self.decoder_graph!r}")
        if self.mnn_gelu not in MNN_GELU:
            raise InputError(f"MNN GELU must be {' or '.join(MNN_GELU)}, not {self.mnn_gelu!r}")
        if self.threads is not None:
            from edgesam.runtime.backends import resolve_threads  # numpy only: no torch at import

            resolve_threads(self.threads)
        if not 13 <= self.opset <= 20:
            raise InputError(f"--opset {self.opset} is outside the tested range 13..20")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise InputError(f"{self.checkpoint}: no such checkpoint file")


class Progress:
    """Stage lines with timings on stderr, so a long vit_h conversion is never silent."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.times = log, {}

    def stage(self, name: str, fn: Callable[[], T], /, *, announce: bool = True) -> T:
        """Time ``fn()``: no arguments here (a lambda, or a partial with keywords: no positional flags)."""
        if announce:  # quick stages that validate input stay silent until done (one-line errors)
            self.log(f"[{name}] ...")
        t = time.perf_counter()
        result = fn()
        self.times[name] = round(time.perf_counter() - t, 2)
        self.log(f"[{name}] done in {self.times[name]:.1f} s")
        return result


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def convert(opts: ConvertOptions, log: Callable[[str], None] = _stderr) -> dict:
    """Build the bundle at ``opts.out``; returns its manifest. Nothing is written unless parity holds."""
    opts.validate()
    check_out_dir(opts.out, force=opts.force)  # an unwritable or taken --out fails before minutes of export
    if "openvino" in opts.formats:  # fail before minutes of export, not after
        from edgesam.convert.openvino import import_openvino

        import_openvino()
    # Heavy imports only here, so that `edgesam --help` stays instant.
    import torch

    from edgesam.convert import gate
    from edgesam.convert.families import family_of
    from edgesam.runtime.backends import resolve_threads
    from edgesam.measure.parity import format_table

    threads = resolve_threads(opts.threads)
    torch.set_num_threads(threads)
    prog = Progress(log)
    untrained = opts.random_init is not None
    family = family_of(opts.model)
    if untrained:
        sam = prog.stage("build random (untrained)", partial(family.build, opts.model, seed=opts.random_init))
        ckpt = {"random_init_seed": opts.random_init, "untrained": True}
    else:
        sam = prog.stage("load checkpoint", partial(family.build, opts.model, checkpoint=opts.checkpoint),
                         announce=False)
        ckpt = {"file": Path(opts.checkpoint).name, "sha256": sha256_file(Path(opts.checkpoint))}
    log(f"model {opts.model}" + (" (UNTRAINED: random weights, masks are meaningless)" if untrained else ""))
    flops = prog.stage("count FLOPs", partial(family.count_flops, sam, graph=opts.decoder_graph))
    full = opts.decoder == "full"
    run_gate = partial(gate.run_gate, sam, threads=threads, log=log, full=full, family=family)
    with atomic_dir(opts.out, force=opts.force) as tmp:
        enc_onnx, dec_onnx = tmp / "encoder.onnx", tmp / "decoder.onnx"
        prog.stage("export encoder", partial(family.export_encoder, sam, path=enc_onnx, opset=opts.opset))
        prog.stage("export decoder", partial(family.export_decoder, sam, path=dec_onnx, opset=opts.opset,
                                             graph=opts.decoder_graph))
        meta = {role: onnx_metadata(opts.model, role, family.sections(opts.decoder)[role]["contract"], ckpt)
                for role in ("encoder", "decoder")}
        notes = {}
        for path, role in ((enc_onnx, "encoder"), (dec_onnx, "decoder")):
            notes[role] = prog.stage(f"finalise {role} onnx", partial(
                finalise_onnx, path, meta=meta[role], simplify=opts.simplify, make_full=full and role == "decoder"))
        mnn_precisions = opts.precisions if "mnn" in opts.formats else ()
        mnn_files = {prec: (tmp / f"encoder.{prec}.mnn", tmp / f"decoder.{prec}.mnn") for prec in mnn_precisions}
        gelu = {(role, prec): opts.mnn_gelu for role in ("encoder", "decoder") for prec in mnn_precisions}
        float_layers: dict[tuple[str, str], list[str]] = {}
        ov_files = {}
        with tempfile.TemporaryDirectory(prefix="edgesam-mnn-src-") as work:
            sources = {"encoder": enc_onnx, "decoder": Path(work) / "decoder.onnx"}
            if mnn_precisions:
                # MNN's decoder comes from the same graph with its workarounds (export.decoder_wrapper).
                prog.stage("export decoder for mnn", partial(family.export_decoder, sam, path=sources["decoder"],
                                                             opset=opts.opset, graph=opts.decoder_graph, mnn=True))
                prog.stage("finalise mnn decoder onnx", partial(
                    finalise_onnx, sources["decoder"], meta=meta["decoder"], simplify=opts.simplify, make_full=full))
                if family.mnn_encoder_graph:  # e.g. SAM 2: global attention summed in chunks for ARM fp16
                    sources["encoder"] = Path(work) / "encoder.onnx"
                    prog.stage("export encoder for mnn", partial(family.export_encoder, sam, path=sources["encoder"],
                                                                 opset=opts.opset, mnn=True))
                    prog.stage("finalise mnn encoder onnx", partial(
                        finalise_onnx, sources["encoder"], meta=meta["encoder"], simplify=opts.simplify, make_full=False))
                float_layers = convert_mnn(sources, gelu, tmp, opts.model, prog)
            if "openvino" in opts.formats:
                from edgesam.convert.openvino import onnx_to_openvino

                for prec in (p for p in opts.precisions if p in ("fp32", "fp16")):
                    for path, role in ((enc_onnx, "encoder"), (dec_onnx, "decoder")):
                        prog.stage(f"openvino {role} {prec}", partial(
                            onnx_to_openvino, path, xml_path=tmp / f"{role}.{prec}.xml", precision=prec))
                    ov_files[prec] = (tmp / f"encoder.{prec}.xml", tmp / f"decoder.{prec}.xml")
            cells = prog.stage("parity", partial(run_gate, onnx_enc=enc_onnx, onnx_dec=dec_onnx, mnn_files=mnn_files,
                                                 openvino_files=ov_files))
            redo = gelu_fallbacks(cells, gelu)
            if redo:  # measured parity chooses: files whose fused GELU failed are made exact and re-checked
                for (role, prec), why in redo.items():
                    log(f"mnn {role} {prec}: fused GELU out of tolerance ({why}); converting with the exact GELU")
                    gelu[(role, prec)] = "exact"
                float_layers.update(convert_mnn(sources, {k: "exact" for k in redo}, tmp, opts.model, prog))
                again = sorted({prec for _, prec in redo})
                labels = {row[0] for prec in again for row in gate.mnn_candidates(prec)}
                cells = [c for c in cells if c.candidate not in labels] + prog.stage(
                    "parity (exact GELU)", partial(run_gate, onnx_enc=None, onnx_dec=None,
                                                   mnn_files={p: mnn_files[p] for p in again}))
            video_files = None
            if family.name == "sam2" and opts.video:
                from edgesam.convert import sam2_video

                ov_precs = tuple(ov_files) if "openvino" in opts.formats else ()
                video_files = sam2_video.write_video_files(sam, tmp, Path(work), mnn_precisions, bool(mnn_precisions),
                                                           opts.opset, meta["decoder"], prog, opts.model, ov_precs)
                cells = cells + prog.stage("parity (video)", partial(sam2_video.video_gate, sam, video_files, tmp,
                                                                     mnn_precisions, threads, log))
        if opts.single_mask:  # after every runtime format was made from, and gated on, the 4-token file
            from edgesam.convert.full_decoder import write_single_mask

            decoder_io = _io_shapes(dec_onnx)  # what the other formats' decoders (4 tokens) take and return
            prog.stage("single-mask decoder.onnx", partial(write_single_mask, dec_onnx))
            cells = cells + prog.stage("parity (single mask)", partial(gate.single_mask_cells, sam, dec_onnx,
                                                                        threads))
        if opts.ort_sam2:  # after every other format was made from, and gated on, encoder.onnx
            from edgesam.convert import sam2_ort

            prog.stage("onnx runtime sam2 files", partial(_ort_sam2_files, sam, tmp, opts, meta))
            cells = cells + prog.stage("parity (onnx runtime sam2)", partial(sam2_ort.ort_cells, sam, enc_onnx, tmp,
                                                                            threads))
        trt = None
        if "tensorrt" in opts.formats:
            trt, trt_cells = prog.stage("tensorrt profile", partial(_tensorrt, sam, tmp, enc_onnx, dec_onnx, opts, log))
            cells = cells + trt_cells
        log(format_table(cells))
        failed = [c for c in cells if not c.ok]
        if failed:
            c = failed[0]
            raise ParityError(f"parity failed, nothing written: {c.stage} {c.output} of {c.candidate} vs "
                              f"{c.reference}: {'; '.join(c.failures)} ({len(failed)} failing cells)")
        manifest = build_manifest(tmp, opts, ckpt, flops, cells, notes, prog.times, untrained, trt, gelu,
                                  float_layers, decoder_io if opts.single_mask else None,
                                  video=sam if video_files else None)
        write_manifest(tmp, manifest)
    log(f"wrote {opts.out}" + ("  [untrained]" if untrained else ""))
    return manifest


def _ort_sam2_files(sam, tmp: Path, opts: ConvertOptions, meta: dict) -> None:
    """encoder.onnx's ONNX Runtime aliases and the two decoders of its contract, stamped like every file."""
    from edgesam.convert import sam2_ort

    sam2_ort.add_encoder_aliases(tmp / "encoder.onnx")
    for multimask, name in sam2_ort.ORT_FILES.items():
        sam2_ort.export_ort_decoder(sam, tmp / name, opts.opset, multimask, graph=opts.decoder_graph)
        contract = "ort-sam2-decoder-multi" if multimask else "ort-sam2-decoder"
        finalise_onnx(tmp / name, meta={**meta["decoder"], "contract": contract}, simplify=opts.simplify,
                      make_full=False, dims=sam2_ort.ORT_DIMS)


def onnx_metadata(model: str, role: str, contract: str, ckpt: dict) -> dict[str, str]:
    """The metadata_props every ONNX file carries (``edgesam info FILE.onnx`` prints them): what it
    is, which contract it follows (manifest.CONTRACTS), and the weights it was made from."""
    untrained = "random_init_seed" in ckpt
    return {"edgesam_version": __version__, "model": model, "role": role, "contract": contract,
            "checkpoint_sha256": "none (untrained: random init seed %d)" % ckpt["random_init_seed"] if untrained
            else ckpt["sha256"],
            "untrained": str(untrained), "checkpoint": json.dumps(ckpt)}


def convert_mnn(sources: dict[str, Path], gelu: dict[tuple[str, str], str], out: Path, model: str,
                prog: Progress) -> dict[tuple[str, str], list[str]]:
    """Convert ``sources[role]`` to ``out/{role}.{prec}.mnn`` for every (role, prec) in ``gelu``, with
    MNN's fused GELU ("fused": the ONNX file as it is) or exactly ("exact": one rewritten copy per
    role, ``mnn.exact_gelu_source``, shared by its precisions). Returns the layers each int8 file
    keeps float (``mnn.int8_float_layers``)."""
    from edgesam.convert.mnn import exact_gelu_source, int8_float_layers, onnx_to_mnn, weight_storage

    kept = {}
    for role, path in sources.items():
        for mode in MNN_GELU:
            precs = [prec for (r, prec), m in gelu.items() if r == role and m == mode]
            if not precs:
                continue
            with exact_gelu_source(path) if mode == "exact" else contextlib.nullcontext(path) as src:
                for prec in precs:
                    kept[(role, prec)] = prog.stage(f"mnn {role} {prec} ({mode} GELU)", partial(
                        onnx_to_mnn, src, mnn_path=out / f"{role}.{prec}.mnn", precision=weight_storage(role, prec),
                        biz_code=f"edgesam:{model}:{prec}", rewrite_gelu=False,
                        keep_float=int8_float_layers(role, prec)))
    return kept


def gelu_fallbacks(cells, gelu: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """The (role, prec) MNN files converted with the fused GELU whose gate cells failed, with the first
    failure. An encoder cell or an end-to-end cell (this format's own embedding) blames the encoder; a
    decoder cell (fed torch's embedding) blames the decoder."""
    from edgesam.convert.gate import mnn_candidates

    label_prec = {row[0]: prec for (_, prec) in gelu for row in mnn_candidates(prec)}
    out: dict[tuple[str, str], str] = {}
    for c in cells:
        prec = label_prec.get(c.candidate)
        if prec is None or c.ok:
            continue
        role = "decoder" if c.stage in ("decoder", "full_post") else "encoder"
        if gelu.get((role, prec)) == "fused":
            out.setdefault((role, prec), f"{c.candidate}: {c.stage} {c.output} {'; '.join(c.failures)}")
    return out


def _tensorrt(sam, tmp: Path, enc_onnx: Path, dec_onnx: Path, opts: ConvertOptions, log) -> tuple[dict, list]:
    """TensorRT takes the lowres decoder: a full bundle gets its lowres subgraph beside it."""
    from edgesam.convert import gate, tensorrt
    from edgesam.runtime.backends import resolve_threads
    from edgesam.synthetic.gate_inputs import gate_image

    if opts.decoder == "full":
        dec_onnx = tmp / "decoder.lowres.onnx"
        tensorrt.lowres_decoder(tmp / "decoder.onnx", dec_onnx)
    return tensorrt.prepare(sam, enc_onnx, dec_onnx, gate.gate_encoder_input(gate_image()), tensorrt.TensorRTProfile(),
                            resolve_threads(opts.threads), log)


def finalise_onnx(path: Path, meta: dict, simplify: bool, make_full: bool, dims: Optional[dict] = None) -> dict:
    """Simplify (kept only if it checks), add the full-size postprocessing, stamp provenance, check.
    ``dims``: the dynamic axis names to restore after simplifying (default: the SAM decoder's)."""
    import onnx

    from edgesam.convert.sam_export import EXTERNAL_DATA_BYTES
    from edgesam.convert.full_decoder import append_postprocessing

    model = onnx.load(str(path))
    note = {"simplified": False}
    # ByteSize() itself raises EncodeError past 2 GiB (upb protobuf), so add up the weights instead.
    large = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    if simplify and not large:
        try:
            import onnxslim

            from edgesam.convert.tensorrt import restore_dim_names

            slim = onnxslim.slim(model)
            # onnxslim's inferred shapes tie the expanded prompt batch to the mask batch
            # ("M"); ONNX Runtime then refuses B != M. Let each runtime infer shapes itself.
            del slim.graph.value_info[:]
            restore_dim_names(slim, dims)
            onnx.checker.check_model(slim)
            model, note["simplified"] = slim, "onnxslim"
        except Exception as e:  # a failed simplification is recorded, never silently used
            note["simplify_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    elif large:
        note["simplify_skipped"] = "model over 2 GiB (external data)"
    if make_full:
        model = append_postprocessing(model)
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    if large:
        data = path.name + ".data"
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data)
        for p in path.parent.iterdir():  # drop the per-tensor files torch's exporter wrote
            if p.is_file() and p.suffix not in (".onnx", ".data", ".mnn", ".json") and p.name != data:
                p.unlink()
        onnx.checker.check_model(str(path))
        note["external_data"] = data
    else:
        onnx.save(model, str(path))
        onnx.checker.check_model(model)
    return note


def _io_shapes(path: Path) -> tuple[dict, dict]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    inits = {i.name for i in m.graph.initializer}
    return ({i.name: dims(i) for i in m.graph.input if i.name not in inits},
            {o.name: dims(o) for o in m.graph.output})


def build_manifest(tmp: Path, opts: ConvertOptions, ckpt: dict, flops: dict, cells, notes: dict,
                   times: dict, untrained: bool, tensorrt: Optional[dict] = None,
                   gelu: Optional[dict] = None, float_layers: Optional[dict] = None,
                   decoder_io: Optional[tuple[dict, dict]] = None, video=None) -> dict:
    import onnx
    import torch

    from edgesam.convert.mnn import weight_storage

    files = []
    for role in ("encoder", "decoder"):
        ins, outs = _io_shapes(tmp / f"{role}.onnx")
        # a --single-mask decoder.onnx returns one official-rule mask: for other tools, not this runtime
        single = {"single_mask": "SamOnnxModel"} if opts.single_mask and role == "decoder" else {}
        aliases = {}
        if opts.ort_sam2 and role == "encoder":  # the contract's outputs first, ONNX Runtime's names after
            from edgesam.convert.sam2_ort import ORT_ENCODER_OUTPUTS

            aliases = {"ort_sam2_aliases": list(ORT_ENCODER_OUTPUTS)}
        files.append(file_record(tmp, f"{role}.onnx", role=role, format="onnx", precision="fp32",
                                 inputs=ins, outputs=outs, **({"onnx_notes": notes[role]} if notes[role] else {}),
                                 **single, **aliases))
        if single:
            ins, outs = decoder_io
        if "external_data" in notes[role]:
            files.append(file_record(tmp, notes[role]["external_data"], role=role, format="onnx_external_data",
                                     precision="fp32"))
        for prec in (opts.precisions if "mnn" in opts.formats else ()):
            # gelu: "fused" (MNN's approximate GELU kernel, passed the gate) or "exact" (mnn.unfused_gelu);
            # weights: what the file stores (an int8 bundle's decoder is fp16, mnn.weight_storage)
            files.append(file_record(tmp, f"{role}.{prec}.mnn", role=role, format="mnn", precision=prec,
                                     inputs=ins, outputs=outs, gelu=(gelu or {}).get((role, prec), "exact"),
                                     weights=weight_storage(role, prec),
                                     **({"float_layers": float_layers[(role, prec)]}
                                        if (float_layers or {}).get((role, prec)) else {})))
            if (tmp / f"{role}.{prec}.mnn.weight").exists():  # MNN puts >2 GB weights beside the model
                files.append(file_record(tmp, f"{role}.{prec}.mnn.weight", role=role, format="mnn_external_weight",
                                         precision=prec))
        for prec in (p for p in opts.precisions if p in ("fp32", "fp16") and "openvino" in opts.formats):
            files.append(file_record(tmp, f"{role}.{prec}.xml", role=role, format="openvino", precision=prec,
                                     inputs=ins, outputs=outs, weights=f"{role}.{prec}.bin"))
            files.append(file_record(tmp, f"{role}.{prec}.bin", role=role, format="openvino_weights",
                                     precision=prec))
    if opts.ort_sam2:  # ONNX Runtime's SAM 2 contract: for its scripts, not opened by edgesam's runtime
        from edgesam.convert.sam2_ort import ORT_FILES

        for multimask, name in ORT_FILES.items():
            ins, outs = _io_shapes(tmp / name)
            files.append(file_record(tmp, name, role="decoder", format="onnx_ort_sam2", precision="fp32",
                                     inputs=ins, outputs=outs, multimask=multimask,
                                     contract="ort-sam2-decoder-multi" if multimask else "ort-sam2-decoder"))
    if video is not None:  # SAM 2's video graphs (convert/sam2_video.py) and their constants
        from edgesam.convert.sam2_video import VIDEO_GRAPHS

        for role in VIDEO_GRAPHS:
            ins, outs = _io_shapes(tmp / f"{role}.onnx")
            files.append(file_record(tmp, f"{role}.onnx", role=role, format="onnx", precision="fp32",
                                     inputs=ins, outputs=outs))
            for prec in (opts.precisions if "mnn" in opts.formats else ()):
                files.append(file_record(tmp, f"{role}.{prec}.mnn", role=role, format="mnn", precision=prec,
                                         inputs=ins, outputs=outs, gelu="exact", weights=weight_storage(role, prec)))
            for prec in (p for p in opts.precisions if p in ("fp32", "fp16") and "openvino" in opts.formats):
                files.append(file_record(tmp, f"{role}.{prec}.xml", role=role, format="openvino", precision=prec,
                                         inputs=ins, outputs=outs, weights=f"{role}.{prec}.bin"))
                files.append(file_record(tmp, f"{role}.{prec}.bin", role=role, format="openvino_weights",
                                         precision=prec))
        files.append(file_record(tmp, "video_constants.npz", role="video_constants", format="npz", precision="fp32"))
    if tensorrt and tensorrt["files"]["decoder"] != "decoder.onnx":
        files.append(file_record(tmp, tensorrt["files"]["decoder"], role="decoder", format="onnx_lowres",
                                 precision="fp32"))
    # Every file names the weights it was made from, so a model swapped in from another bundle
    # (with its manifest record) is refused at load instead of silently pairing wrong halves.
    source = ckpt.get("sha256") or f"random-init:{opts.model}:{ckpt.get('random_init_seed')}"
    for f in files:
        f["source"] = source
    versions = {"edgesam": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "python": platform.python_version()}
    if "mnn" in opts.formats:  # importing MNN prints a CPU banner on stdout: only when it was used
        versions["MNN"] = _mnn_version()
    if "openvino" in opts.formats:
        from edgesam.convert.openvino import openvino_version

        versions["openvino"] = openvino_version()
    from edgesam.convert.families import family_of

    family = family_of(opts.model)
    sections = family.sections(opts.decoder)
    graph = opts.decoder_graph if family.folds_decoder else "official"
    return {
        "format": FORMAT, "version": VERSION, "model": opts.model, "family": get_spec(opts.model).family,
        "untrained": untrained,
        "checkpoint": ckpt,
        "source": source,
        **sections,
        "decoder": {**sections["decoder"], "graph": graph, "multimask_outputs": 3,
                    **({"mnn_graph": _mnn_graph_note(family)} if "mnn" in opts.formats else {})},
        **({"encoder": {**sections["encoder"], "mnn_graph": _mnn_encoder_note()}}
           if "mnn" in opts.formats and family.mnn_encoder_graph else {}),
        "files": files,
        "flops": flops,
        "parity": {"reference": "torch", "ok": all(c.ok for c in cells),
                   "cells": [c.as_dict() for c in cells]},
        "convert": {"opset": opts.opset, "formats": list(opts.formats), "seconds": times},
        **({"tensorrt": tensorrt} if tensorrt else {}),
        **({"video": _video_section(video)} if video is not None else {}),
        "versions": versions,
    }


def _video_section(model) -> dict:
    from edgesam.convert.sam2_video import VIDEO_GRAPHS, video_spec

    return {**video_spec(model), "graphs": list(VIDEO_GRAPHS), "constants": "video_constants.npz",
            "memory_storage": "float32 (bfloat16 and float16 are runtime choices: SAM2VideoPredictor(memory_dtype=))"}


def _mnn_encoder_note() -> str:
    from edgesam.convert.sam_export import AV_CHUNK

    return (f"encoder.onnx's graph with the global-attention blocks' probabilities @ values summed over the "
            f"keys in chunks of {AV_CHUNK} (ARM fp16 accumulation); the same function")


def _mnn_graph_note(family) -> str:
    """How the MNN files' decoder graph differs from decoder.onnx's (the same function; export.decoder_wrapper)."""
    from edgesam.convert.sam_export import AV_CHUNK

    if not family.folds_decoder:
        return f"decoder.onnx's graph with token->image key sums in chunks of {AV_CHUNK} (ARM fp16 accumulation)"
    return (f"decoder.onnx's graph with MNN workarounds: token->image key sums in chunks of {AV_CHUNK} "
            "(ARM fp16 accumulation); folded graph: image keys expanded to the prompt batch, image-major "
            "attention scores and no If (the mask head always runs)"
            + ("; SAM 2's upscaling channels-last (sam2_folded.py)" if family.name == "sam2" else ""))


def _mnn_version() -> str:
    import MNN

    return MNN.version() if hasattr(MNN, "version") else "unknown"
