"""Train the built-in demo model: MobileSAM's architecture (vit_t) on synthetic scenes, on a CPU.

What is trained:
- Without --train-trunk, the TinyViT trunk of the image encoder is frozen at torch's default init
  under a fixed seed (--trunk-init damped or conditioned change it: training/common.py: base_model),
  and its 320 x 64 x 64 outputs are cached per scene. With --train-trunk
  (resuming from such a run) the trunk is trained too, on 448-px window-aligned crops (CropTrunk),
  and the last part of the budget freezes it again and trains the rest on the full grid.
- The encoder's neck (1x1 + 3x3 convs with LayerNorms), the prompt encoder and the mask decoder
  are trained, SAM-style: focal (x20) + dice on the low-res masks, MSE on the predicted IoU.
- Prompts: one positive point (multimask, loss on the best of the three outputs: the ambiguity
  rule of SAM), a jittered box, 2-3 points with negatives, and a refinement step that feeds the
  previous low-res logits as mask_input plus a correction point on the error region.
- For speed most steps run on a random 24 x 24-token window of the 64 x 64 embedding (the
  decoder is attention + transposed convs, so it runs on any grid; the positional encoding is the
  matching crop of the full grid), then the last part of the budget runs on the full grid.

Run (the time budget is a flag; assets/demo_vit_t.md has the command behind the demo model):
    .venv/bin/python training/train_demo_model.py --minutes 24 --focal-weight 2 --out assets/demo_vit_t.pt
Tried and not shipped (see the model card): --train-trunk (resuming from such a run), and the
frozen trunks conditioned to keep the image: --trunk-init damped, and --trunk-init conditioned
(with --feature-noise 0.03), e.g.
    .venv/bin/python training/train_demo_model.py --trunk-init damped --scenes 400 --cache-only
    .venv/bin/python training/train_demo_model.py --trunk-init damped --scenes 400 --minutes 40 \
        --focal-weight 2 --out damped.pt
--cache-only fills the trunk-feature cache first (about 14 min for 400 scenes on 2 cores);
without it training fills the cache as it goes.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.common import (TRUNK_INITS, CropTrunk, base_model, cache_dir, cached_scene, dice_loss,  # noqa: E402
                             fill_cache, focal_loss, hard_iou)


class Trainer:
    def __init__(self, model, rng: np.random.Generator, focal_weight: float = 20.0, feature_noise: float = 0.0):
        self.focal_weight = focal_weight
        self.feature_noise = feature_noise
        self.m = model
        self.rng = rng
        self.pe = model.prompt_encoder.get_dense_pe().detach()

    # -- prompt sampling: mask pixels are low-res (256 frame) pixels offset by (oy, ox);
    #    the prompts returned are in the 1024 input frame ------------------------------------
    def sample_points(self, mask: np.ndarray, n: int, oy: int, ox: int) -> np.ndarray:
        ys, xs = np.nonzero(mask)
        k = self.rng.integers(0, len(ys), n)
        jit = self.rng.uniform(-1.5, 1.5, (n, 2))
        return np.stack([(xs[k] + ox) * 4 + 2, (ys[k] + oy) * 4 + 2], -1) + jit

    def jitter_box(self, mask: np.ndarray, oy: int, ox: int) -> np.ndarray:
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min() + ox, ys.min() + oy, xs.max() + 1 + ox, ys.max() + 1 + oy], float) * 4
        w, h = box[2] - box[0], box[3] - box[1]
        noise = self.rng.normal(0, 0.07, 4) * np.array([w, h, w, h])
        return box + np.clip(noise, -20, 20)

    # -- one decoder call -------------------------------------------------------------------
    def decode(self, emb, win, points=None, labels=None, boxes=None, mask_logits=None):
        y0, x0, s = win
        pts = None
        if points is not None:
            pts = (torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.float32))
        bx = None if boxes is None else torch.as_tensor(boxes, dtype=torch.float32)
        sparse, dense = self.m.prompt_encoder(points=pts, boxes=bx, masks=mask_logits)
        dense = dense[..., y0:y0 + s, x0:x0 + s]
        pe = self.pe[..., y0:y0 + s, x0:x0 + s]
        masks, iou = self.m.mask_decoder.predict_masks(emb, pe, sparse, dense)
        return masks, iou

    def disk_step(self, item: dict, s: int, n_prompts: int):
        """Warm-up task: the mask is a disk around the clicked point, whatever the image.

        From scratch the decoder first collapses to "all background" and is slow to leave it
        (measured: no progress in 800 steps on real targets); learning where the prompt is
        first, on this purely positional task, gets it past that point in about 100 steps."""
        feat = torch.from_numpy(item["feat"].astype(np.float32))[None]
        h, w = (int(v) for v in item["size"])
        sc = 1024 / max(h, w)
        th, tw = math.ceil(h * sc / 16), math.ceil(w * sc / 16)
        y0 = int(self.rng.integers(0, max(0, th - s) + 1))
        x0 = int(self.rng.integers(0, max(0, tw - s) + 1))
        ya, xa = max(0, y0 - 1), max(0, x0 - 1)
        emb = self.m.image_encoder.neck(feat[..., ya:y0 + s + 1, xa:x0 + s + 1])
        emb = emb[..., y0 - ya:y0 - ya + s, x0 - xa:x0 - xa + s]
        n = 4 * s
        cy, cx = self.rng.uniform(0, n, (2, n_prompts))
        r = self.rng.uniform(6, 30, n_prompts)
        yy, xx = np.mgrid[0:n, 0:n]
        tgt = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
               < r[:, None, None] ** 2).astype(np.float32)
        pts = np.stack([(cx + 4 * x0) * 4 + 2, (cy + 4 * y0) * 4 + 2], -1)[:, None]
        masks, iou = self.decode(emb, (y0, x0, s), pts, np.ones((n_prompts, 1)))
        t = torch.from_numpy(tgt)[:, None].expand(-1, 4, -1, -1)
        loss = (self.focal_weight * focal_loss(masks, t) + dice_loss(masks, t)).mean()
        return loss, F.mse_loss(iou, hard_iou(masks.detach(), t)), float(hard_iou(masks[:, 0], t[:, 0]).mean())

    def step(self, item: dict, s: int, n_prompts: int, feat=None, win=None):
        """One training step on a window of s x s tokens.

        feat: trunk features on the 64 x 64 grid (default: the cached ones); win: the window's
        top-left token, or None for a random one inside the image."""
        m, rng = self.m, self.rng
        if feat is None:
            feat = torch.from_numpy(item["feat"].astype(np.float32))[None]
        targets = item["targets"]
        h, w = (int(v) for v in item["size"])
        sc = 1024 / max(h, w)
        th, tw = math.ceil(h * sc / 16), math.ceil(w * sc / 16)
        if win is not None:
            y0, x0 = win
        else:
            y0 = int(rng.integers(0, max(0, th - s) + 1)) if s < 64 else 0
            x0 = int(rng.integers(0, max(0, tw - s) + 1)) if s < 64 else 0
        # neck on the window plus a one-token margin, so its 3x3 conv sees real neighbours
        ya, xa = max(0, y0 - 1), max(0, x0 - 1)
        feat = feat[..., ya:y0 + s + 1, xa:x0 + s + 1]
        if self.feature_noise:
            # Gaussian noise at this fraction of each channel's spread: the neck and decoder learn not
            # to lean on differences as small as what int8 weights change in the trunk (about 1.5 %).
            feat = feat + torch.randn_like(feat) * (self.feature_noise * feat.std(dim=(2, 3), keepdim=True))
        emb = m.image_encoder.neck(feat)
        emb = emb[..., y0 - ya:y0 - ya + s, x0 - xa:x0 - xa + s]
        tgt = targets[:, 4 * y0:4 * (y0 + s), 4 * x0:4 * (x0 + s)]
        oy, ox = 4 * y0, 4 * x0  # the window's origin in the 256 x 256 low-res frame
        area_in = tgt.reshape(len(tgt), -1).sum(1)
        area_all = targets.reshape(len(targets), -1).sum(1)
        ok = np.nonzero((area_in >= 12) & (area_in >= 0.5 * area_all))[0]
        if len(ok) == 0:
            return None
        pick = rng.choice(ok, size=min(n_prompts, len(ok)), replace=False)
        rng.shuffle(pick)
        groups = np.array_split(pick, 4)
        t_all = torch.from_numpy(tgt.astype(np.float32))
        losses, ious = [], []
        point_iou = float("nan")

        def mask_terms(logits, target):
            return self.focal_weight * focal_loss(logits, target) + dice_loss(logits, target)

        # 1. one positive point, multimask (tokens 1-3), loss on the best output
        g = groups[0]
        if len(g):
            pts = np.stack([self.sample_points(tgt[i], 1, oy, ox) for i in g])
            masks, iou = self.decode(emb, (y0, x0, s), pts, np.ones((len(g), 1)))
            t = t_all[g][:, None].expand(-1, 3, -1, -1)
            per = mask_terms(masks[:, 1:], t)
            best = per.min(1).values
            point_iou = float(hard_iou(masks[:, 1:].detach(), t).max(1).values.mean())
            losses.append(best)
            ious.append(F.mse_loss(iou[:, 1:], hard_iou(masks[:, 1:].detach(), t), reduction="none").mean(1))
            # 4. refinement of group 1: previous best logits as mask_input + a correction point
            with torch.no_grad():
                sel = per.argmin(1)
                prev = masks[torch.arange(len(g)), 1 + sel].detach()
            full_prev = torch.full((len(g), 1, 256, 256), -20.0)
            full_prev[:, 0, 4 * y0:4 * (y0 + s), 4 * x0:4 * (x0 + s)] = prev
            corr, lab = [], []
            for j, i in enumerate(g):
                err_fn = tgt[i] & (prev[j] <= 0).numpy()
                err_fp = ~tgt[i] & (prev[j] > 0).numpy()
                region, l = (err_fn, 1) if err_fn.sum() >= err_fp.sum() else (err_fp, 0)
                if not region.any():
                    region, l = tgt[i], 1
                corr.append(self.sample_points(region, 1, oy, ox)[0])
                lab.append(l)
            pts2 = np.concatenate([pts, np.array(corr)[:, None]], 1)
            lab2 = np.stack([np.ones(len(g)), np.array(lab)], 1)
            masks, iou = self.decode(emb, (y0, x0, s), pts2, lab2, mask_logits=full_prev)
            losses.append(mask_terms(masks[:, 0], t_all[g]))
            ious.append(F.mse_loss(iou[:, 0], hard_iou(masks[:, 0].detach(), t_all[g]), reduction="none"))
        # 2. jittered box, single output (token 0)
        g = groups[1]
        if len(g):
            boxes = np.stack([self.jitter_box(tgt[i], oy, ox) for i in g])
            masks, iou = self.decode(emb, (y0, x0, s), boxes=boxes)
            losses.append(mask_terms(masks[:, 0], t_all[g]))
            ious.append(F.mse_loss(iou[:, 0], hard_iou(masks[:, 0].detach(), t_all[g]), reduction="none"))
        # 3. two or three points, one of them possibly negative (outside the object), token 0
        g = groups[2]
        if len(g):
            n = int(rng.integers(2, 4))
            pts, labs = [], []
            for i in g:
                p = self.sample_points(tgt[i], n, oy, ox)
                lab = np.ones(n)
                outside = ~tgt[i]
                if rng.random() < 0.6 and outside.any():
                    p[-1] = self.sample_points(outside, 1, oy, ox)[0]
                    lab[-1] = 0
                pts.append(p)
                labs.append(lab)
            masks, iou = self.decode(emb, (y0, x0, s), np.stack(pts), np.stack(labs))
            losses.append(mask_terms(masks[:, 0], t_all[g]))
            ious.append(F.mse_loss(iou[:, 0], hard_iou(masks[:, 0].detach(), t_all[g]), reduction="none"))
        # 5. box + one point, token 0
        g = groups[3]
        if len(g):
            boxes = np.stack([self.jitter_box(tgt[i], oy, ox) for i in g])
            pts = np.stack([self.sample_points(tgt[i], 1, oy, ox) for i in g])
            masks, iou = self.decode(emb, (y0, x0, s), pts, np.ones((len(g), 1)), boxes=boxes)
            losses.append(mask_terms(masks[:, 0], t_all[g]))
            ious.append(F.mse_loss(iou[:, 0], hard_iou(masks[:, 0].detach(), t_all[g]), reduction="none"))
        mask_loss = torch.cat(losses).mean()
        iou_loss = torch.cat(ious).mean()
        return mask_loss, iou_loss, point_iou


class SceneImages:
    """Scenes for trunk training: the model's normalised, padded 1024 input and low-res targets."""

    def __init__(self, model, cap: int = 600):
        self.model, self.cap, self.items = model, cap, {}

    def get(self, seed: int) -> dict:
        from training.common import low_res_targets
        from edgesam.synthetic.scenes import make_scene
        if seed in self.items:
            it = self.items[seed]
        else:
            sc = make_scene(seed)
            from mobile_sam.utils.transforms import ResizeLongestSide
            it = {"resized": ResizeLongestSide(1024).apply_image(sc.image),
                  "targets": low_res_targets(sc.masks), "size": np.array(sc.image.shape[:2])}
            if len(self.items) < self.cap:
                self.items[seed] = it
        x = torch.as_tensor(it["resized"]).permute(2, 0, 1)[None].float()
        return dict(it, x=self.model.preprocess(x))


def trainable(model, trunk: bool = False):
    """(head parameters, trunk parameters): the neck, prompt encoder and decoder; the TinyViT trunk
    only when it is trained."""
    for p in model.parameters():
        p.requires_grad_(False)
    head = []
    for mod in [model.image_encoder.neck, model.prompt_encoder, model.mask_decoder]:
        for p in mod.parameters():
            p.requires_grad_(True)
            head.append(p)
    body = []
    if trunk:
        for mod in [model.image_encoder.patch_embed, model.image_encoder.layers]:
            for p in mod.parameters():
                p.requires_grad_(True)
                body.append(p)
    return head, body


def save_fp16(model, out: Path) -> str:
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = out.with_suffix(".tmp")
    torch.save(sd, tmp)
    tmp.replace(out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=38.0)
    ap.add_argument("--scenes", type=int, default=400, help="training scenes (seeds 0..N-1)")
    ap.add_argument("--full-frac", type=float, default=0.15, help="share of the budget on the full 64x64 grid")
    ap.add_argument("--crop", type=int, default=24, help="window size in tokens for the crop phase")
    ap.add_argument("--warmup-disk", type=int, default=500, help="steps of the positional warm-up task")
    ap.add_argument("--clip", type=float, default=0.0, help="gradient norm clip (0: off; 1.0 stalled the warm-up)")
    ap.add_argument("--focal-weight", type=float, default=20.0, help="SAM uses 20 (focal : dice = 20 : 1)")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-trunk", action="store_true",
                    help="train the TinyViT trunk too, on window-aligned crops (needs --resume or no warm-up)")
    ap.add_argument("--crop-px", type=int, default=448, help="trunk crop size in px (multiple of 224)")
    ap.add_argument("--trunk-lr-mult", type=float, default=1.0)
    ap.add_argument("--trunk-warmup", type=int, default=200, help="steps over which the trunk's lr ramps up")
    ap.add_argument("--trunk-init", choices=TRUNK_INITS, default="default",
                    help="the frozen trunk: torch's seeded default init, that init damped, or conditioned "
                         "(training/common.py: base_model; the model card says which one is shipped)")
    ap.add_argument("--feature-noise", type=float, default=0.0,
                    help="Gaussian noise on the trunk features, as a fraction of each channel's std")
    ap.add_argument("--cache-only", action="store_true", help="fill the trunk-feature cache for --scenes, then stop")
    ap.add_argument("--out", type=Path, default=Path("assets/demo_vit_t.pt"))
    ap.add_argument("--resume", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = base_model(a.trunk_init)
    cache = cache_dir(a.trunk_init)
    if a.cache_only:
        fill_cache(model, a.scenes, cache)
        return
    if a.resume:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in torch.load(a.resume, weights_only=True).items()})
    model.train()
    head, body = trainable(model, a.train_trunk)
    params = head + body
    groups = [{"params": head}] + ([{"params": body}] if body else [])
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=0.01)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    tr = Trainer(model, rng, a.focal_weight, a.feature_noise)
    if a.train_trunk:
        if a.warmup_disk and not a.resume:
            ap.error("--train-trunk starts from a trained decoder: pass --resume (or --warmup-disk 0)")
        a.warmup_disk = 0
        crop = CropTrunk(model, a.crop_px)
        crop.crop.train()
        images = SceneImages(model)
    items: dict[int, dict] = {}
    budget = a.minutes * 60
    t0 = time.time()
    step, ema, ready = 0, None, []
    while True:
        el = time.time() - t0
        if el > budget:
            break
        frac = el / budget
        lr = a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        opt.param_groups[0]["lr"] = lr
        if body:
            opt.param_groups[1]["lr"] = lr * a.trunk_lr_mult * min(1.0, (step + 1) / a.trunk_warmup)
        full = frac > 1 - a.full_frac
        if a.train_trunk:
            seed = int(rng.integers(0, a.scenes))
            item = images.get(seed)
            items[seed] = None  # only counted: SceneImages keeps the scenes
            if full:  # the trunk is frozen from here: eval-mode BatchNorm, full grid, as at inference
                enc = model.image_encoder
                for p in body:
                    p.requires_grad_(False)
                enc.patch_embed.eval()
                enc.layers.eval()
                with torch.no_grad():
                    y = enc.patch_embed(item["x"])
                    for layer in enc.layers:
                        y = layer(y)
                    feat = y.view(1, 64, 64, -1).permute(0, 3, 1, 2)
                out, grid = tr.step(item, 64, 8, feat=feat), "64 trunk frozen"
            else:
                ty, tx = crop.origin(rng, item)
                feat = crop.features(item["x"], ty, tx)
                out = tr.step(item, crop.tokens - 2, 16, feat=feat, win=(ty + 1, tx + 1))
                grid = f"{crop.tokens - 2} trunk trained"
        else:
            if step % 50 == 0 or not ready:  # the cache may still be filling (a --cache-only run)
                ready = [s for s in range(a.scenes) if (cache / f"scene{s}.npz").exists()] or [0]
            seed = int(rng.choice(ready))
            if seed not in items:
                items[seed] = cached_scene(model, seed, cache)
            if step < a.warmup_disk:
                out = tr.disk_step(items[seed], a.crop, 16)
            else:
                out = tr.step(items[seed], 64 if full else a.crop, 8 if full else 16)
            grid = str(64 if full else a.crop)
        if out is None:
            continue
        mask_loss, iou_loss, point_iou = out
        loss = mask_loss + iou_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.clip:
            torch.nn.utils.clip_grad_norm_(params, a.clip)
        opt.step()
        step += 1
        cur = np.array([mask_loss.item(), iou_loss.item(), point_iou])
        if ema is not None:
            cur = np.where(np.isnan(cur), ema, cur)  # point-IoU is NaN when no point group ran
        ema = cur if ema is None else 0.95 * ema + 0.05 * cur
        if step % 25 == 0:
            print(f"step {step} {el / 60:.1f} min lr {lr:.2e} mask {ema[0]:.4f} iou {ema[1]:.4f} point-IoU {ema[2]:.3f} "
                  f"grid {grid} scenes {len(items)}", flush=True)
        if step % 100 == 0:
            save_fp16(model, a.out)
    model.eval()
    digest = save_fp16(model, a.out)
    print(f"trained {step} steps in {(time.time() - t0) / 60:.1f} min -> {a.out} sha256 {digest}")


if __name__ == "__main__":
    main()
