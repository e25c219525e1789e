"""Where one training step of ``train_full.py`` spends its time on this machine, part by part.

    .venv/bin/python training/profile_step.py --reps 3            # crop 448 and full 1024, bf16 and fp32

For each configuration (input: a 448-px window-aligned crop or the full 1024 input; arithmetic:
bf16 autocast or fp32) it times, after one warm-up step, the median of ``--reps`` steps of:
drawing a scene (``scene_item``: make_scene, resize, low-res targets), the trunk + neck forward,
each of the three decoder passes (one point multimask, a box, point + refinement) on ``--prompts``
objects, the loss, the backward pass of the whole step, the trunk's own backward (measured apart,
from the same forward), and the AdamW update. One line per configuration, in seconds. BatchNorms
run on their running statistics here (``--batchnorm frozen``); their share of a step is small.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def profile(crop_px: int, amp: str, reps: int, prompts: int, threads: int) -> dict:
    import torch

    from training.common import CropTrunk
    from training.train_full import (build, correction_points, crop_window, decode, freeze_batchnorm,
                                     jittered_boxes, random_points, scene_item)

    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build("shipped").train()
    freeze_batchnorm(model)
    crop = CropTrunk(model, crop_px) if crop_px else None
    if crop:
        freeze_batchnorm(crop.crop)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp == "bf16" else \
        (lambda: torch.autocast("cpu", enabled=False))
    rng = np.random.default_rng(0)
    rows = []
    seed = 0
    while len(rows) < reps + 1:
        seed += 1
        t = {}
        t0 = time.perf_counter()
        item = scene_item(seed, prompts)
        t["scene"] = time.perf_counter() - t0
        x = model.preprocess(torch.as_tensor(item["image"]).permute(2, 0, 1).float())[None]
        origin, tokens = ((0, 0), 64) if crop is None else (crop.origin(rng, {"size": item["image"].shape[:2]}),
                                                           crop.tokens)
        targets = crop_window(item["targets"], origin, tokens, prompts)
        if len(targets) < prompts // 2:
            continue
        tt = torch.as_tensor(targets, dtype=torch.float32)[:, None]
        lo = (4 * origin[0], 4 * origin[1])
        with ctx():
            t0 = time.perf_counter()
            emb = model.image_encoder(x) if crop is None else model.image_encoder.neck(crop.grid(x, *origin))
            t["trunk_fwd"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            pts = torch.as_tensor(random_points(targets, rng, lo))[:, None]
            lp, _ = decode(model, emb, pts, torch.ones(len(targets), 1), multimask=True, origin=origin)
            t["dec_point"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            lb, _ = decode(model, emb, boxes=torch.as_tensor(jittered_boxes(targets, rng, lo)), origin=origin)
            t["dec_box"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            prev = lp[:, :1].detach().float()
            c, lab = correction_points((prev[:, 0] > 0).numpy(), targets, rng, lo)
            lr_, _ = decode(model, emb, torch.cat([pts, torch.as_tensor(c)[:, None]], 1),
                            torch.cat([torch.ones(len(targets), 1), torch.as_tensor(lab)[:, None]], 1),
                            mask_input=prev, origin=origin)
            t["dec_refine"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(v.float(), tt.expand_as(v))
                   for v in (lp, lb, lr_))
        t["loss"] = time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss.backward()
        t["backward"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        opt.step()
        t["adamw"] = time.perf_counter() - t0
        # the trunk's own backward, from a fresh forward of the same input
        opt.zero_grad(set_to_none=True)
        with ctx():
            emb = model.image_encoder(x) if crop is None else model.image_encoder.neck(crop.grid(x, *origin))
        t0 = time.perf_counter()
        emb.float().square().mean().backward()
        t["trunk_bwd"] = time.perf_counter() - t0
        rows.append(t)
    rows = rows[1:]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["step"] = sum(med[k] for k in ("trunk_fwd", "dec_point", "dec_box", "dec_refine", "loss", "backward", "adamw"))
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="448:bf16,448:off,0:bf16,0:off",
                    help="comma-separated CROP:AMP (CROP 0: the full 1024 input; AMP bf16 or off)")
    a = ap.parse_args(argv)
    if a.reps < 1 or a.prompts < 1 or a.threads < 1:
        print("error: --reps, --prompts and --threads must be positive", file=sys.stderr)
        return 2
    configs = []
    for c in a.configs.split(","):
        crop, _, amp = c.partition(":")
        if not crop.isdigit() or amp not in ("bf16", "off"):
            print(f"error: --configs {c!r}: expected CROP:AMP, e.g. 448:bf16", file=sys.stderr)
            return 2
        configs.append((int(crop), amp))
    print(f"{a.prompts} prompts a scene, {a.threads} threads, median of {a.reps} steps (seconds)")
    for crop, amp in configs:
        med = profile(crop, amp, a.reps, a.prompts, a.threads)
        name = f"crop {crop}" if crop else "full 1024"
        print(f"{name:>9} {amp:>4}: " + " ".join(f"{k} {v:.3f}" for k, v in med.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
