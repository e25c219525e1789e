"""Shared pieces of the demo-model training: the frozen encoder trunk, feature cache and targets."""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgesam.synthetic.scenes import make_scene

ENCODER_SEED = 0          # the frozen TinyViT trunk is torch's default init under this seed
TRAIN_SEEDS = range(0, 100_000)
TRUNK_INITS = ("default", "damped", "conditioned")
CACHE = Path(os.environ.get("EDGESAM_TRAIN_CACHE", Path.home() / ".cache" / "edgesam-train"))

# The damped trunk init (see damp_trunk): taps of the near-identity local convs, the scale of every
# residual branch, and the stream's std after each PatchMerging.
DAMP_TAP, DAMP_BRANCH, DAMP_STREAM = 0.05, 0.1, 0.5
# The conditioned trunk init: identity local convs, branches as initialised, unit-std stream, and
# seeded biases of this std on the patch embedding's BatchNorms (see bias_patch_embed).
CONDITION_TAP, CONDITION_BRANCH, CONDITION_STREAM, PATCH_BIAS = 0.0, 1.0, 1.0, 0.1
CALIBRATION_SCENE = 7


def base_model(trunk_init: str = "default"):
    """vit_t with a seeded init: the trunk stays frozen, the rest is trained.

    "default" is torch's default init under ENCODER_SEED. "damped" then applies damp_trunk;
    "conditioned" applies damp_trunk with the CONDITION_* settings and bias_patch_embed."""
    from edgesam.convert.sam_models import build_model
    if trunk_init not in TRUNK_INITS:
        raise ValueError(f"trunk_init must be one of {TRUNK_INITS}, not {trunk_init!r}")
    torch.manual_seed(ENCODER_SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("vit_t")
    if trunk_init == "damped":
        damp_trunk(model)
    elif trunk_init == "conditioned":
        bias_patch_embed(model, PATCH_BIAS)
        damp_trunk(model, CONDITION_TAP, CONDITION_BRANCH, CONDITION_STREAM)
    return model


@torch.no_grad()
def bias_patch_embed(model, std: float) -> None:
    """Seeded random biases on the patch embedding's BatchNorms (in place).

    At torch's default init every BatchNorm bias is zero, so the padding's tokens are exactly zero all
    the way through the trunk, and the LayerNorms that meet the padding's edge divide rounding noise by
    a near-zero spread: MNN and torch then disagree there (assets/demo_vit_t.md). With nonzero biases
    the padding is a constant nonzero vector, as with trained weights."""
    g = torch.Generator().manual_seed(ENCODER_SEED + 2)
    for mod in model.image_encoder.patch_embed.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * std)


def cache_dir(trunk_init: str) -> Path:
    """Where the trunk features of one trunk init are cached."""
    return CACHE if trunk_init == "default" else CACHE.with_name(f"{CACHE.name}-{trunk_init}")


@torch.no_grad()
def damp_trunk(model, tap: float = DAMP_TAP, branch: float = DAMP_BRANCH, stream: float = DAMP_STREAM) -> None:
    """Make the frozen random TinyViT trunk keep the image (deterministic, in place).

    At torch's default init the trunk loses most of the image: a linear probe from its output to each
    patch's mean colour reaches R^2 0.24 (assets/demo_vit_t.md). Two causes: every block filters the
    residual stream with a random depthwise 3x3 (local_conv), and each PatchMerging shrinks the stream
    about 300x, after which the random attention and MLP branches swamp it. This init
    - sets every local_conv to the identity plus small random taps (std `tap`),
    - scales every attention and MLP output projection by `branch` (near-identity blocks when small),
    - rescales each PatchMerging's last BatchNorm so the stream leaving it has std `stream` on the
      calibration scene.
    The architecture and the state_dict's keys are unchanged: a checkpoint holds the result."""
    enc = model.image_encoder
    was_training = enc.training
    enc.eval()
    g = torch.Generator().manual_seed(ENCODER_SEED + 1)
    for layer in enc.layers[1:]:
        for blk in layer.blocks:
            w = blk.local_conv.c.weight  # C x 1 x 3 x 3, depthwise
            w.copy_(torch.randn(w.shape, generator=g) * tap)
            w[:, 0, 1, 1] += 1.0
            for lin in (blk.attn.proj, blk.mlp.fc2):
                lin.weight.mul_(branch)
                lin.bias.mul_(branch)
    x = enc.patch_embed(input_tensor(model, make_scene(CALIBRATION_SCENE).image))
    for layer in enc.layers:
        for blk in layer.blocks:
            x = blk(x)
        if layer.downsample is not None:
            scale = stream / float(layer.downsample(x).std())
            bn = layer.downsample.conv3.bn
            bn.weight.mul_(scale)
            bn.bias.mul_(scale)
            x = layer.downsample(x)
    enc.train(was_training)


def input_tensor(model, image: np.ndarray) -> torch.Tensor:
    """The official predictor's preprocessing: ResizeLongestSide (1024) then normalise and pad."""
    from mobile_sam.utils.transforms import ResizeLongestSide
    resized = ResizeLongestSide(1024).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return model.preprocess(x)


@torch.no_grad()
def trunk_features(model, image: np.ndarray) -> torch.Tensor:
    """TinyViT output before the neck: 1 x 320 x 64 x 64 (the neck is trained, the trunk is not)."""
    enc = model.image_encoder
    modes = enc.patch_embed.training, enc.layers.training
    enc.patch_embed.eval()  # the frozen trunk's BatchNorms use their running statistics, as at inference
    enc.layers.eval()
    try:
        x = enc.patch_embed(input_tensor(model, image))
        for layer in enc.layers:
            x = layer(x)
    finally:
        enc.patch_embed.train(modes[0])
        enc.layers.train(modes[1])
    return x.view(1, 64, 64, -1).permute(0, 3, 1, 2).contiguous()


def low_res_targets(masks: np.ndarray) -> np.ndarray:
    """Instance masks in the decoder's 256 x 256 frame (resized longest side 1024, padded, /4).

    Nearest sampling at output pixel centres; K x 256 x 256 bool."""
    k, h, w = masks.shape
    s = 256.0 / max(h, w)
    oh, ow = int(h * s + 0.5), int(w * s + 0.5)
    ys = np.minimum(((np.arange(oh) + 0.5) / s).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(ow) + 0.5) / s).astype(np.int64), w - 1)
    out = np.zeros((k, 256, 256), bool)
    out[:, :oh, :ow] = masks[:, ys][:, :, xs]
    return out


def cached_scene(model, seed: int, cache: Path = CACHE) -> dict:
    """Trunk features (fp16) and low-res targets for one scene, cached on disk in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"scene{seed}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    sc = make_scene(seed)
    feat = trunk_features(model, sc.image)[0].numpy().astype(np.float16)
    targets = low_res_targets(sc.masks)
    h, w = sc.image.shape[:2]
    item = {"feat": feat, "targets": targets, "size": np.array([h, w])}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **item)
    os.replace(tmp, path)
    return item


def fill_cache(model, scenes: int, cache: Path) -> None:
    """Cache the trunk features and targets of scenes 0..scenes-1 (what ``--cache-only`` runs)."""
    t0 = time.time()
    for s in range(scenes):
        cached_scene(model, s, cache)
        if s % 25 == 0:
            print(f"cached {s + 1}/{scenes} scenes in {(time.time() - t0) / 60:.1f} min", flush=True)
    print(f"cache {cache}: {scenes} scenes ready in {(time.time() - t0) / 60:.1f} min")


def focal_loss(logits, target, alpha=0.25, gamma=2.0):
    """Per-mask sigmoid focal loss (SAM's mask loss), averaged over the last two axes."""
    import torch.nn.functional as F

    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - pt) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits, target):
    """Per-mask soft dice loss, with 1 added to both sides of the ratio."""
    p = logits.sigmoid().flatten(-2)
    t = target.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def hard_iou(logits, target):
    """Per-mask IoU of logits > 0 with target > 0.5 (what the IoU head learns to predict)."""
    pred = logits > 0
    t = target > 0.5
    inter = (pred & t).flatten(-2).sum(-1).float()
    union = (pred | t).flatten(-2).sum(-1).float()
    return inter / union.clamp(min=1)


class CropTrunk:
    """The TinyViT trunk run on a window-aligned crop of the 1024 input, sharing the model's weights.

    TinyViT's windows are 7, 7, 14 and 7 tokens at strides 8, 16, 16 and 16 px, so a crop whose
    origin is a multiple of 224 px sees the same attention windows as the full image; only the
    3x3 convs differ at the crop's border (zero padding instead of neighbours). A 448-px crop costs
    about 0.65 s forward + backward on 2 cores, against about 3.5 s for the full 1024 input.
    The crop model is built at the crop's size (TinyViT's blocks carry their resolution) and its
    parameters and BatchNorm statistics are the full model's own tensors, so training it trains
    the model that is saved."""

    ALIGN = 14  # tokens (224 px)

    def __init__(self, model, crop_px: int):
        from mobile_sam.modeling import TinyViT
        enc = model.image_encoder
        self.tokens = crop_px // 16
        self.crop = TinyViT(img_size=crop_px, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
                            depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
                            mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, mbconv_expand_ratio=4.0,
                            local_conv_size=3)
        src = dict(enc.named_parameters())
        src.update({k: v for k, v in enc.named_buffers() if "attention_bias_idxs" not in k})
        names = [n for n, _ in self.crop.named_parameters()]
        names += [n for n, _ in self.crop.named_buffers() if "attention_bias_idxs" not in n]
        for name in names:
            owner, _, attr = name.rpartition(".")
            mod = self.crop.get_submodule(owner)
            if attr in mod._parameters:
                mod._parameters[attr] = src[name]
            else:
                mod._buffers[attr] = src[name]
        assert all(p is src[n] for n, p in self.crop.named_parameters())

    def grid(self, x: torch.Tensor, ty: int, tx: int) -> torch.Tensor:
        """Trunk output on the crop's own grid (B x 320 x t x t) for the crop at token (ty, tx) of the
        B x 3 x 1024 x 1024 input: what the neck and the decoder take at crop scale."""
        t = self.tokens
        y = self.crop.patch_embed(x[..., 16 * ty:16 * (ty + t), 16 * tx:16 * (tx + t)])
        for layer in self.crop.layers:
            y = layer(y)
        return y.view(len(x), t, t, -1).permute(0, 3, 1, 2)

    def features(self, x: torch.Tensor, ty: int, tx: int) -> torch.Tensor:
        """Trunk output (1 x 320 x 64 x 64, zero outside the crop) for the crop at token (ty, tx)."""
        t = self.tokens
        return F.pad(self.grid(x, ty, tx), (tx, 64 - tx - t, ty, 64 - ty - t))

    def origin(self, rng, item) -> tuple[int, int]:
        """A window-aligned crop origin (in tokens) that overlaps the image, not only its padding."""
        h, w = (int(v) for v in item["size"])
        sc = 1024 / max(h, w)
        th, tw = math.ceil(h * sc / 16), math.ceil(w * sc / 16)
        last = 64 - self.tokens

        def pick(valid):
            starts = [o for o in range(0, last + 1, self.ALIGN) if o == 0 or o + 4 < valid]
            return int(rng.choice(starts))
        return pick(th), pick(tw)


def noise_params(encoder) -> dict:
    """The trunk tensors whose storage error MNN's reduced-precision files add: every TinyViT conv and
    linear weight (2-D and up), not the neck's (quantising the neck alone moved the embedding 100x
    less than the trunk did, assets/demo_vit_t.md) and not the attention-bias tables (eval mode
    reads a detached copy of them)."""
    return {n: p for n, p in encoder.named_parameters()
            if p.ndim >= 2 and not n.startswith("neck") and "attention_biases" not in n}


def weight_noise_gap(encoder, x: torch.Tensor, sigma: float, top: float = 0.01) -> torch.Tensor:
    """How far the image embedding moves when the trunk's weights carry relative noise ``sigma``.

    The encoder runs twice in eval mode (BatchNorms on their running statistics, as exported): once as
    it is (no gradient: the target) and once with every tensor of ``noise_params`` multiplied by
    (1 + sigma * N(0, 1)). The gap is each position's RMS change over the channels, divided by the
    clean embedding's largest value (the parity gate's scale) and by sigma: a gain. The result is the
    mean gain of the worst ``top`` share of positions, since the gate judges the largest error.
    Measured on the gate image (assets/demo_vit_t.md, 2026-12-07): weight noise of 0.3 % moved the
    retrained full.pt's embedding by 0.19-0.62 of its largest value in a blob of about 30 positions
    (median 4e-4), where MNN's fp16 and int8 files also failed, and the shipped model's by 0.01-0.02."""
    from torch.func import functional_call

    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            clean = encoder(x).float()
        noisy = {n: p * (1 + sigma * torch.randn_like(p)) for n, p in noise_params(encoder).items()}
        out = functional_call(encoder, noisy, (x,), strict=False).float()
    finally:
        encoder.train(was)
    return worst_positions_change(clean, out, top) / sigma


def worst_positions_change(clean: torch.Tensor, out: torch.Tensor, top: float) -> torch.Tensor:
    """Each position's RMS change over the channels (B x C x H x W embeddings), divided by the clean
    embedding's largest value (the parity gate's scale); the mean of the worst ``top`` share."""
    scale = clean.abs().flatten(1).amax(1).clamp(min=1e-6)[:, None]
    # + 1e-12: sqrt has no gradient at 0, and a position that did not move (padding) would give NaN
    gap = (out - clean).pow(2).mean(1).flatten(1).add(1e-12).sqrt() / scale  # B x positions
    k = max(1, int(round(top * gap.shape[1])))
    return gap.topk(k, dim=1).values.mean()


def input_noise_gap(encoder, x: torch.Tensor, x2: torch.Tensor, top: float = 0.01) -> torch.Tensor:
    """How far the image embedding moves between two renderings of the same image (``x``: the one
    trained on; ``x2``: the resize rounded with a random dither, within one grey level), run as inference runs: eval mode,
    fp32. The clean pass is the target (no gradient). Measured on a test scene (assets/demo_vit_t.md,
    2026-12-07): MNN.cv's rounding against PIL's moved the trained full.pt's embedding by 0.078 of its
    largest value, the shipped model's by 5e-4."""
    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            clean = encoder(x).float()
        out = encoder(x2).float()
    finally:
        encoder.train(was)
    return worst_positions_change(clean, out, top)
