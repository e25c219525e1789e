"""SAM 2 and SAM 2.1 image models (Hiera encoder): building, the two exported graphs, the torch reference.

What is exported is what ``sam2.sam2_image_predictor.SAM2ImagePredictor`` computes on an image:

- encoder (``Sam2Encoder``): ``forward_image`` (Hiera trunk + FPN neck, with the mask decoder's
  ``conv_s0``/``conv_s1`` applied to the two high-resolution levels), ``no_mem_embed`` added to the
  lowest-resolution level, each level back to NCHW: ``high_res_feats_0`` 1x32x256x256,
  ``high_res_feats_1`` 1x64x128x128, ``image_embed`` 1x256x64x64;
- decoder (``Sam2Decoder``): the prompt encoder (points with the padding point appended, as
  ``_predict`` has it do for every prompt; the mask input blended in by ``has_mask_input``) and
  the mask decoder's ``predict_masks`` over a batch of B prompts, returning every mask token:
  ``masks`` Bx4x256x256 logits and ``iou_predictions`` Bx4. The runtime picks tokens (the
  stability-based fallback included) from the manifest, as ``MaskDecoder.forward`` does.

Tensor names are the SAM 2 ONNX contract (samexporter's); ONNX Runtime's own SAM 2
scripts read other names and a decoder with the upscale inside (``--ort-sam2``, convert/sam2_ort.py).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from edgesam.manifest import SAM2_TENSORS
from edgesam.specs import IMAGE_SIZE, LOWRES, get_spec

# The test-only tiny Hiera: 5 blocks 8-64 wide (the global-attention one in stage 3), SAM 2.1's neck width (256)
# and decoder unchanged, one memory-attention layer (SAM 2.1 has 4).
TINY_TEST_OVERRIDES = ["++model.image_encoder.trunk.embed_dim=8", "++model.memory_attention.num_layers=1", "++model.image_encoder.trunk.stages=[1,1,2,1]",
                       "++model.image_encoder.trunk.global_att_blocks=[3]",
                       "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]"]
# Seeded random weights (every SAM 2 model, --random-init) get their object-score head's bias raised by
# this, so that tracked objects stay present through a clip: as initialised, the head scores about 0
# (sam2.1_hiera_t -0.057, hiera_s -0.018 on the video gate's first frame), a coin flip per frame, and
# a clip where the object is absent everywhere compares empty masks (measured on hiera_s: every frame's
# logits identical at every precision). The video tests check their masks are not trivial.
RANDOM_SCORE_BIAS = 4.0
# The memory bank's temporal encodings start at std 0.02 against position encodings of about 1, so
# with them as initialised a memory given the wrong temporal slot moves the tiny model's logits by
# 1e-4 of their range: no test could see such a slip. The tiny test model draws them at this std.
TINY_TEST_TPOS_STD = 1.0
ENCODER_OUTPUTS = tuple(SAM2_TENSORS["encoder"]["outputs"])
DECODER_INPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels",
                  "mask_input", "has_mask_input")  # samexporter feeds them by position, in this order
DECODER_OUTPUTS = ("masks", "iou_predictions")


def config_of(name: str) -> tuple[str, list[str]]:
    """The sam2 package's config (and hydra overrides) that build ``name``."""
    get_spec(name)
    if name == "sam2_tiny_test":
        return "configs/sam2.1/sam2.1_hiera_t.yaml", list(TINY_TEST_OVERRIDES)
    return f"configs/{name.split('_hiera_')[0]}/{name}.yaml", []


def import_sam2():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sam2.build_sam import build_sam2
    except ImportError:
        from edgesam.errors import InputError

        raise InputError("SAM 2 models need the sam2 package: SAM2_BUILD_CUDA=0 pip install "
                         "--no-build-isolation 'sam2==1.1.0' (after torch)") from None
    return build_sam2


def build_model(name: str) -> nn.Module:
    """The official SAM2Base for ``name`` (as ``build_sam2`` makes it for the image predictor,
    with the stability-based single-mask fallback on), untrained, in eval mode on the CPU."""
    build_sam2 = import_sam2()
    config, overrides = config_of(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam2(config, ckpt_path=None, device="cpu", mode="eval", hydra_overrides_extra=overrides)


def random_model(name: str, seed: int) -> nn.Module:
    """Seeded random weights, every tensor perturbed so that no layer is trivial ("untrained")."""
    from edgesam.convert.sam_models import perturb_

    torch.manual_seed(seed)
    model = build_model(name)
    perturb_(model, seed)
    head = getattr(model.sam_mask_decoder, "pred_obj_score_head", None)
    if head is not None:  # objects stay present (the image predictor ignores this head)
        with torch.no_grad():
            (head.layers[-1] if hasattr(head, "layers") else head).bias += RANDOM_SCORE_BIAS
    if name == "sam2_tiny_test":  # memory slots matter
        with torch.no_grad():
            model.maskmem_tpos_enc.normal_(0.0, TINY_TEST_TPOS_STD, generator=torch.Generator().manual_seed(seed))
    return model.eval()


def model_from_checkpoint(name: str, path: str | Path) -> nn.Module:
    """An official ``sam2*.pt`` (``{"model": state_dict}``, loaded weights_only), strictly."""
    from edgesam.convert import sam_models as models

    return models.model_from_checkpoint(name, path, build=build_model)


class ChunkedGlobalAttention(nn.Module):
    """Hiera's ``MultiScaleAttention`` of a global-attention block (no query pooling) with the
    probabilities @ values product summed over the keys in chunks (``sam_decoder.chunked_attention``):
    the same function; in the graph the MNN files come from, so that MNN's ARM fp16 kernels do not
    accumulate the 4096 keys of a 64x64 stage in one fp16 sum."""

    def __init__(self, attn: nn.Module, chunk: int) -> None:
        super().__init__()
        self.qkv, self.proj, self.num_heads, self.chunk = attn.qkv, attn.proj, attn.num_heads, chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from edgesam.convert.sam_decoder import chunked_attention

        b, h, w, _ = x.shape
        q, k, v = torch.unbind(self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4), 0)
        out = chunked_attention(q, k, v, self.chunk)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


def chunked_image_encoder(model: nn.Module, chunk: int) -> nn.Module:
    """A copy of ``model.image_encoder`` whose global-attention blocks sum their keys in chunks."""
    enc = copy.deepcopy(model.image_encoder)
    for block in enc.trunk.blocks:
        if block.window_size == 0 and block.attn.q_pool is None:
            block.attn = ChunkedGlobalAttention(block.attn, chunk)
    return enc


class Sam2Encoder(nn.Module):
    """1x3x1024x1024 normalised image -> (high_res_feats_0, high_res_feats_1, image_embed).

    ``av_chunk``: the graph the MNN files are converted from (global attention summed in chunks)."""

    def __init__(self, model: nn.Module, av_chunk: int = 0) -> None:
        super().__init__()
        self.model = model
        self.image_encoder = chunked_image_encoder(model, av_chunk) if av_chunk else model.image_encoder

    def forward(self, image: torch.Tensor):
        m = self.model
        backbone_out = self.image_encoder(image)  # SAM2Base.forward_image, with this encoder
        if m.use_high_res_features_in_sam:
            fpn = backbone_out["backbone_fpn"]
            fpn[0], fpn[1] = m.sam_mask_decoder.conv_s0(fpn[0]), m.sam_mask_decoder.conv_s1(fpn[1])
        _, feats, _, _ = m._prepare_backbone_features(backbone_out)
        if m.directly_add_no_mem_embed:
            feats = feats[:-1] + [feats[-1] + m.no_mem_embed]
        # (HW)xBxC -> BxCxHxW per level, low levels first, at the predictor's fixed feature sizes
        # (strides 4, 8, 16; as Python ints, so the exported shapes are static)
        shapes = _encoder_shapes(m).values()
        return tuple(f.permute(1, 2, 0).reshape(*shape) for f, shape in zip(feats, shapes))


class Sam2Decoder(nn.Module):
    """The SAM 2 prompt encoder + mask decoder over a batch of B prompts, every mask token out.

    point_coords BxNx2 in the 1024 frame (box corners first, labels 2 and 3), point_labels BxN;
    the padding point is appended here. mask_input Mx1x256x256 and has_mask_input M, M in {1, B}.
    """

    def __init__(self, model: nn.Module, av_chunk: int = 0) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        if av_chunk:  # the MNN files' graph: a copy of the decoder whose token->image sums run in chunks
            from edgesam.convert.sam_decoder import chunked_transformer

            md = copy.copy(model.sam_mask_decoder)
            md._modules = dict(md._modules)  # the copy's own module table: the caller's model is untouched
            md.transformer = chunked_transformer(model.sam_mask_decoder.transformer, av_chunk)
            self.mask_decoder = md

    def predict(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
                has_mask_input):
        """The prompt encoder and ``predict_masks``: (masks, iou, mask tokens, object-score logits)."""
        pe = self.prompt_encoder
        sparse = pe._embed_points(point_coords, point_labels, pad=True)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.mask_decoder.predict_masks(
            image_embeddings=image_embed, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, repeat_image=True, high_res_features=[high_res_feats_0, high_res_feats_1])

    def forward(self, *inputs):
        masks, iou, _, _ = self.predict(*inputs)
        return masks, iou


def _encoder_shapes(model: nn.Module) -> dict:
    """The encoder's output shapes, from the model's layers (no forward pass): the two high-resolution
    levels at strides 4 and 8 with conv_s0/conv_s1's channels, the embedding at stride 16."""
    md = model.sam_mask_decoder
    widths = (md.conv_s0.out_channels, md.conv_s1.out_channels, model.hidden_dim)
    return {name: [1, c, IMAGE_SIZE // stride, IMAGE_SIZE // stride]
            for name, c, stride in zip(ENCODER_OUTPUTS, widths, (4, 8, 16))}


def dummy_decoder_inputs(model: nn.Module, b: int = 2, n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in _encoder_shapes(model).items()}
    labels = rng.integers(0, 4, size=(b, n)).astype(np.float32)
    feeds.update(point_coords=rng.uniform(0, IMAGE_SIZE, size=(b, n, 2)).astype(np.float32), point_labels=labels,
                 mask_input=rng.standard_normal((1, 1, LOWRES, LOWRES)).astype(np.float32),
                 has_mask_input=np.ones((1,), np.float32))
    return feeds


def export_encoder(model: nn.Module, path: Path, opset: int, mnn: bool = False):
    from edgesam.convert.sam_export import AV_CHUNK, ExportResult, _export

    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    _export(Sam2Encoder(model, AV_CHUNK if mnn else 0).eval(), (x,), path, ["image"], ENCODER_OUTPUTS, None, opset)
    return ExportResult(path, {"image": [1, 3, IMAGE_SIZE, IMAGE_SIZE]}, _encoder_shapes(model))


def decoder_module(model: nn.Module, graph: str = "folded", mnn: bool = False) -> nn.Module:
    """The decoder graph to export: ``folded`` (``sam2_folded.FoldedSam2Decoder``, the default) or
    ``reference`` (``Sam2Decoder``, the official steps); ``mnn``: the graph the MNN files come from."""
    from edgesam.convert.sam_export import AV_CHUNK

    if graph == "folded":
        from edgesam.convert.sam2_folded import FoldedSam2Decoder

        return FoldedSam2Decoder(model, mnn=mnn).eval()
    if graph == "reference":
        return Sam2Decoder(model, AV_CHUNK if mnn else 0).eval()
    raise ValueError(f"decoder graph must be folded or reference, not {graph!r}")


def export_decoder(model: nn.Module, path: Path, opset: int, mnn: bool = False, graph: str = "folded"):
    from edgesam.convert.sam_export import ExportResult, _export

    feeds = dummy_decoder_inputs(model)
    args = tuple(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS)
    dyn = {"point_coords": {0: "B", 1: "N"}, "point_labels": {0: "B", 1: "N"}, "mask_input": {0: "M"},
           "has_mask_input": {0: "M"}, "masks": {0: "B"}, "iou_predictions": {0: "B"}}
    _export(decoder_module(model, graph, mnn), args, path, DECODER_INPUTS, DECODER_OUTPUTS, dyn, opset)
    return ExportResult(path, {k: list(v.shape) for k, v in feeds.items()},
                        {"masks": ["B", 4, LOWRES, LOWRES], "iou_predictions": ["B", 4]})


def count_flops(model: nn.Module, graph: str = "folded") -> dict:
    """FLOPs (2 x multiply-adds) of the encoder and of the exported decoder graph for one prompt (a box)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            Sam2Encoder(model)(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
        enc = fc.get_total_flops()
        feeds = dummy_decoder_inputs(model, b=1, n=2)
        with FlopCounterMode(display=False) as fc:
            decoder_module(model, graph)(*(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS))
        dec = fc.get_total_flops()
    return {"encoder": int(enc), "decoder_per_prompt": int(dec)}


def torch_runner(model: nn.Module, label: str = "torch"):
    """The official modules as the parity engine's reference, with the bundle's tensor names."""
    from edgesam.convert.reference import TorchBackend
    from edgesam.measure.parity_engine import Runner

    def load():
        return (TorchBackend(Sam2Encoder(model), ["image"], list(ENCODER_OUTPUTS)),
                TorchBackend(Sam2Decoder(model), list(DECODER_INPUTS), list(DECODER_OUTPUTS)))

    return Runner(label, "fp32", load)


class Sam2Family:
    """SAM 2 and 2.1: Hiera encoders of four sizes, one prompt encoder and mask decoder."""

    name = "sam2"
    folds_decoder = True  # --decoder-graph folded (sam2_folded.py, default) or reference (the official steps)
    mnn_encoder_graph = True  # the MNN files' encoder has its own graph (global attention summed in chunks)

    def build(self, model: str, checkpoint: Optional[Path] = None, seed: Optional[int] = None) -> nn.Module:
        if (checkpoint is None) == (seed is None):
            raise ValueError("give a checkpoint or a random-init seed, not both or neither")
        return random_model(model, seed) if checkpoint is None else model_from_checkpoint(model, checkpoint)

    def export_encoder(self, sam, path: Path, opset: int, mnn: bool = False):
        return export_encoder(sam, path, opset, mnn=mnn)

    def export_decoder(self, sam, path: Path, opset: int, graph: str, mnn: bool = False):
        return export_decoder(sam, path, opset, mnn=mnn, graph=graph)

    def sections(self, variant: str) -> dict:
        from edgesam.manifest import sam2_sections

        return sam2_sections()

    def reference(self, sam):
        return torch_runner(sam)

    def count_flops(self, sam, graph: str) -> dict:
        return count_flops(sam, graph)
