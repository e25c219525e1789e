"""Train the whole demo model end to end, TinyViT trunk included, on a 2-core CPU or a GPU.

The full MobileSAM (vit_t), every parameter trained, scenes drawn on the fly by worker processes
(``edgesam.synthetic.scenes.make_scene``, training seeds only). On a CPU the step is made cheap
three ways (measured split: ``training/profile_step.py``, figures in assets/demo_vit_t.md):
- ``--crop 448``: most steps run the trunk on a 448-px crop of the 1024 input whose origin is a
  multiple of 224 px, so its attention windows are the full image's (``training.common.CropTrunk``,
  a TinyViT built at the crop's size that shares the model's tensors); the neck, the decoder (with
  the matching crop of the positional encoding) and the targets run at crop scale; the last
  ``--full-frac`` of the budget runs on the full 1024 input, as inference does;
- ``--amp bf16`` (default): autocast to bfloat16 on the CPU as on CUDA;
- ``--batchnorm train`` (default): BatchNorms normalise with each crop's statistics and update
  their running ones. ``frozen`` is for a trunk whose running statistics were measured: the
  shipped trunk's are still torch's 0 and 1, and frozen they made every BatchNorm an identity
  (measured: 500 crop steps left held-out mIoU below the shipped model's).

Per step: ``--batch`` scenes, each preprocessed as the official predictor does (ResizeLongestSide,
normalise, pad), one encoder pass for the batch, then for up to ``--prompts`` objects per scene three
decoder passes, SAM-style:
- one point inside the object, multimask, the loss on the best of the three masks (SAM's ambiguity
  rule);
- a jittered box, single mask (token 0);
- point + refinement: the first pass's best logits (detached) as mask_input, plus a correction point
  on the larger error region (positive on a miss, negative on a false alarm), single mask.
Loss: focal x ``--focal-weight`` + dice on the 256 x 256 low-res logits, plus MSE between the IoU
head and each mask's true IoU. AdamW, linear warm-up, cosine decay to 10 % over the time budget.

``--robust W`` adds W x the weight-noise gap (``training.common.weight_noise_gap``): on full-image
steps (every ``--robust-every``-th), the encoder runs twice more in eval mode and fp32, as it is and
with its trunk weights multiplied by (1 + ``--robust-sigma`` x N(0, 1)), and the mean gain of the
worst 1 % of embedding positions is penalised. It targets what sank a retrained trunk's reduced-
precision files: a few positions whose embedding moved by 0.2-0.6 of its largest value under 0.3 %
weight noise, where MNN's fp16 and int8 files also failed the gate (assets/demo_vit_t.md, 2026-12-07).
It costs about as much as a step's trunk forward and backward, twice over.

Robust to the input (assets/demo_vit_t.md: the trained trunk amplified the one-grey-level difference
between MNN.cv's resize and PIL's): ``--dither P`` renders that share of scenes with a dithered
rounding, ``--noise S`` adds grain before the resize, and ``--consistency W`` adds W x how far the
inference embedding moves between the rendering trained on and a second one
(``training.common.input_noise_gap``; every ``--consistency-every``-th full-image step, one more
fp32 forward and backward of the encoder). The second rendering is dithered (``--twin dither``) or
the runtime's own MNN.cv resize (``--twin runtime``). ``--blocky P`` draws that share of scenes at
1/2 to 1/4 of their size and enlarges them, as an enlarged low-resolution photo (and the predictor
tests' images) look.

    python training/train_full.py --device cpu --crop 448 --full-frac 0.1 --minutes 115 --batch 1 \
        --workers 1 --margin 0.1 --snapshot-minutes 15 --out demo_full.pt
    python training/train_full.py --device cuda --minutes 12 --batch 16 --out demo_full.pt
    python training/train_full.py --device cuda --minutes 12 --resume demo_full.pt.state --out demo_full.pt

``--device auto`` (the default) takes CUDA when torch finds it, else the CPU. The run starts from the
shipped demo model (``--init shipped``; ``--init random`` for torch's init). Every ``--save-minutes``
and at the end it writes ``OUT.state`` (model, optimiser, step, seconds spent: what ``--resume``
reads) and ``OUT``, a plain fp16 state_dict that ``torch.load(..., weights_only=True)`` and the
official ``sam_model_registry["vit_t"]`` load. The log (``OUT.log``) begins with the exact command.
Then score it: ``training/evaluate.py OUT`` (the official predictor on held-out scenes).
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "assets" / "demo_vit_t.pt"
TRAIN_SEED_LIMIT = 100_000  # held-out scenes start here (edgesam.synthetic.quality.HELDOUT_SEEDS)


class UsageError(Exception):
    """A bad command line: one line on stderr, exit 2."""


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch finds no CUDA device here (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: expected auto, cpu or cuda")
    return name


def dithered_resize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The official resize (longest side 1024, PIL bilinear) done in float and rounded with a random
    dither: each pixel with a fractional part may land one grey level off PIL's rounding, as another
    resize implementation's fixed-point rounding does (MNN.cv's against PIL's, measured: the trained
    trunk moved masks under exactly that difference, assets/demo_vit_t.md)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = 1024 / max(h, w)
    size = (int(w * s + 0.5), int(h * s + 0.5))  # ResizeLongestSide.get_preprocess_shape's rounding
    chans = [np.asarray(Image.fromarray(image[..., c].astype(np.float32), "F").resize(size, Image.BILINEAR))
             for c in range(image.shape[2])]
    out = np.floor(np.stack(chans, -1) + rng.random((size[1], size[0], image.shape[2]), dtype=np.float32))
    return np.clip(out, 0, 255).astype(np.uint8)


def runtime_resize(image: np.ndarray) -> np.ndarray:
    """The image resized as edgesam's runtime resizes it (MNN.cv, ``runtime.preprocess``), before the
    normalisation: float32 grey levels at the official output size. Its rounding differs from PIL's by
    one grey level at 17-25 % of the pixels of the predictor tests' images, which the trained trunk
    amplified (assets/demo_vit_t.md); --twin runtime trains against exactly that difference."""
    from dataclasses import replace

    from edgesam.runtime.preprocess import SAM_PREPROCESS, resize_normalise

    spec = replace(SAM_PREPROCESS, pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0))
    return resize_normalise(image, False, "pyramid", spec)


def blocky_scene(seed: int):
    """A training scene drawn at 1/2 to 1/4 of its size and enlarged (nearest), image and masks alike:
    the staircase edges and flat blocks of an enlarged low-resolution source."""
    from edgesam.synthetic.scenes import Scene, make_scene

    full = make_scene(seed)
    h, w = full.image.shape[:2]
    k = int(np.random.default_rng([seed, 1]).integers(2, 5))
    small = make_scene(seed, (max(8, h // k), max(8, w // k)))
    ys = np.arange(h) * small.image.shape[0] // h
    xs = np.arange(w) * small.image.shape[1] // w
    return Scene(small.image[ys][:, xs], small.owner[ys][:, xs], small.painted, seed, full.min_area)


TWINS = ("dither", "runtime")


def scene_item(seed: int, max_objects: int, dither: float = 0.0, twin: str = "", noise: float = 0.0,
               blocky: float = 0.0) -> dict:
    """One training scene as the model takes it: the image resized as the official predictor does
    (longest side 1024, uint8, not yet normalised or padded) and the low-res (256 x 256) targets of
    its objects in a seeded random order, those that keep a pixel at low resolution (a thin sliver
    can vanish there, and a prompt needs a pixel to land on). A full-image step prompts the first
    ``max_objects``; a crop step those of them that the crop sees. ``twin`` ("dither" or "runtime",
    for --consistency) adds a second rendering of the same source: dithered_resize or runtime_resize."""
    from mobile_sam.utils.transforms import ResizeLongestSide

    from edgesam.synthetic.scenes import make_scene
    from training.common import low_res_targets

    rng = np.random.default_rng(seed)
    sc = blocky_scene(seed) if blocky and np.random.default_rng([seed, 2]).random() < blocky else make_scene(seed)
    targets = low_res_targets(sc.masks)
    targets = targets[targets.any((1, 2))]
    order = rng.permutation(len(targets))
    source = sc.image
    if noise:  # sensor-like grain of a random strength up to --noise grey levels (the tests' images carry 3)
        grain = rng.normal(0.0, rng.uniform(0.0, noise), source.shape)
        source = np.clip(source + grain, 0, 255).astype(np.uint8)
    image = dithered_resize(source, rng) if rng.random() < dither else ResizeLongestSide(1024).apply_image(source)
    item = {"image": image, "targets": targets[order], "seed": seed}
    if twin == "dither":
        item["twin"] = dithered_resize(source, rng)
    elif twin == "runtime":
        item["twin"] = runtime_resize(np.ascontiguousarray(source, dtype=np.uint8))
    elif twin:
        raise ValueError(f"twin {twin!r}: expected one of {TWINS}")
    return item


def _as_is(item: dict) -> dict:
    """The loader's collate function: items stay numpy (torch's default turns arrays into tensors)."""
    return item


def scene_stream(start: int, workers: int, max_objects: int, dither: float = 0.0, twin: str = "",
                 noise: float = 0.0, blocky: float = 0.0):
    """Endless training scenes from seeds derived from ``start`` (the resumed step), drawn by
    ``workers`` processes (0: in this process)."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    class Scenes(IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            wid = 0 if info is None else info.id
            rng = np.random.default_rng([start, wid])
            while True:
                yield scene_item(int(rng.integers(0, TRAIN_SEED_LIMIT)), max_objects, dither, twin, noise, blocky)

    loader = DataLoader(Scenes(), batch_size=None, collate_fn=_as_is, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=bool(workers))
    return iter(loader)


def random_points(masks: np.ndarray, rng: np.random.Generator, origin=(0, 0)) -> np.ndarray:
    """One pixel of each low-res mask (K x h x w, the window at low-res pixel ``origin`` = (y, x) of
    the 256 x 256 frame), as (x, y) in the 1024 input frame."""
    pts = np.zeros((len(masks), 2), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys):
            k = int(rng.integers(len(ys)))
            pts[i] = (xs[k] + origin[1]) * 4 + rng.uniform(0, 4), (ys[k] + origin[0]) * 4 + rng.uniform(0, 4)
    return pts


def jittered_boxes(masks: np.ndarray, rng: np.random.Generator, origin=(0, 0)) -> np.ndarray:
    """Each mask's box in the 1024 frame, each side moved by up to 10 % of the box (at most 20 px),
    as SAM's training jitters them, kept inside the window (``random_points`` says what origin is)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    oy, ox = origin
    lo = np.array([ox, oy, ox, oy], np.float32) * 4
    hi = lo + np.array([masks.shape[2], masks.shape[1]] * 2, np.float32) * 4
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys):
            b = np.array([xs.min() + ox, ys.min() + oy, xs.max() + 1 + ox, ys.max() + 1 + oy], np.float32) * 4
            w, h = b[2] - b[0], b[3] - b[1]
            b += np.clip(rng.normal(0, 0.1, 4) * np.array([w, h, w, h]), -20, 20)
            boxes[i] = np.clip(b, lo, hi)
    return boxes


def correction_points(pred: np.ndarray, masks: np.ndarray, rng: np.random.Generator, origin=(0, 0)):
    """A point on each prediction's larger error region: (K x 2 points, K labels)."""
    pts, labels = np.zeros((len(masks), 2), np.float32), np.ones(len(masks), np.float32)
    for i, (p, m) in enumerate(zip(pred, masks)):
        miss, extra = m & ~p, p & ~m
        region, labels[i] = (miss, 1.0) if miss.sum() >= extra.sum() else (extra, 0.0)
        if not region.any():
            region, labels[i] = m, 1.0
        pts[i] = random_points(region[None], rng, origin)[0]
    return pts, labels


def decode(model, emb, points=None, labels=None, boxes=None, mask_input=None, multimask=False, origin=(0, 0)):
    """The official prompt encoder + mask decoder on one image embedding and K prompts.

    ``emb`` may be a crop's embedding (1 x 256 x t x t at token ``origin`` = (y, x) of the 64 x 64
    grid): the decoder is attention and transposed convolutions, so it runs on any grid, with the
    matching crop of the dense positional encoding and of the no-mask embedding. Prompts stay in the
    1024 input frame; ``mask_input`` is at the crop's low-res scale (4t x 4t). On the full grid this
    is exactly the official computation."""
    pe = model.prompt_encoder
    sparse, dense = pe(points=None if points is None else (points, labels), boxes=boxes, masks=None)
    th, tw = emb.shape[-2:]
    ty, tx = origin
    dense = dense[..., :th, :tw] if mask_input is None else pe.mask_downscaling(mask_input)
    return model.mask_decoder(image_embeddings=emb, image_pe=pe.get_dense_pe()[..., ty:ty + th, tx:tx + tw],
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                              multimask_output=multimask)


def scene_loss(model, emb, targets: np.ndarray, rng: np.random.Generator, focal_weight: float, device,
               origin=(0, 0), margin: float = 0.0):
    """Loss and IoU figures for one scene's prompts (point, box, point + refinement).

    ``targets`` are the low-res masks of the window that ``emb`` covers (origin in tokens, as
    ``decode`` takes it). ``margin`` weighs a hinge on logits within 1 of zero: masks whose logits
    hover near the threshold over wide areas flip under fp16 and int8 weights."""
    import torch

    from training.common import dice_loss, focal_loss, hard_iou

    t = torch.as_tensor(targets, dtype=torch.float32, device=device)[:, None]  # K x 1 x h x w
    lo = (4 * origin[0], 4 * origin[1])  # the window's origin in low-res pixels

    def tensor(a):
        return torch.as_tensor(a, device=device)

    def mask_loss(logits, iou_pred, target):
        logits = logits.float()
        per = focal_weight * focal_loss(logits, target.expand_as(logits)) + dice_loss(logits, target.expand_as(logits))
        if margin:
            per = per + margin * torch.relu(1 - logits.abs()).flatten(-2).mean(-1)
        with torch.no_grad():
            iou = hard_iou(logits, target.expand_as(logits))
        return per, iou, ((iou_pred.float() - iou) ** 2)

    # one point, multimask: the best of the three masks carries the mask loss, every IoU prediction learns
    pts = tensor(random_points(targets, rng, lo))[:, None]
    lp, ip = decode(model, emb, pts, torch.ones(len(targets), 1, device=device), multimask=True, origin=origin)
    per, iou_p, iou_err = mask_loss(lp, ip, t)
    best = per.argmin(1)
    rows = torch.arange(len(targets), device=device)
    loss = per[rows, best].mean() + iou_err.mean()
    # a jittered box, single mask
    lb, ib = decode(model, emb, boxes=tensor(jittered_boxes(targets, rng, lo)), origin=origin)
    per_b, iou_b, err_b = mask_loss(lb, ib, t)
    loss = loss + per_b.mean() + err_b.mean()
    # point + refinement from the first pass's best mask
    prev = lp[rows, best][:, None].detach()
    c_pts, c_lab = correction_points((prev[:, 0] > 0).cpu().numpy(), targets, rng, lo)
    pts2 = torch.cat([pts, tensor(c_pts)[:, None]], 1)
    lab2 = torch.cat([torch.ones(len(targets), 1, device=device), tensor(c_lab)[:, None]], 1)
    lr_, ir = decode(model, emb, pts2, lab2, mask_input=prev.float(), origin=origin)
    per_r, iou_r, err_r = mask_loss(lr_, ir, t)
    loss = loss + per_r.mean() + err_r.mean()
    figures = {"iou_point": float(iou_p[rows, best].mean()), "iou_box": float(iou_b.mean()),
               "iou_refine": float(iou_r.mean()),
               "iou_head_err": float(torch.cat([iou_err[rows, best], err_b[:, 0], err_r[:, 0]]).detach().mean().sqrt())}
    return loss / 3, figures


def crop_window(targets: np.ndarray, origin: tuple[int, int], tokens: int, max_objects: int,
                min_pixels: int = 4) -> np.ndarray:
    """The low-res targets inside a crop of ``tokens`` tokens at token ``origin``: the first
    ``max_objects`` of the objects that keep at least ``min_pixels`` low-res pixels there."""
    y, x = 4 * origin[0], 4 * origin[1]
    win = targets[:, y:y + 4 * tokens, x:x + 4 * tokens]
    return win[win.sum((1, 2)) >= min_pixels][:max_objects]


def freeze_batchnorm(model) -> None:
    """BatchNorms use and keep their running statistics; their scale and shift still train."""
    import torch

    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.eval()


def build(init: str):
    import torch

    from edgesam.convert.sam_models import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("vit_t")
    if init == "shipped":
        sd = torch.load(SHIPPED, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model


def save(model, opt, step: int, spent: float, out: Path) -> None:
    """OUT.state for --resume and OUT as a plain fp16 state_dict, each written to a temporary name first."""
    import torch

    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "seconds": spent}
    for path, obj in ((out.with_name(out.name + ".state"), state),
                      (out, {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()})):
        tmp = path.with_name(path.name + ".tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)


def _mean_of_known(values: list) -> float:
    """The mean of the values that are not NaN (NaN if none is): a figure not measured every step."""
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else float("nan")


def peak_memory_gb(device: str) -> float:
    """Peak memory so far: CUDA's allocator on a GPU, the process's peak RSS on the CPU."""
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def train(args, device: str, log) -> dict:
    import torch

    from training.common import CropTrunk, input_noise_gap, weight_noise_gap

    torch.manual_seed(args.seed)
    if device == "cpu":
        torch.set_num_threads(args.threads)
    model = build(args.init).to(device).train()
    if args.batchnorm == "frozen":
        freeze_batchnorm(model)
    if args.checkpoint_trunk:  # recompute each TinyViT block's activations in the backward pass
        for layer in model.image_encoder.layers:
            layer.use_checkpoint = True
    crop = None
    if args.crop:
        crop = CropTrunk(model, args.crop)
        crop.crop.to(device).train(model.training)
        if args.batchnorm == "frozen":
            freeze_batchnorm(crop.crop)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    step, spent = 0, 0.0
    if args.resume:
        state = torch.load(args.resume, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, spent = int(state["step"]), float(state["seconds"])
        log(f"resumed from {args.resume}: step {step}, {spent / 60:.1f} min already spent")
    first, budget = step, args.minutes * 60 + spent
    scenes = scene_stream(step, args.workers, args.prompts, args.dither, args.twin if args.consistency else "",
                          args.noise, args.blocky)
    rng = np.random.default_rng([args.seed, step])
    if args.amp == "bf16":
        amp = torch.autocast(device, dtype=torch.bfloat16)
    else:
        amp = torch.autocast(device, enabled=False)
    start, last_save, stats = time.time() - spent, time.time(), []
    last_snapshot = -1  # index of the last --snapshot-minutes slot copied
    while True:
        now = time.time() - start
        if now >= budget or (args.steps and step - first >= args.steps):
            break
        frac = now / budget
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        full = crop is None or frac >= 1 - args.full_frac
        items = [next(scenes) for _ in range(args.batch)]
        x = torch.stack([model.preprocess(torch.as_tensor(it["image"], device=device).permute(2, 0, 1).float())
                         for it in items])
        if full:
            origin, tokens = (0, 0), 64
        else:  # one window-aligned crop origin for the batch (the crops share one trunk pass)
            origin, tokens = crop.origin(rng, {"size": items[0]["image"].shape[:2]}), crop.tokens
        windows = [crop_window(it["targets"], origin, tokens, args.prompts) for it in items]
        if not any(len(w) for w in windows):
            continue
        with amp:
            if full:
                emb = model.image_encoder(x)
            else:
                emb = model.image_encoder.neck(crop.grid(x, *origin))
            losses, figs = [], []
            for i, w in enumerate(windows):
                if len(w):
                    loss_i, f = scene_loss(model, emb[i:i + 1], w, rng, args.focal_weight, device, origin, args.margin)
                    losses.append(loss_i)
                    figs.append(f)
        loss = torch.stack(losses).float().mean()
        gap = float("nan")
        if args.robust and full and step % args.robust_every == 0:
            with torch.autocast(device, enabled=False):  # bf16 rounding would swamp the noise it measures
                gap_t = weight_noise_gap(model.image_encoder, x, args.robust_sigma)
            loss = loss + args.robust * gap_t
            gap = float(gap_t.detach())
        moved = float("nan")
        if args.consistency and full and step % args.consistency_every == 0:
            x2 = torch.stack([model.preprocess(torch.as_tensor(it["twin"], device=device).permute(2, 0, 1).float())
                              for it in items])
            with torch.autocast(device, enabled=False):  # bf16 rounding would swamp the change it measures
                moved_t = input_noise_gap(model.image_encoder, x, x2)
            loss = loss + args.consistency * moved_t
            moved = float(moved_t.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        stats.append({"loss": float(loss.detach()), **{k: float(np.mean([f[k] for f in figs])) for k in figs[0]}})
        if args.robust:
            stats[-1]["gap"] = gap
        if args.consistency:
            stats[-1]["moved"] = moved
        if step % args.log_every == 0 or step == 1:
            recent = {k: _mean_of_known([s[k] for s in stats[-args.log_every:]]) for k in stats[-1]}
            log(f"step {step} {now / 60:.1f} min lr {lr:.2e} grid {tokens} "
                + " ".join(f"{k} {v:.3f}" for k, v in recent.items())
                + f" peak {peak_memory_gb(device):.1f} GB")
        if time.time() - last_save >= args.save_minutes * 60:
            save(model, opt, step, time.time() - start, args.out)
            last_save = time.time()
            if args.snapshot_minutes and now // (args.snapshot_minutes * 60) > last_snapshot:
                last_snapshot = now // (args.snapshot_minutes * 60)
                snap = args.out.with_name(f"{args.out.stem}.{int(now // 60):04d}min{args.out.suffix}")
                shutil.copyfile(args.out, snap)
                log(f"snapshot {snap.name}")
    spent = time.time() - start
    save(model, opt, step, spent, args.out)
    log(f"done: {step} steps, {spent / 60:.1f} min in all, on {device}; wrote {args.out} and {args.out}.state")
    return {"steps": step, "minutes": spent / 60, "device": device}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when torch finds it), cuda or cpu")
    ap.add_argument("--minutes", type=float, default=12.0, help="time budget of this run (resumed runs add to it)")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps of this run (0: budget only)")
    ap.add_argument("--batch", type=int, default=8, help="scenes per step")
    ap.add_argument("--checkpoint-trunk", action="store_true",
                    help="gradient checkpointing in the TinyViT trunk: less memory, about a third more compute")
    ap.add_argument("--prompts", type=int, default=16, help="objects per scene, each prompted three ways")
    ap.add_argument("--crop", type=int, default=0,
                    help="train on window-aligned crops of this many px of the 1024 input, a multiple of 224 "
                         "(trunk, decoder and targets at crop scale; 0: the full 1024 input every step)")
    ap.add_argument("--full-frac", type=float, default=0.15,
                    help="with --crop: the last share of the budget runs on the full 1024 input")
    ap.add_argument("--amp", default="bf16", help="bf16 (autocast, CPU and CUDA) or off (fp32)")
    ap.add_argument("--batchnorm", default="train",
                    help="train (batch statistics, running ones updated) or frozen (running statistics; only "
                         "for a trunk whose running statistics were ever measured: the shipped trunk's are 0 and 1)")
    ap.add_argument("--margin", type=float, default=0.0,
                    help="weight of a hinge on logits within 1 of zero (decided masks; 0: off)")
    ap.add_argument("--robust", type=float, default=0.0,
                    help="weight of the weight-noise gap penalty on full-image steps (training.common."
                         "weight_noise_gap: keeps the embedding steady under the trunk weights' storage error "
                         "in fp16 and int8 files; 0: off)")
    ap.add_argument("--robust-sigma", type=float, default=0.01,
                    help="with --robust: relative std of the multiplicative noise on the trunk's weights")
    ap.add_argument("--robust-every", type=int, default=1,
                    help="with --robust: measure the gap on every this-many-th step (it costs about two trunk "
                         "passes and a backward in fp32)")
    ap.add_argument("--dither", type=float, default=0.0,
                    help="fraction of scenes resized in float and rounded with a random dither (dithered_resize)")
    ap.add_argument("--noise", type=float, default=0.0,
                    help="grain added to each scene before the resize: Gaussian, std drawn up to this many grey levels")
    ap.add_argument("--consistency", type=float, default=0.0,
                    help="weight of the input-noise gap (training.common.input_noise_gap) on full-image steps")
    ap.add_argument("--twin", default="dither",
                    help="with --consistency, the second rendering: dither (dithered_resize) or runtime (the "
                         "runtime's own MNN.cv resize, runtime_resize)")
    ap.add_argument("--blocky", type=float, default=0.0,
                    help="fraction of scenes drawn at 1/2 to 1/4 of their size and enlarged (blocky_scene)")
    ap.add_argument("--consistency-every", type=int, default=2, help="every how many steps it is measured")
    ap.add_argument("--snapshot-minutes", type=float, default=0.0,
                    help="also keep a copy of OUT every this many minutes (OUT stem + .NNNNmin), for a learning curve")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=200, help="steps of linear lr warm-up")
    ap.add_argument("--focal-weight", type=float, default=2.0,
                    help="focal : dice (SAM: 20; 20 collapsed to all-background in this project's CPU runs)")
    ap.add_argument("--clip", type=float, default=0.0, help="gradient norm clip (0: off)")
    ap.add_argument("--init", default="shipped", help="shipped (assets/demo_vit_t.pt) or random")
    ap.add_argument("--resume", type=Path, default=None, help="an OUT.state file of an earlier run")
    ap.add_argument("--workers", type=int, default=None, help="scene-drawing processes (default: cores - 1)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads on the CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--save-minutes", type=float, default=3.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.workers is None:
        args.workers = max(0, (os.cpu_count() or 1) - 1)
    for name in ("minutes", "batch", "prompts", "lr", "warmup", "log_every", "save_minutes"):
        if not getattr(args, name) > 0:
            print(f"error: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    if not args.out.parent.is_dir():
        print(f"error: --out {args.out}: folder does not exist", file=sys.stderr)
        return 2
    if args.resume and not args.resume.is_file():
        print(f"error: --resume {args.resume}: no such file", file=sys.stderr)
        return 2
    try:
        if args.init not in ("shipped", "random"):
            raise UsageError(f"--init {args.init}: expected shipped or random")
        if args.amp not in ("bf16", "off"):
            raise UsageError(f"--amp {args.amp}: expected bf16 or off")
        if args.batchnorm not in ("frozen", "train"):
            raise UsageError(f"--batchnorm {args.batchnorm}: expected frozen or train")
        if args.crop and (args.crop % 224 or not 0 < args.crop < 1024):
            raise UsageError(f"--crop {args.crop}: expected a multiple of 224 below 1024 (0: no crops)")
        if args.robust < 0 or (args.robust and not (args.robust_sigma > 0 and args.robust_every >= 1)):
            raise UsageError("--robust must be >= 0, with --robust-sigma > 0 and --robust-every >= 1")
        if not 0 <= args.full_frac <= 1:
            raise UsageError(f"--full-frac {args.full_frac}: expected a share between 0 and 1")
        if args.consistency < 0 or args.consistency_every < 1:
            raise UsageError("--consistency must be >= 0, with --consistency-every >= 1")
        if not 0 <= args.noise <= 64:
            raise UsageError(f"--noise {args.noise}: expected 0 to 64 grey levels")
        if not 0 <= args.dither <= 1:
            raise UsageError(f"--dither {args.dither}: expected a share between 0 and 1")
        if args.twin not in TWINS:
            raise UsageError(f"--twin {args.twin}: expected one of {', '.join(TWINS)}")
        if not 0 <= args.blocky <= 1:
            raise UsageError(f"--blocky {args.blocky}: expected a share between 0 and 1")
        device = pick_device(args.device)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log_file = args.out.with_name(args.out.name + ".log").open("a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    log("$ " + shlex.join([sys.executable, *sys.argv]))
    train(args, device, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
