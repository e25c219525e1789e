"""Per-frame SAM 2 video tracking, side by side on the same weights and clip:

  torch-official   sam2.SAM2VideoPredictor (torch, memory kept in float32: on the CPU its bfloat16
                   memory fails at the second frame, convert/sam2_video.float32_memory_storage)
  edgesam-*        edgesam.runtime.SAM2VideoPredictor on the bundle's MNN fp32 / fp16 files, ONNX
                   Runtime and OpenVINO (fp32), and OpenVINO at runtime precision low (bf16 where the
                   CPU has it)

A point on frame 0, then ``propagate_in_video`` over the clip; the time per tracked frame (encoder +
memory attention + decoder + memory encoder, the frame's reading and preprocessing included) is the
propagation's time / its frames. One process per pipeline (spawned), one at a time, in a new random
order each run; medians with the ratio against torch-official, the peak RSS, and the lowest
per-frame mask IoU against torch-official.

  .venv/bin/python benchmarks/sam2_video.py [--model sam2.1_hiera_t] [--frames 16] [--runs 3] [--threads 2]
      [--bundle B] [--pipelines mnn-fp32,openvino-fp32-low,...]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipelines import memory_mb, start_workers  # noqa: E402


def build(work: Path, model: str) -> Path:
    from edgesam.convert import code_fingerprint
    from edgesam.convert.pipeline import ConvertOptions, convert

    out = work / f"{model}-video-random0-{code_fingerprint()}"
    if not (out / "manifest.json").exists():
        convert(ConvertOptions(model=model, out=out, random_init=0, precisions=("fp32", "fp16"),
                               formats=("onnx", "mnn", "openvino"), force=True), log=print)
    return out


# edgesam pipelines: (backend, file precision, arithmetic). "openvino-fp32-low" lets OpenVINO pick its
# reduced inference precision (bf16 on CPUs with AVX-512 BF16 or AMX) for the encoder, the memory
# attention and the memory encoder, the tracking decoder at f32: the combination the video gate checks on
# the converting machine's CPU, at the bf16 row of the tolerances.
PIPELINES = {"mnn-fp32": ("mnn", "fp32", "high"), "mnn-fp16": ("mnn", "fp16", "high"), "ort-fp32": ("ort", "fp32", "high"),
             "openvino-fp32": ("openvino", "fp32", "high"), "openvino-fp32-low": ("openvino", "fp32", "low")}


def _serve(conn, kind: str, args: tuple) -> None:
    """Build one pipeline, then answer (frames_dir, point) with (seconds per frame, peak RSS MB, masks)."""
    threads = args[-1]
    if kind == "torch":
        import warnings

        import torch

        from edgesam.convert.sam2_family import random_model
        from edgesam.convert.sam2_video import float32_memory_storage, official_video_predictor

        warnings.simplefilter("ignore")
        torch.set_num_threads(threads)
        pred = official_video_predictor(random_model(args[0], 0))
        ctx = float32_memory_storage
        name = "torch-official"
    else:
        import contextlib

        from edgesam.runtime import SAM2VideoPredictor

        bundle, backend, precision, arithmetic = args[:4]
        # "low": the gated combination, the tracking decoder kept at full precision
        pred = SAM2VideoPredictor(bundle, backend=backend, precision=precision, threads=threads, fill_hole_area=0,
                                  runtime_precision=arithmetic, progress=False,
                                  decoder_runtime_precision="high" if arithmetic == "low" else None)
        ctx = contextlib.nullcontext
        name = f"edgesam-{backend}-{precision}" + ("-low" if arithmetic == "low" else "")
    conn.send(name)
    while True:
        job = conn.recv()
        if job is None:
            return
        frames, point = job
        with ctx():
            if kind == "torch":
                import torch

                with torch.inference_mode():
                    secs, masks = _track(pred, frames, point)
            else:
                secs, masks = _track(pred, frames, point)
        conn.send((secs, memory_mb(), masks))


def _track(pred, frames: str, point) -> tuple[float, list]:

    state = pred.init_state(frames)
    pred.add_new_points_or_box(state, 0, 1, points=[point], labels=[1])
    t = time.perf_counter()
    masks = [np.packbits(np.asarray(m)[0, 0] > 0) for _, _, m in pred.propagate_in_video(state)]
    return (time.perf_counter() - t) / len(masks), masks


def main() -> None:
    from edgesam.runtime.maskstats import mask_iou
    from edgesam.synthetic.clips import make_clip, write_jpeg_folder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/edgesam-bench")
    ap.add_argument("--bundle", type=Path, help="a bundle of --model with video graphs, converted earlier")
    ap.add_argument("--pipelines", default=",".join(PIPELINES),
                    help="edgesam pipelines to time beside the official (comma-separated): " + ", ".join(PIPELINES))
    a = ap.parse_args()
    chosen = a.pipelines.split(",")
    unknown = sorted(set(chosen) - set(PIPELINES) - {"torch"})
    if unknown:
        print(f"error: unknown pipeline(s) {', '.join(unknown)}; choose from {', '.join(PIPELINES)} "
              "(the official one always runs)", file=sys.stderr)
        sys.exit(2)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = a.bundle or build(work, a.model)
    clip = make_clip(a.frames, (480, 640), seed=0)
    frames = str(write_jpeg_folder(clip, work / f"clip{a.frames}"))
    point = clip.centres[1][0]
    t = a.threads
    specs = [("torch", (a.model, t))] + [("edgesam", (str(bundle), *PIPELINES[k], t)) for k in PIPELINES
                                          if k in chosen]
    workers = start_workers(_serve, specs)  # one spawned process per pipeline (benchmarks/pipelines.py)
    times = {name: [] for name, _, _ in workers}
    rss, masks = {}, {}
    order = random.Random(0)
    for run in range(a.runs):
        for name, conn, _ in order.sample(workers, len(workers)):
            time.sleep(0.5)
            conn.send((frames, point))
            secs, peak, packed = conn.recv()
            times[name].append(secs)
            rss[name], masks[name] = peak, packed
        print(f"run {run + 1}/{a.runs} done", file=sys.stderr, flush=True)
    for _, conn, proc in workers:
        conn.send(None)
        proc.join()
    ref_name = "torch-official"
    ref = statistics.median(times[ref_name])
    h, w = clip.frames[0].shape[:2]

    def unpack(p):
        return np.unpackbits(p)[: h * w].reshape(h, w).astype(bool)

    print(f"\n{a.model} (untrained random weights, seed 0), {a.frames} frames of {w}x{h}, one object, {t} threads: "
          f"median of {a.runs} interleaved runs, one process per pipeline")
    print(f"{'pipeline':<24} {'ms / frame':>10} {'ratio':>6} {'peak RSS':>9} {'min IoU':>8}")
    for name, _, _ in workers:
        med = statistics.median(times[name])
        iou = min(mask_iou(unpack(x), unpack(y)) for x, y in zip(masks[name], masks[ref_name]))
        print(f"{name:<24} {med * 1e3:10.0f} {med / ref:6.3f} {rss[name]:6.0f} MB {iou:8.4f}")


if __name__ == "__main__":
    main()
