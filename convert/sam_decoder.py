"""SAM's prompt encoder + mask decoder as one exportable module (``DecoderWrapper``), and the
chunked token->image attention the MNN files' graph uses (``ChunkedKeyAttention``).

Shared by both decoder graphs: ``export.py`` exports it as the reference graph and
``folded_decoder.py`` builds the folded graph from it.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from edgesam.specs import IMAGE_SIZE


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
        out = chunked_attention(q, k, v, self.chunk)
        b, h, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * out.shape[-1]))


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = AV_CHUNK) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for [B, heads, N, d] tensors, the probabilities @ values product
    summed over the keys in chunks of ``chunk`` (ChunkedKeyAttention says why)."""
    b, h, n, d = q.shape
    probs = torch.softmax((q @ k.transpose(2, 3)) / float(np.sqrt(d)), dim=-1)
    keys = probs.shape[-1]
    if keys > chunk and keys % chunk == 0:
        c = keys // chunk
        return (probs.reshape(b, h, n, c, chunk).transpose(2, 3) @ v.reshape(b, h, c, chunk, -1)).sum(2)
    return probs @ v


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
