"""torch -> ONNX export of the image encoder and the prompt-encoder + mask-decoder.

The decoder wrapper is written here rather than taken from the official
``SamOnnxModel`` because that one (a) picks a single mask with a
points-count heuristic the official predictor does not use, (b) repeats the
embedding per prompt with ``repeat_interleave`` and (c) computes the resize
shape in float32. This one returns all four mask tokens (the runtime slices
``[1:]`` or ``[0:1]`` exactly as ``MaskDecoder.forward`` does) and broadcasts
one embedding over a dynamic prompt batch. In the graph the MNN files are converted from, its
token->image attentions sum over the image keys in chunks (``ChunkedKeyAttention``), so MNN's fp16
kernels on ARM stay accurate; decoder.onnx, which other runtimes run, sums them in one product.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgesam.specs import (DECODER_INPUTS, DECODER_OUTPUTS, EMBED_SHAPE, ENCODER_INPUTS, ENCODER_OUTPUTS,
                           IMAGE_SIZE, LOWRES)



class EncoderWrapper(nn.Module):
    """Normalised, padded NCHW image -> 1x256x64x64 embedding (normalisation lives in preprocessing)."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


AV_CHUNK = 64  # keys per partial sum in the token->image attentions' probabilities @ values


class ChunkedKeyAttention(nn.Module):
    """SAM's ``Attention`` with the probabilities @ values product summed in chunks of keys.

    Same function as the wrapped module (the same projections, heads, scaling and softmax); only
    the order of the additions over the keys changes. Why: in the token->image attentions the
    keys are the 4096 image tokens, and MNN's ARM fp16 kernels accumulate that one long reduction
    in fp16. Under emulated aarch64 at precision "low" it lost 18 % of the attention output and
    moved the demo model's mask (IoU 0.81 against fp32); as 64 partial sums of 64 keys added
    afterwards, IoU 0.986 (the error shrank about in proportion to the chunk length).
    """

    def __init__(self, attn: nn.Module, chunk: int = AV_CHUNK) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj
        self.num_heads, self.chunk = attn.num_heads, chunk

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        b, h, n, d = q.shape
        probs = torch.softmax((q @ k.transpose(2, 3)) / float(np.sqrt(d)), dim=-1)
        keys = probs.shape[-1]
        if keys > self.chunk and keys % self.chunk == 0:
            c = keys // self.chunk
            parts = probs.reshape(b, h, n, c, self.chunk).transpose(2, 3) @ v.reshape(b, h, c, self.chunk, -1)
            out = parts.sum(2)
        else:
            out = probs @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * out.shape[-1]))


def chunked_transformer(transformer: nn.Module, chunk: int = AV_CHUNK) -> nn.Module:
    """A copy of SAM's ``TwoWayTransformer`` whose token->image attentions sum keys in chunks."""
    t = copy.deepcopy(transformer)
    for layer in t.layers:
        layer.cross_attn_token_to_image = ChunkedKeyAttention(layer.cross_attn_token_to_image, chunk)
    t.final_attn_token_to_image = ChunkedKeyAttention(t.final_attn_token_to_image, chunk)
    return t


class DecoderWrapper(nn.Module):
    """Prompt encoder + mask decoder for B prompts sharing one image embedding."""

    def __init__(self, sam: nn.Module, av_chunk: int = AV_CHUNK) -> None:
        super().__init__()
        pe = sam.prompt_encoder
        self.pe_layer = pe.pe_layer
        self.point_embeddings = pe.point_embeddings
        self.not_a_point = pe.not_a_point_embed
        self.mask_downscaling = pe.mask_downscaling
        self.no_mask = pe.no_mask_embed
        self.decoder = sam.mask_decoder
        # The caller's model is left as it is: the export runs a copy of the transformer.
        self.transformer = chunked_transformer(sam.mask_decoder.transformer, av_chunk) if av_chunk else \
            sam.mask_decoder.transformer
        # The dense positional encoding depends on nothing but weights: bake it in.
        self.register_buffer("image_pe", pe.get_dense_pe().detach().clone(), persistent=False)
        self.img_size = float(IMAGE_SIZE)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Branch-free form of PromptEncoder._embed_points/_embed_boxes: corners are labels 2/3.
        emb = self.pe_layer._pe_encoding((coords + 0.5) / self.img_size)
        lab = labels.unsqueeze(-1)
        emb = emb * (lab != -1).to(emb.dtype) + self.not_a_point.weight * (lab == -1).to(emb.dtype)
        for i, table in enumerate(self.point_embeddings):
            emb = emb + table.weight * (lab == i).to(emb.dtype)
        return emb

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self.embed_points(point_coords, point_labels)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has * self.mask_downscaling(mask_input) + (1 - has) * self.no_mask.weight.reshape(1, -1, 1, 1)
        md = self.decoder
        b = sparse.shape[0]
        tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        src = (image_embeddings + dense).expand(b, -1, -1, -1)
        pos = self.image_pe.expand(b, -1, -1, -1)
        _, c, h, w = image_embeddings.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_token = hs[:, 0, :]
        mask_tokens = hs[:, 1:1 + md.num_mask_tokens, :]
        up = md.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], 1)
        uc, uh, uw = up.shape[1:]
        masks = (hyper @ up.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
        return md.iou_prediction_head(iou_token), masks


def dummy_decoder_inputs(b: int = 2, n: int = 3, m: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(b, n)).astype(np.float32)
    labels[:, -1] = -1
    return {
        "image_embeddings": rng.standard_normal(EMBED_SHAPE).astype(np.float32),
        "point_coords": rng.uniform(0, IMAGE_SIZE, size=(b, n, 2)).astype(np.float32),
        "point_labels": labels,
        "mask_input": rng.standard_normal((m, 1, LOWRES, LOWRES)).astype(np.float32),
        "has_mask_input": np.ones((m,), np.float32),
    }


@dataclass
class ExportResult:
    path: Path
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes,
            opset: int) -> None:
    # GELUs are exported as torch writes them (ONNX Runtime fuses that into one exact kernel);
    # the MNN conversion rewrites them so MNN's approximate fusion is not used (mnn.unfused_gelu).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic are expected here
        torch.onnx.export(module, args, str(path), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)


def export_encoder(sam: nn.Module, path: Path, opset: int) -> ExportResult:
    x = torch.randn(*ENCODER_INPUTS["image"])
    _export(EncoderWrapper(sam).eval(), (x,), path, ENCODER_INPUTS, ENCODER_OUTPUTS, None, opset)
    return ExportResult(path, ENCODER_INPUTS, ENCODER_OUTPUTS)


DECODER_GRAPHS = ("folded", "reference")


def decoder_wrapper(sam: nn.Module, graph: str = "reference", mnn: bool = False) -> nn.Module:
    """The module exported as the decoder: ``reference`` (``DecoderWrapper``: the official computation
    step by step) or ``folded`` (``folded_decoder.py``: the same function with the big projections
    folded onto the prompt tokens; what ``edgesam convert`` exports by default). ``mnn``: the graph
    the MNN files are converted from, with MNN's workarounds (key sums in chunks; in the folded
    graph also the image keys expanded to the prompt batch); without, the graph of decoder.onnx."""
    if graph == "folded":
        from edgesam.convert.folded_decoder import FoldedDecoderWrapper

        return FoldedDecoderWrapper(sam, mnn=mnn).eval()
    if graph == "reference":
        return DecoderWrapper(sam, av_chunk=AV_CHUNK if mnn else 0).eval()
    raise ValueError(f"decoder graph must be one of {DECODER_GRAPHS}, not {graph!r}")


def export_decoder(sam: nn.Module, path: Path, opset: int, graph: str = "reference", mnn: bool = False) -> ExportResult:
    feeds = dummy_decoder_inputs()
    args = tuple(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS)
    dyn = {"point_coords": {0: "B", 1: "N"}, "point_labels": {0: "B", 1: "N"},
           "mask_input": {0: "M"}, "has_mask_input": {0: "M"},
           "iou_predictions": {0: "B"}, "low_res_masks": {0: "B"}}
    _export(decoder_wrapper(sam, graph, mnn), args, path, DECODER_INPUTS, DECODER_OUTPUTS, dyn, opset)
    return ExportResult(path, DECODER_INPUTS, DECODER_OUTPUTS)
