"""Building torch SAM / MobileSAM models: from an official checkpoint or seeded random weights."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from edgesam.errors import CheckpointError
from edgesam.specs import MODELS, get_spec, guess_model


def build_model(name: str) -> torch.nn.Module:
    """An uninitialised-by-checkpoint model of the named architecture, in eval mode on CPU."""
    spec = get_spec(name)
    if spec.family == "mobilesam":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mobile_sam import sam_model_registry
    else:
        from segment_anything import sam_model_registry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation and registry-overwrite warnings
        if name == "vit_tiny_test":
            model = sam_model_registry["vit_t"](checkpoint=None)
            model.image_encoder = tiny_encoder()
        else:
            model = sam_model_registry[name](checkpoint=None)
    return model.eval()


def tiny_encoder() -> torch.nn.Module:
    """The test-only ``vit_tiny_test`` encoder: MobileSAM's TinyViT cut to 3 narrow stages.

    Stages at 256², 128² and 64² tokens (16, 32, 64 wide) end on the same 64x64 grid as vit_t,
    and TinyViT's own neck makes the 256x64x64 embedding, so the decoder is MobileSAM's unchanged.
    Every op type of vit_t's encoder is still there (MBConv, patch merging, windowed attention
    with attention biases, local conv, LayerNorm2d), at a small fraction of its FLOPs.
    """
    from mobile_sam.modeling import TinyViT

    return TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[16, 32, 64], depths=[1, 1, 1],
                   num_heads=[1, 1, 2], window_sizes=[7, 7, 7], mlp_ratio=4.0, drop_rate=0.0,
                   drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                   layer_lr_decay=0.8)


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Add seeded noise to every floating tensor of the state_dict.

    Default inits leave LayerNorm weights at 1, biases and some embeddings at 0:
    a parity check over such layers cannot catch a dropped bias or a swapped
    affine, so every tensor is made non-trivial.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    for key, t in model.state_dict().items():
        if not t.is_floating_point():
            continue  # index buffers (TinyViT attention_bias_idxs, num_batches_tracked)
        noise = torch.randn(t.shape, generator=gen, dtype=t.dtype)
        if key.endswith("running_var"):
            t.mul_(torch.exp(0.1 * noise))  # must stay positive
            continue
        scale = float(t.std()) if t.numel() > 1 else 0.0
        t.add_(noise * (0.1 * scale if scale > 1e-6 else 0.05))


def random_model(name: str, seed: int) -> torch.nn.Module:
    """Seeded random weights ("untrained"): same seed, same weights, on any host."""
    torch.manual_seed(seed)
    model = build_model(name)
    perturb_(model, seed)
    # eval() again: TinyViT's attention caches its bias table (``ab``) when it enters eval mode, so
    # the model built in eval mode held the unperturbed biases until the next eval() (eager outputs
    # then differed from the exported graph's by 1.5e-3 of the range)
    return model.eval()


def load_state_dict(path: str | Path) -> dict:
    """Load a plain state_dict with ``weights_only=True`` (no code in a pickle ever runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused by weights_only loading, the file holds more than "
                              f"tensors (possibly code): {first[:200]}") from None
    except Exception as e:  # torch's unpickler raises anything from EOFError to IndexError on junk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt or truncated?): "
                              f"{first[:200]}") from None
    if isinstance(obj, dict) and set(obj) & {"model", "state_dict"} and len(obj) <= 4:
        inner = obj.get("model", obj.get("state_dict"))
        if isinstance(inner, dict):
            obj = inner  # training checkpoints wrap the weights; official ones do not
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a dict of name -> tensor, "
                              f"got {type(obj).__name__})")
    return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}


def model_from_checkpoint(name: str, path: str | Path, build=build_model) -> torch.nn.Module:
    """Build ``name`` (with ``build``: this module's for SAM and MobileSAM, sam2_family's for SAM 2)
    and load the checkpoint strictly, with one clear error if it does not fit."""
    sd = load_state_dict(path)
    looks = guess_model(sd.keys(), {k: tuple(v.shape) for k, v in sd.items()})
    if looks is None:
        raise CheckpointError(f"{path}: keys look like no SAM, MobileSAM or SAM 2 model "
                              f"(e.g. {', '.join(list(sd)[:3])})")
    if looks != name:
        raise CheckpointError(f"{path}: checkpoint looks like {looks}, not {name}; pass --model {looks}"
                              if looks in MODELS else f"{path}: checkpoint looks like {looks}, not {name}")
    return load_strict(build(name), sd, name, path)


def load_strict(model: torch.nn.Module, sd: dict, name: str, path: str | Path) -> torch.nn.Module:
    """Load ``sd`` into ``model`` strictly, with one clear error naming what does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected keys (e.g. {extra[0]})")
        raise CheckpointError(f"{path}: does not fit {name}: " + "; ".join(parts))
    bad = [k for k in expected if tuple(sd[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{path}: {len(bad)} tensors of the wrong shape for {name} "
                              f"(e.g. {k}: {tuple(sd[k].shape)} vs {tuple(expected[k].shape)})")
    model.load_state_dict(sd, strict=True)
    return model.eval()
