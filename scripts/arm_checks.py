"""The ARM lane's checks (scripts/arm-lane.sh runs them; see DEVELOPERS.md).

Each subcommand is one fresh process, either on the x86 host or under qemu-aarch64-static:

  convert-tiny OUT                    host, torch: convert the test-only tiny model (fp32, fp16, int8)
  convert-demo OUT                    host, torch: convert the trained demo vit_t (fp32) for its decoder
  reference BUNDLE IMAGE X86 [--decoder-bundle D]
                                      host: x86 MNN fp32 results (segment CLI, encoder, decoder)
  platform ARM                        emulator: machine, Python, MNN version and CPU features
  notorch ARM                         emulator: edgesam.runtime imports, and no torch exists
  segment BUNDLE IMAGE X86 ARM        emulator: `edgesam segment`, MNN fp32, against x86
  fp16 BUNDLE X86 ARM [--decoder-bundle D]
                                      emulator: decoder/encoder at MNN precision "low" against x86 fp32
  int8 BUNDLE X86 ARM                 emulator: the int8 encoder in int8 arithmetic (MNN memory mode
                                      low, ARM sdot/i8mm kernels) against x86 fp32
  convert-sam2 TINY T                 host, torch: the test-only tiny SAM 2 (fp32, fp16) and seeded random
                                      sam2.1_hiera_t (fp32) bundles
  sam2-reference TINY T IMAGE X86     host: x86 MNN fp32 results of both (segment CLI, encoder, decoder)
  sam2 TINY T IMAGE X86 ARM           emulator: `edgesam segment` on the tiny SAM 2 bundle (fp32), its encoder's
                                      three outputs at precision "low", hiera_t's decoder at "low", and one
                                      video tracking step of the tiny model (MNN fp32), against x86
  report ARM [--seconds S]            host: print the report; exit 1 unless every check passed

The fp16 decoder check runs a *trained* decoder (``--decoder-bundle``, by default the lane's
conversion of assets/demo_vit_t.pt) on that model's x86 embedding of the image. With random
weights the decoder's logits span only about +-0.35, so fp16 rounding moves mask boundaries by
amounts that say nothing about a real model (measured: cosine 0.998, IoU 0.943 on the tiny
model's random decoder). The decoder architecture is the same for every SAM model, so the
trained one costs the emulator no more. The encoder check stays on the tiny model (the vit_t
encoder takes over 25 minutes under qemu).

Everything but convert-tiny needs only MNN, numpy and edgesam. Results go to ``ARM/<check>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "timm", "onnx", "onnxruntime")
# The prompts every run uses, in original pixels of the image (assets/landscape.png is 640x427).
POINT = (300, 200)
BOX = (100, 100, 500, 380)
# Fraction of low-res logit pixels whose sign (mask in/out) must agree with x86 fp32. Besides the
# IoU in edgesam/measure/parity.py: IoU ignores pixels outside both masks, agreement counts all of them.
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99}
# fp16 arithmetic must show: ARM fp32 differs from x86 fp32 by ~1e-5 of the logits' range, fp16 rounding
# alone (11-bit mantissa) by ~5e-4. Below this, "low" silently ran fp32 and the check proved nothing.
MIN_FP16_REL = 1e-4
# int8 arithmetic must show the same way: against the same int8 file expanded to float32 on x86 (memory
# mode normal), ARM's dynamic quantisation of the activations moves the embedding by far more than this.
MIN_INT8_REL = 1e-4
# One MNN thread by default: under emulation on a busy host, a second thread mostly waits at barriers.
THREADS = os.environ.get("EDGESAM_ARM_THREADS", "1")


def _write(out_dir: str, name: str, result: dict) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(result, indent=1))


def _cells(stage: str, ref, got, precision: str, kind: str, candidate: str) -> dict:
    """parity.compare plus mask agreement, as a plain dict with the failures it found."""
    import numpy as np

    from edgesam.measure.parity import compare

    cell = compare(stage, stage, ref, got, precision, candidate, "x86 mnn fp32", kind).as_dict()
    if kind == "logits":
        agree = float(np.mean((np.asarray(ref) > 0) == (np.asarray(got) > 0)))
        cell["agreement"] = agree
        if agree < MIN_AGREEMENT[precision]:
            cell["failures"].append(f"mask agreement {agree:.5f} < {MIN_AGREEMENT[precision]}")
            cell["ok"] = False
    return cell


def _segment_argv(bundle: str, image: str, npz: Path, js: Path) -> list[str]:
    return ["segment", bundle, image, "--point", "%d,%d" % POINT, "--box", "%d,%d,%d,%d" % BOX, "--multimask",
            "--backend", "mnn", "--precision", "fp32", "--threads", THREADS, "--npz", str(npz), "--json", str(js)]


def _decoder_prompts():
    """The decoder check's prompt: segment's point and box, as one prompt (fp16 costs ~65 CPU s each)."""
    import numpy as np

    return np.array([[POINT]], np.float64), np.array([[1]], np.float64), np.array([BOX], np.float64)


# --- host --------------------------------------------------------------------------------------------
def convert_tiny(a) -> int:
    from edgesam.convert.pipeline import ConvertOptions, convert

    convert(ConvertOptions(model="vit_tiny_test", out=Path(a.out), random_init=0, precisions=("fp32", "fp16", "int8"),
                           force=True))
    return 0


def convert_demo(a) -> int:
    from edgesam.convert.pipeline import ConvertOptions, convert

    repo = Path(__file__).resolve().parent.parent
    convert(ConvertOptions(model="vit_t", out=Path(a.out), checkpoint=repo / "assets" / "demo_vit_t.pt",
                           precisions=("fp32",), force=True))
    return 0


def _decoder_reference(bundle: str, image_path: str):
    """x86 MNN fp32 on ``bundle``: (encoder input, decoder feeds, decoder outputs) for the lane's prompt."""
    from edgesam.runtime.imageio import read_image
    from edgesam.runtime.predictor import SamPredictor
    from edgesam.runtime.preprocess import preprocess

    pred = SamPredictor(bundle, backend="mnn", precision="fp32", threads=int(THREADS), runtime_precision="high")
    image = read_image(image_path)
    x, _ = preprocess(image, pred.preprocess_spec)
    pred.set_image(image)
    coords, labels, boxes = _decoder_prompts()
    feeds = pred.transform.decoder_feeds(coords, labels, boxes, None, pred.original_size, pred.features)
    return x, feeds, pred.decoder.run(feeds)


SCENE_SEED = 100_000  # edgesam.synthetic.quality.HELDOUT_SEEDS[0]: never trained on
SCENE_PROMPTS = 2  # each prompt costs the emulator ~65 CPU s at precision low


def _scene_decoder_reference(bundle: str) -> dict:
    """x86 MNN fp32 on a held-out synthetic scene: the SCENE_PROMPTS objects the model segments best
    (box + interior point, IoU against the exact instance masks), as one decoder batch.

    A trained model is confident on these (logits of tens), so a mask that fp16 moves is a real
    change, unlike on a photo the demo model was never trained for, where its logits hover at 0.
    """
    import numpy as np

    from edgesam.runtime.predictor import SamPredictor
    from edgesam.synthetic.quality import iou
    from edgesam.synthetic.scenes import interior_point, make_scene, mask_box

    sc = make_scene(SCENE_SEED)
    pred = SamPredictor(bundle, backend="mnn", precision="fp32", threads=int(THREADS), runtime_precision="high")
    pred.set_image(sc.image)
    scored = []
    for k, gt in enumerate(sc.masks):
        pt, box = np.array([interior_point(gt)]), mask_box(gt)
        masks, _, _ = pred.predict(pt, np.array([1]), box, multimask_output=False)
        scored.append((iou(masks[0], gt), k, pt, box))
    best = sorted(scored, key=lambda t: (-t[0], t[1]))[:SCENE_PROMPTS]
    coords = np.stack([b[2] for b in best]).astype(np.float64)
    feeds = pred.transform.decoder_feeds(coords, np.ones(coords.shape[:2]), np.stack([b[3] for b in best]), None,
                                         pred.original_size, pred.features)
    out = pred.decoder.run(feeds)
    return {**{f"feed_{k}": v for k, v in feeds.items()}, **out,
            "objects": np.array([b[1] for b in best]), "x86_gt_iou": np.array([b[0] for b in best])}


def reference(a) -> int:
    """x86 MNN fp32: the segment CLI's outputs, the encoder input/embedding and a decoder batch."""
    import subprocess

    import numpy as np

    out = Path(a.x86)
    out.mkdir(parents=True, exist_ok=True)
    argv = _segment_argv(a.bundle, a.image, out / "segment.npz", out / "segment.json")
    subprocess.run([sys.executable, "-m", "edgesam.cli", *argv], check=True)
    x, feeds, outs = _decoder_reference(a.bundle, a.image)
    np.savez(out / "fp32.npz", image=x, **{f"feed_{k}": v for k, v in feeds.items()}, **outs)
    if a.decoder_bundle:
        np.savez(out / "decoder.npz", **_scene_decoder_reference(a.decoder_bundle))
    from edgesam.bundle import load_bundle
    from edgesam.runtime.predictor import open_backend

    b = load_bundle(a.bundle)
    if "int8" in b.precisions("mnn"):  # the same int8 encoder on x86, in fp32 and in int8 arithmetic
        np.savez(out / "encoder_int8.npz", **{
            mode: open_backend(b, "encoder", "mnn", "int8", int(THREADS), int8_compute=mode).run(
                {"image": x})["image_embeddings"] for mode in ("off", "on")})
    return 0


def convert_sam2(a) -> int:
    from edgesam.convert.pipeline import ConvertOptions, convert

    convert(ConvertOptions(model="sam2_tiny_test", out=Path(a.tiny), random_init=0, precisions=("fp32", "fp16"),
                           force=True))
    # hiera_t serves its decoder only: without the video graphs (their gate tracks a clip on 4 memory layers)
    convert(ConvertOptions(model="sam2.1_hiera_t", out=Path(a.t), random_init=0, precisions=("fp32",), force=True,
                           video=False))
    return 0


VIDEO_FRAMES = 2  # one prompted frame and one tracking step


def _video_step(bundle: str) -> dict:
    """The tiny SAM 2 bundle's video predictor (MNN fp32) on a generated 2-frame clip: the point's masks
    on frame 0 and the tracked masks and mask memory on frame 1 (memory attention, tracking decoder and
    memory encoder all run). Only MNN and numpy: the clip is drawn here, not read."""
    import numpy as np

    from edgesam.runtime.sam2_video_predictor import SAM2VideoPredictor

    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for t in range(VIDEO_FRAMES):
        img = np.full((h, w, 3), 70, np.uint8)
        img[(xx - 60 - 8 * t) ** 2 + (yy - 60) ** 2 < 25 ** 2] = (220, 60, 40)
        frames.append(img)
    pred = SAM2VideoPredictor(bundle, backend="mnn", precision="fp32", threads=int(THREADS), progress=False,
                              fill_hole_area=0)
    state = pred.init_state(frames)
    _, _, m0 = pred.add_new_points_or_box(state, 0, 1, points=[[60, 60]], labels=[1])
    masks = {f: m for f, _, m in pred.propagate_in_video(state)}
    mem = state["output_dict_per_obj"][0]["non_cond_frame_outputs"][1]["maskmem_features"]
    return {"video_prompt": m0, "video_track": masks[1], "video_memory": np.asarray(mem, np.float32)}


def _sam2_decoder_feeds(pred) -> dict:
    """The lane's point and box as one SAM 2 prompt (box corners first), on ``pred``'s current image."""
    coords, labels, boxes = _decoder_prompts()
    d = pred.decoder_spec
    feeds = pred.transform.decoder_feeds(coords, labels, boxes, None, pred.original_size)
    return {**pred._encoded, **{d.inputs[k]: v for k, v in feeds.items()}}


def sam2_reference(a) -> int:
    """x86 MNN fp32: the segment CLI on the tiny SAM 2 bundle, its encoder input and outputs, and
    hiera_t's decoder outputs on hiera_t's own x86 encoder outputs for the lane's prompt."""
    import subprocess

    import numpy as np

    from edgesam.runtime.imageio import read_image
    from edgesam.runtime.predictor import SamPredictor
    from edgesam.runtime.preprocess import preprocess

    out = Path(a.x86)
    out.mkdir(parents=True, exist_ok=True)
    argv = _segment_argv(a.tiny, a.image, out / "sam2_segment.npz", out / "sam2_segment.json")
    subprocess.run([sys.executable, "-m", "edgesam.cli", *argv], check=True)
    image = read_image(a.image)
    tiny = SamPredictor(a.tiny, backend="mnn", precision="fp32", threads=int(THREADS))
    x, _ = preprocess(image, tiny.preprocess_spec)
    tiny.set_image(image)
    t = SamPredictor(a.t, backend="mnn", precision="fp32", threads=int(THREADS))
    t.set_image(image)
    feeds = _sam2_decoder_feeds(t)
    np.savez(out / "sam2.npz", image=x, **{f"enc_{k}": v for k, v in tiny._encoded.items()},
             **{f"feed_{k}": v for k, v in feeds.items()}, **{f"dec_{k}": v for k, v in t.decoder.run(feeds).items()},
             **_video_step(a.tiny))
    return 0


# --- emulator ---------------------------------------------------------------------------------------
def platform_check(a) -> int:
    import numpy as np

    from edgesam.runtime._mnn import cpu_features, import_mnn

    mnn = import_mnn()
    feats = cpu_features()
    res = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
           "MNN": mnn.version() if hasattr(mnn, "version") else "unknown", "features": feats, "failures": []}
    if res["machine"] != "aarch64":
        res["failures"].append(f"machine is {res['machine']}, not aarch64")
    if feats.get("fp16") != 1:  # without it precision "low" is fp32, and the fp16 check could not fail
        res["failures"].append(f"MNN reports no fp16 arithmetic ({feats})")
    res["ok"] = not res["failures"]
    _write(a.arm, "platform", res)
    return 0 if res["ok"] else 1


def notorch(a) -> int:
    import importlib.util

    import edgesam.runtime  # noqa: F401
    from edgesam.cli import everything, segment, track  # noqa: F401
    from edgesam.measure import bench, paritymatrix  # noqa: F401
    from edgesam.runtime import (amg, backends, postprocess, predictor, prompts, sam2_predictor,  # noqa: F401
                                 sam2_video_predictor, video_memory)

    present = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
    loaded = [m for m in HEAVY if m in sys.modules]
    res = {"present": present, "loaded": loaded, "failures": []}
    if present:
        res["failures"].append(f"the sysroot has {', '.join(present)}: the check would prove nothing")
    if loaded:
        res["failures"].append(f"importing edgesam.runtime loaded {', '.join(loaded)}")
    res["ok"] = not res["failures"]
    _write(a.arm, "notorch", res)
    return 0 if res["ok"] else 1


def segment(a) -> int:
    """The whole CLI pipeline (decode, preprocess, encoder, decoder, postprocess, write) under qemu."""
    import numpy as np

    from edgesam.cli import main
    from edgesam.measure.parity import TOLERANCES

    arm, x86 = Path(a.arm), Path(a.x86)
    arm.mkdir(parents=True, exist_ok=True)
    t, cpu = time.perf_counter(), time.process_time()
    rc = main(_segment_argv(a.bundle, a.image, arm / "segment.npz", arm / "segment.json"))
    res = {"rc": rc, "wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - cpu, 1),
           "failures": []}
    if rc != 0:
        res["failures"].append(f"edgesam segment exited {rc}")
    else:
        got, ref = np.load(arm / "segment.npz"), np.load(x86 / "segment.npz")
        res["seconds"] = json.loads((arm / "segment.json").read_text()).get("seconds")
        res["low_res_logits"] = _cells("segment logits", ref["low_res_logits"], got["low_res_logits"], "fp32",
                                       "logits", "arm mnn fp32")
        res["scores"] = _cells("segment scores", ref["scores"], got["scores"], "fp32", "scores", "arm mnn fp32")
        m_ref, m_got = ref["masks"], got["masks"]
        ious = [float((r & g).sum() / max((r | g).sum(), 1)) for r, g in zip(m_ref, m_got)]
        res["mask_iou_full_res"] = ious
        if m_ref.shape != m_got.shape or min(ious) < TOLERANCES["fp32"].mask_iou:
            res["failures"].append(f"full-resolution mask IoU {min(ious):.4f} < {TOLERANCES['fp32'].mask_iou}")
        res["failures"] += res["low_res_logits"]["failures"] + res["scores"]["failures"]
    loaded = [m for m in HEAVY if m in sys.modules]
    if loaded:
        res["failures"].append(f"segment loaded {', '.join(loaded)}")
    res["ok"] = not res["failures"]
    _write(a.arm, "segment", res)
    return 0 if res["ok"] else 1


def fp16(a) -> int:
    """MNN precision "low" (fp16 arithmetic on ARMv8.2) against x86 fp32, stage by stage.

    Both sides load the fp32 model files, so every difference is arithmetic (the fp16 files are
    checked against torch by the convert gate).
    """
    import numpy as np

    from edgesam.bundle import load_bundle
    from edgesam.runtime.predictor import open_backend

    bundle = load_bundle(a.bundle)
    weights = "fp32"
    ref = np.load(Path(a.x86) / "fp32.npz")
    label = f"arm mnn {weights} (runtime low)"
    dec_bundle = load_bundle(a.decoder_bundle) if a.decoder_bundle else bundle
    res = {"weights": weights, "failures": [], "decoder_model": _describe(dec_bundle),
           "encoder_model": _describe(bundle)}
    dec = open_backend(dec_bundle, "decoder", "mnn", weights, int(THREADS), runtime_precision="low")
    dref = np.load(Path(a.x86) / "decoder.npz") if a.decoder_bundle else ref
    feeds = {k[5:]: dref[k] for k in dref.files if k.startswith("feed_")}
    t, cpu = time.perf_counter(), time.process_time()
    out = dec.run(feeds)
    res["decoder_s"] = round(time.perf_counter() - t, 1)
    res["decoder_cpu_s"] = round(time.process_time() - cpu, 1)
    res["decoder_prompts"] = int(feeds["point_coords"].shape[0])
    np.savez(Path(a.arm) / "fp16_decoder.npz", **out)
    if a.decoder_bundle:
        # The scene prompts are box + point, multimask off: the predictor returns output 0, which
        # is held to the tolerances; all four outputs are recorded too.
        res["decoder_all_outputs"] = _cells("decoder logits, all 4 outputs", dref["low_res_masks"],
                                            out["low_res_masks"], "fp16", "logits", label)
        res["decoder_all_outputs"]["ok"], res["decoder_all_outputs"]["failures"] = True, []
        res["scene"] = {"seed": SCENE_SEED, "objects": dref["objects"].tolist(),
                        "x86_fp32_gt_iou": [round(float(v), 4) for v in dref["x86_gt_iou"]]}
        ref_logits, got_logits = dref["low_res_masks"][:, :1], out["low_res_masks"][:, :1]
    else:
        ref_logits, got_logits = dref["low_res_masks"], out["low_res_masks"]
    res["decoder_logits"] = _cells("decoder logits", ref_logits, got_logits, "fp16", "logits", label)
    res["decoder_scores"] = _cells("decoder scores", dref["iou_predictions"], out["iou_predictions"], "fp16",
                                   "scores", label)
    res["failures"] += res["decoder_logits"]["failures"] + res["decoder_scores"]["failures"]
    if os.environ.get("EDGESAM_ARM_FP16_ENCODER", "1") == "0":
        res["encoder"] = "skipped (EDGESAM_ARM_FP16_ENCODER=0)"
    else:
        enc = open_backend(bundle, "encoder", "mnn", weights, int(THREADS), runtime_precision="low")
        t, cpu = time.perf_counter(), time.process_time()
        emb = enc.run({"image": ref["image"]})["image_embeddings"]
        res["encoder_s"] = round(time.perf_counter() - t, 1)
        res["encoder_cpu_s"] = round(time.process_time() - cpu, 1)
        res["encoder"] = _cells("encoder embedding", ref["feed_image_embeddings"], emb, "fp16", "tensor", label)
        res["failures"] += res["encoder"]["failures"]
    # If "low" silently ran fp32 the comparison above could not fail: demand fp16-sized differences.
    return _finish(a.arm, "fp16", res, res["decoder_logits"], MIN_FP16_REL,
                   "precision low is within fp32 noise of x86: fp16 arithmetic did not run")


def _finish(arm: str, name: str, res: dict, moved: dict, floor: float, why: str) -> int:
    """Fail ``res`` unless the ``moved`` cell differs by at least ``floor`` of the range (else the
    arithmetic under test silently did not run), then write it; the check's exit code."""
    if moved["rel_max"] < floor:
        res["failures"].append(f"{why} (rel {moved['rel_max']:.2g} < {floor:g})")
    res["ok"] = not res["failures"]
    _write(arm, name, res)
    return 0 if res["ok"] else 1


def int8(a) -> int:
    """The int8 encoder in int8 arithmetic (MNN memory mode low: MNN's ARM sdot/i8mm kernels) against
    x86 fp32, held to the int8 tolerances; and against the same file expanded to float32 on x86,
    which it must differ from (else int8 arithmetic did not run). An int8 bundle's decoder is stored
    in fp16 (convert/mnn.py: weight_storage), so the encoder is where int8 arithmetic runs."""
    import numpy as np

    from edgesam.bundle import load_bundle
    from edgesam.runtime.predictor import open_backend

    ref = np.load(Path(a.x86) / "fp32.npz")
    x86 = np.load(Path(a.x86) / "encoder_int8.npz")
    bundle = load_bundle(a.bundle)
    enc = open_backend(bundle, "encoder", "mnn", "int8", int(THREADS), int8_compute="on")
    t, cpu = time.perf_counter(), time.process_time()
    emb = enc.run({"image": ref["image"]})["image_embeddings"]
    label = "arm mnn int8 (int8 arithmetic)"
    res = {"weights": "int8", "memory": enc.memory, "model": _describe(bundle), "failures": [],
           "encoder_s": round(time.perf_counter() - t, 1), "encoder_cpu_s": round(time.process_time() - cpu, 1),
           "encoder": _cells("encoder embedding", ref["feed_image_embeddings"], emb, "int8", "tensor", label),
           "x86_int8_on": _cells("x86 int8", ref["feed_image_embeddings"], x86["on"], "int8", "tensor",
                                 "x86 mnn int8 (int8 arithmetic)"),
           "x86_int8_off": _cells("x86 int8", ref["feed_image_embeddings"], x86["off"], "int8", "tensor",
                                  "x86 mnn int8 (fp32 arithmetic)"),
           "vs_x86_int8_expanded": _cells("vs x86 expanded", x86["off"], emb, "int8", "tensor", label)}
    res["failures"] += res["encoder"]["failures"]
    return _finish(a.arm, "int8", res, res["vs_x86_int8_expanded"], MIN_INT8_REL,
                   "int8 arithmetic is within fp32 noise of the expanded int8 weights on x86: it did not run")


def sam2(a) -> int:
    """SAM 2 on aarch64: the tiny model's whole segment pipeline (MNN fp32), its encoder's three outputs
    with fp16 arithmetic, and sam2.1_hiera_t's decoder with fp16 arithmetic, each against x86 fp32.
    The hiera_t weights are seeded random (no SAM 2 model is trained here), so its logits are those of
    an untrained decoder: a fair test of the arithmetic, a weak one of what a real model's masks do."""
    import numpy as np

    from edgesam.bundle import load_bundle
    from edgesam.cli import main as cli
    from edgesam.measure.parity import TOLERANCES
    from edgesam.runtime.predictor import open_backend

    arm, x86 = Path(a.arm), Path(a.x86)
    arm.mkdir(parents=True, exist_ok=True)
    ref = np.load(x86 / "sam2.npz")
    res = {"failures": []}
    t = time.perf_counter()
    rc = cli(_segment_argv(a.tiny, a.image, arm / "sam2_segment.npz", arm / "sam2_segment.json"))
    res["segment_s"] = round(time.perf_counter() - t, 1)
    if rc != 0:
        res["failures"].append(f"edgesam segment on the tiny SAM 2 bundle exited {rc}")
    else:
        got, want = np.load(arm / "sam2_segment.npz"), np.load(x86 / "sam2_segment.npz")
        res["segment_logits"] = _cells("sam2 segment logits", want["low_res_logits"], got["low_res_logits"], "fp32",
                                       "logits", "arm mnn fp32")
        ious = [float((r & g).sum() / max((r | g).sum(), 1)) for r, g in zip(want["masks"], got["masks"])]
        res["segment_mask_iou"] = ious
        if min(ious) < TOLERANCES["fp32"].mask_iou:
            res["failures"].append(f"sam2 segment: full-resolution mask IoU {min(ious):.4f}")
        res["failures"] += res["segment_logits"]["failures"]
    tiny, big = load_bundle(a.tiny), load_bundle(a.t)
    enc = open_backend(tiny, "encoder", "mnn", "fp32", int(THREADS), runtime_precision="low")
    t = time.perf_counter()
    outs = enc.run({"image": ref["image"]})
    res["encoder_s"] = round(time.perf_counter() - t, 1)
    label = "arm mnn fp32 (runtime low)"
    res["encoder"] = {k: _cells(f"sam2 encoder {k}", ref[f"enc_{k}"], v, "fp16", "tensor", label) for k, v in outs.items()}
    for c in res["encoder"].values():
        res["failures"] += c["failures"]
    dec = open_backend(big, "decoder", "mnn", "fp32", int(THREADS), runtime_precision="low")
    feeds = {k[5:]: ref[k] for k in ref.files if k.startswith("feed_")}
    t = time.perf_counter()
    out = dec.run(feeds)
    res["decoder_s"] = round(time.perf_counter() - t, 1)
    res["decoder_model"] = _describe(big)
    res["decoder_logits"] = _cells("sam2 decoder logits", ref["dec_masks"], out["masks"], "fp16", "logits", label)
    res["decoder_scores"] = _cells("sam2 decoder scores", ref["dec_iou_predictions"], out["iou_predictions"], "fp16",
                                   "scores", label)
    res["failures"] += res["decoder_logits"]["failures"] + res["decoder_scores"]["failures"]
    t = time.perf_counter()
    video = _video_step(a.tiny)  # one tracking step of the tiny model: every video graph, MNN fp32
    res["video_s"] = round(time.perf_counter() - t, 1)
    for k, kind in (("video_prompt", "logits"), ("video_track", "logits"), ("video_memory", "tensor")):
        res[k] = _cells(f"sam2 {k}", ref[k], video[k], "fp32", kind, "arm mnn fp32")
        res["failures"] += res[k]["failures"]
    return _finish(a.arm, "sam2", res, res["decoder_logits"], MIN_FP16_REL,
                   "precision low is within fp32 noise of x86 on the SAM 2 decoder: fp16 arithmetic did not run")


def _describe(bundle) -> str:
    m = bundle.manifest
    return f"{m['model']} ({'untrained' if m.get('untrained') else 'trained'})"


# --- report -----------------------------------------------------------------------------------------
def _fig(c: dict) -> str:
    s = f"max abs {c['max_abs']:.3g}, rel {c['rel_max']:.2g}, cosine {c['cosine']:.6f}"
    if c.get("mask_iou") is not None:
        s += f", IoU {c['mask_iou']:.4f}, agreement {c['agreement']:.5f}"
    return s


def report(a) -> int:
    arm = Path(a.arm)
    results = {}
    for name in ("platform", "notorch", "segment", "fp16", "int8", "sam2"):
        p = arm / f"{name}.json"
        results[name] = json.loads(p.read_text()) if p.is_file() else {"ok": False, "failures": ["did not run"]}
    pl = results["platform"]
    lines = ["", "== ARM lane report =="]
    if "machine" in pl:
        feats = ", ".join(f"{k}:{v}" for k, v in pl["features"].items())
        lines.append(f"platform   {pl['machine']} (qemu user), Python {pl['python']}, numpy {pl['numpy']}, "
                     f"MNN {pl['MNN']}; MNN features: {feats}")
    nt = results["notorch"]
    if "present" in nt:
        lines.append(f"notorch    torch/torchvision/timm/onnx present: {nt['present'] or 'none'}; "
                     f"loaded by edgesam.runtime: {nt['loaded'] or 'none'}")
    sg = results["segment"]
    if "low_res_logits" in sg:
        secs = sg.get("seconds") or {}
        lines.append(f"segment    MNN fp32 vs x86 fp32: wall {sg['wall_s']} s, CPU {sg.get('cpu_s')} s (wall: embed "
                     f"{secs.get('embed', 0):.1f} s, decode+post {secs.get('decode_postprocess', 0):.1f} s)")
        lines.append(f"           logits: {_fig(sg['low_res_logits'])}; scores max abs "
                     f"{sg['scores']['max_abs']:.3g}; full-res mask IoU {min(sg['mask_iou_full_res']):.4f}")
    f16 = results["fp16"]
    if "decoder_logits" in f16:
        lines.append(f"fp16       {f16['weights']} weights, precision low vs x86 fp32:")
        lines.append(f"           decoder of {f16.get('decoder_model', '?')} ({f16['decoder_prompts']} prompt(s), "
                     f"wall {f16['decoder_s']} s, "
                     f"CPU {f16['decoder_cpu_s']} s): "
                     f"logits {_fig(f16['decoder_logits'])}; scores max abs {f16['decoder_scores']['max_abs']:.3g}")
        if "scene" in f16:
            sc = f16["scene"]
            lines.append(f"           (scene {sc['seed']}, objects {sc['objects']}, box + point, output 0; x86 fp32 IoU "
                         f"with the true masks {sc['x86_fp32_gt_iou']}; all 4 outputs: "
                         f"{_fig(f16['decoder_all_outputs'])})")
        enc = f16.get("encoder")
        lines.append(f"           encoder of {f16.get('encoder_model', '?')} (wall {f16['encoder_s']} s, "
                     f"CPU {f16['encoder_cpu_s']} s): {_fig(enc)}"
                     if isinstance(enc, dict)
                     else f"           encoder {enc}")
    i8 = results["int8"]
    if "encoder" in i8:
        lines.append(f"int8       encoder of {i8['model']}, int8 file in int8 arithmetic (memory {i8['memory']}) vs x86 "
                     f"fp32 (wall {i8['encoder_s']} s, CPU {i8['encoder_cpu_s']} s): {_fig(i8['encoder'])}")
        lines.append(f"           x86 int8 in int8 arithmetic: {_fig(i8['x86_int8_on'])}; in fp32 arithmetic: "
                     f"{_fig(i8['x86_int8_off'])}; ARM vs x86 expanded int8: rel "
                     f"{i8['vs_x86_int8_expanded']['rel_max']:.2g}")
    s2 = results["sam2"]
    if "decoder_logits" in s2:
        if "segment_logits" in s2:
            lines.append(f"sam2       tiny SAM 2 segment, MNN fp32 vs x86 fp32 (wall {s2['segment_s']} s): logits "
                         f"{_fig(s2['segment_logits'])}; full-res mask IoU {min(s2['segment_mask_iou']):.4f}")
        for k, c in s2["encoder"].items():
            lines.append(f"           tiny encoder {k}, precision low vs x86 fp32: {_fig(c)}")
        lines.append(f"           decoder of {s2['decoder_model']}, precision low vs x86 fp32 (wall {s2['decoder_s']} s): "
                     f"{_fig(s2['decoder_logits'])}; scores max abs {s2['decoder_scores']['max_abs']:.3g}")
        if "video_track" in s2:
            lines.append(f"           video, one tracking step of the tiny model, MNN fp32 vs x86 (wall {s2['video_s']} s): "
                         f"tracked logits {_fig(s2['video_track'])}; mask memory rel {s2['video_memory']['rel_max']:.2g}")
    failed = {n: r["failures"] for n, r in results.items() if not r.get("ok")}
    for name, r in results.items():
        lines.append(f"{name:<10} {'ok' if r.get('ok') else 'FAILED: ' + '; '.join(r['failures'])}")
    if a.seconds is not None:
        lines.append(f"lane wall time {a.seconds} s" + (f", CPU {a.cpu} s" if a.cpu is not None else "")
                     + f", load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    lines.append("ARM lane: " + ("PASSED" if not failed else f"FAILED ({', '.join(failed)})"))
    print("\n".join(lines), flush=True)
    (arm / "report.json").write_text(json.dumps({"results": results, "seconds": a.seconds, "cpu": a.cpu}, indent=1))
    return 0 if not failed else 1


def main(argv=None) -> int:
    from edgesam.runtime import _mnn

    _mnn.QUIET = True  # the checks print JSON on stdout, and read MNN's CPU report from its import line
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, args in (("convert-tiny", convert_tiny, ["out"]), ("convert-demo", convert_demo, ["out"]), ("reference", reference, ["bundle", "image", "x86"]),
                           ("platform", platform_check, ["arm"]), ("notorch", notorch, ["arm"]),
                           ("segment", segment, ["bundle", "image", "x86", "arm"]),
                           ("fp16", fp16, ["bundle", "x86", "arm"]), ("int8", int8, ["bundle", "x86", "arm"]),
                           ("convert-sam2", convert_sam2, ["tiny", "t"]),
                           ("sam2-reference", sam2_reference, ["tiny", "t", "image", "x86"]),
                           ("sam2", sam2, ["tiny", "t", "image", "x86", "arm"]),
                           ("report", report, ["arm"])):
        s = sub.add_parser(name)
        for arg in args:
            s.add_argument(arg)
        s.set_defaults(func=fn)
        if name in ("reference", "fp16"):
            s.add_argument("--decoder-bundle", help="bundle whose decoder the fp16 check runs (default: BUNDLE)")
        if name == "report":
            s.add_argument("--seconds", type=int)
            s.add_argument("--cpu", type=float, help="CPU seconds of the lane's processes")
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
