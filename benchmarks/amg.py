"""Segment everything: the official torch generator against edgesam's, same weights, same image.

One run times, on the same 600x400 image and vit_t weights with 2 threads:
  official   mobile_sam.SamAutomaticMaskGenerator (torch), official defaults, 32x32 points
  edgesam    edgesam.runtime.SamAutomaticMaskGenerator on each --backend and --points-per-batch

and prints wall time, the speed-up over the official generator, the decoder's share, the
fraction of the decoder's FLOP floor reached (decoder GFLOP per prompt from the bundle
manifest x prompts / numpy's measured float32 matmul peak on the same threads), and how well
the masks match the official ones (count, masks matched at IoU >= 0.9). Needs the convert
extra (torch, mobile_sam, onnxruntime). Usage:

  .venv/bin/python benchmarks/amg.py [--checkpoint assets/demo_vit_t.pt] [--backends ort,mnn] [--decoder-graph folded]
                                     [--points-per-batch 64,128] [--skip-official] [--json out.json]
                                     [--pred-iou-thresh 0 --stability-score-thresh 0.5]

The thresholds default to the official ones. The demo model's IoU head predicts about 0.25, so at
the defaults both generators keep no mask; lowered thresholds time the survivors' path too
(upscale, NMS, RLE) on dozens of masks.

The official generator takes minutes; --skip-official reuses nothing and just omits it.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def bundle_for(work: Path, checkpoint: str | None, graph: str = "folded") -> Path:
    import hashlib

    from edgesam.convert import code_fingerprint
    from edgesam.convert.pipeline import ConvertOptions, convert

    weights = "random0"
    if checkpoint:  # the file's hash, so that a retrained checkpoint never reuses a stale bundle
        weights = f"{Path(checkpoint).stem}-{hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:8]}"
    out = work / f"vit_t-{weights}-{graph}-{code_fingerprint()}"
    if not (out / "manifest.json").exists():
        convert(ConvertOptions(model="vit_t", out=out, random_init=None if checkpoint else 0,
                               checkpoint=Path(checkpoint) if checkpoint else None, precisions=("fp32",),
                               decoder_graph=graph,
                               force=True), log=lambda m: None)
    return out


def bench_image(path: str | None) -> np.ndarray:
    """The image as RGB uint8; default: assets/landscape.png resized to 600x400 (PIL bicubic)."""
    from PIL import Image

    img = Image.open(path or REPO / "assets" / "landscape.png").convert("RGB")
    return np.asarray(img if path else img.resize((600, 400), Image.BICUBIC))


def match(ours: list[dict], ref: list[dict]) -> dict:
    """Greedy one-to-one matching by mask IoU; counts and the IoU of matched pairs."""
    if not ours or not ref:
        return {"ours": len(ours), "official": len(ref), "matched": 0, "median_iou": None}
    a = np.stack([r["segmentation"].ravel() for r in ours]).astype(np.float32)
    b = np.stack([r["segmentation"].ravel() for r in ref]).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    iou = inter / np.maximum(union, 1)
    pairs = []
    while iou.size and iou.max() >= 0.5:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        pairs.append(float(iou[i, j]))
        iou[i, :] = -1
        iou[:, j] = -1
    good = [p for p in pairs if p >= 0.9]
    return {"ours": len(ours), "official": len(ref), "matched": len(good),
            "median_iou": float(np.median(pairs)) if pairs else None}


def run_official(checkpoint: str | None, image: np.ndarray, threads: int, kw: dict) -> tuple[float, list]:
    import torch
    from mobile_sam import SamAutomaticMaskGenerator

    from edgesam.convert.sam_models import model_from_checkpoint, random_model

    torch.set_num_threads(threads)
    model = model_from_checkpoint("vit_t", checkpoint) if checkpoint else random_model("vit_t", 0)
    gen = SamAutomaticMaskGenerator(model, **kw)
    t = time.perf_counter()
    records = gen.generate(image)
    return time.perf_counter() - t, records


def run_ours(bundle: Path, backend: str, ppb: int, image: np.ndarray, threads: int, kw: dict):
    from edgesam.runtime import SamAutomaticMaskGenerator, SamPredictor

    pred = SamPredictor(bundle, backend=backend, threads=threads)
    gen = SamAutomaticMaskGenerator(pred, points_per_batch=ppb, **kw)
    t = time.perf_counter()
    records = gen.generate(image)
    return time.perf_counter() - t, records, dict(gen.stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "assets" / "demo_vit_t.pt")
                    if (REPO / "assets" / "demo_vit_t.pt").exists() else None)
    ap.add_argument("--image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--backends", default="ort,mnn")
    ap.add_argument("--points-per-batch", default="64")
    ap.add_argument("--pred-iou-thresh", type=float, default=None,
                    help="passed to both generators (default: the official 0.88)")
    ap.add_argument("--stability-score-thresh", type=float, default=None,
                    help="passed to both generators (default: the official 0.95)")
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--decoder-graph", default="folded", choices=["folded", "reference"],
                    help="edgesam's decoder graph (convert --decoder-graph)")
    ap.add_argument("--work", default="/tmp/edgesam-bench")
    ap.add_argument("--json")
    a = ap.parse_args()
    from edgesam.bundle import load_bundle
    from edgesam.measure.bench import matmul_peak

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = bundle_for(work, a.checkpoint, a.decoder_graph)
    image = bench_image(a.image)
    kw = dict(points_per_side=a.points_per_side)
    for name in ("pred_iou_thresh", "stability_score_thresh"):
        if getattr(a, name) is not None:
            kw[name] = getattr(a, name)
    n_prompts = a.points_per_side ** 2
    gflop = load_bundle(bundle).manifest["flops"]["decoder_per_prompt"] / 1e9
    peak = matmul_peak(a.threads)
    floor_s = gflop * n_prompts / peak
    load = os.getloadavg()
    print(f"image {image.shape[1]}x{image.shape[0]}, {n_prompts} prompts, {a.threads} threads, generator {kw}, weights: "
          f"{a.checkpoint or 'random (seed 0): masks collapse, few survive the filters'}")
    print(f"decoder {gflop:.2f} GFLOP/prompt, matmul peak {peak:.0f} GFLOP/s -> FLOP floor {floor_s:.1f} s; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    result = {"image": list(image.shape[:2]), "prompts": n_prompts, "threads": a.threads, "checkpoint": a.checkpoint,
              "decoder_gflop_per_prompt": gflop, "matmul_peak_gflops": peak, "flop_floor_s": floor_s,
              "load_before": load, "generator": kw, "runs": []}
    ref = None
    if not a.skip_official:
        t_off, ref = run_official(a.checkpoint, image, a.threads, kw)
        result["official_s"] = t_off
        print(f"official torch       {t_off:7.1f} s  {len(ref)} masks", flush=True)
    for backend in a.backends.split(","):
        for ppb in (int(v) for v in a.points_per_batch.split(",")):
            t, recs, st = run_ours(bundle, backend, ppb, image, a.threads, kw)
            row = {"backend": backend, "points_per_batch": ppb, "seconds": t, "masks": len(recs),
                   "decoder_s": st["t_decoder"], "encoder_s": st["t_encoder"], "filters_s": st["t_filter"],
                   "floor_fraction_total": floor_s / t, "floor_fraction_decoder": floor_s / st["t_decoder"],
                   "counts": {k: int(st[k]) for k in ("decoded", "iou_kept", "bound_kept", "stable", "kept")}}
            if ref is not None:
                row["speedup"] = result["official_s"] / t
                row["match"] = match(recs, ref)
            result["runs"].append(row)
            print(f"edgesam {backend:4s} ppb={ppb:<4d} {t:7.1f} s  {len(recs)} masks  "
                  + (f"x{row['speedup']:.2f} vs official  " if ref is not None else "")
                  + f"decoder {st['t_decoder']:.1f} s ({row['floor_fraction_decoder']:.0%} of FLOP floor rate), "
                  f"encoder {st['t_encoder']:.1f} s, filters {st['t_filter']:.1f} s; total at "
                  f"{row['floor_fraction_total']:.0%} of floor; candidates {row['counts']}"
                  + (f"; match {row['match']}" if ref is not None else ""), flush=True)
    result["load_after"] = os.getloadavg()
    print(f"load average after: {result['load_after'][0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
