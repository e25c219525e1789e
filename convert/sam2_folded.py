"""SAM 2's decoder graph with the two-way transformer folded (``folded_decoder.py``): the same function
as ``sam2_family.Sam2Decoder`` with fewer multiply-adds.

SAM 2's mask decoder has SAM's two-way transformer (the same blocks, names and widths), so its five
cross attentions fold as SAM's do: each projects 4096 image tokens through 2 x 256 x 128 weights in
the official graph, and through 2 x 256 x (heads x tokens) here (8 x 8 = 64 for a point with
SAM 2.1's object-score token). For one box, 3.6 GFLOP a prompt become about 2.1 (``count_flops``).

What SAM 2 adds stays the official computation: the object-score token before the IoU and mask
tokens, the upscaling that adds the encoder's two high-resolution levels (ConvTranspose, +feat_s1,
LayerNorm2d, GELU, ConvTranspose, +feat_s0, GELU; in NCHW in decoder.onnx, channels-last in the
MNN graph), the hypernetwork product and the IoU head. The prompt embedding is the official ``_embed_points`` with the padding point, as in
``Sam2Decoder``; the mask input joins as in ``FoldedDecoderWrapper`` (behind an If in decoder.onnx).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgesam.convert.sam_folded import (FoldedDecoderWrapper, FoldedTwoWayTransformer, set_dense_prompt, set_hyper,
                                            set_upscale_matmuls, subpixels_to_raster)


class FoldedSam2Decoder(nn.Module):
    """Same inputs and outputs as ``Sam2Decoder``: every mask token's 256x256 logits and scores.

    ``mnn``: the graph the MNN files are converted from (keys expanded to the prompt batch, chunked
    key sums, the branch-free mask path; ``FoldedDecoderWrapper``'s MNN workarounds) and, unless
    ``channels_last`` says otherwise, the upscaling channels-last (``FoldedDecoderWrapper``'s form,
    with the high-resolution features permuted into its sub-pixel row order)."""

    def __init__(self, model: nn.Module, mnn: bool = False, channels_last: bool | None = None) -> None:
        super().__init__()
        pe, md = model.sam_prompt_encoder, model.sam_mask_decoder
        if not md.use_high_res_features:
            raise ValueError("the folded SAM 2 decoder expects use_high_res_features (every SAM 2 config)")
        self.mnn = mnn
        self.prompt_encoder = pe
        set_dense_prompt(self, pe, mnn)
        out_tokens = [md.iou_token.weight, md.mask_tokens.weight]
        self.first = 1 if md.pred_obj_scores else 0  # SAM 2.1: the object-score token comes first
        if md.pred_obj_scores:
            out_tokens.insert(0, md.obj_score_token.weight)
        self.register_buffer("tokens", torch.cat(out_tokens, 0).detach().clone(), persistent=False)
        self.transformer = FoldedTwoWayTransformer(md.transformer, mnn)
        self.num_mask_tokens = md.num_mask_tokens
        self.output_upscaling = md.output_upscaling
        # The upscaling's layout, measured (sam2.1_hiera_t, 2 threads, interleaved medians, ms for 1 / 4
        # prompts): ONNX Runtime NCHW 24.4 / 88.4, channels-last 31.2 / 93.2 (its ConvTranspose beats the
        # permutes); MNN NCHW 40.9 / 146.2, channels-last 42.6 / 126.6 (AMG decodes 64 at a time).
        self.channels_last = mnn if channels_last is None else channels_last
        set_upscale_matmuls(self, md.output_upscaling[0], md.output_upscaling[3])
        set_hyper(self, md.output_hypernetworks_mlps)
        self.iou_head = md.iou_prediction_head

    dense_keys = FoldedDecoderWrapper.dense_keys  # image + dense prompt, channels-last (M, N, C)
    hyper = FoldedDecoderWrapper.hyper  # the hypernetwork MLPs as one batched MLP

    def forward(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
                has_mask_input):
        sparse = self.prompt_encoder._embed_points(point_coords, point_labels, pad=True)
        b = sparse.shape[0]
        tokens = torch.cat([self.tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)  # (B, T, C)
        keys = self.dense_keys(image_embed, mask_input, has_mask_input)  # (M, N, C), M = 1 or B
        if self.mnn:  # MNN 3.6's batched MatMul: see FoldedDecoderWrapper.forward
            keys = keys.expand(b, -1, -1)
        n_out = self.first + 1 + self.num_mask_tokens
        queries, keys = self.transformer(tokens, keys, self.image_pe, n_out)
        iou_token, mask_tokens = queries[:, self.first], queries[:, self.first + 1:n_out]
        c, side = keys.shape[2], image_embed.shape[-1]
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        hyper = self.hyper(mask_tokens)  # (B, K, C/8)
        k = self.num_mask_tokens
        if not self.channels_last:
            src = keys.transpose(1, 2).reshape(-1, c, side, side)  # (B, C, 64, 64): the keys depend on the prompt
            up = act1(ln1(dc1(src) + high_res_feats_1))
            up = act2(dc2(up) + high_res_feats_0)  # (B, C/8, 256, 256)
            masks = hyper @ up.flatten(2)  # (B, K, 65536)
            return masks.reshape(b, k, up.shape[2], up.shape[3]), self.iou_head(iou_token)
        # Channels-last, rows in sub-pixel order: level 1 rows (i, j, a, b) for pixel (2i+a, 2j+b);
        # level 0 rows (i, j, a1, b1, a2, b2) for pixel (4i+2a1+a2, 4j+2b1+b2). The high-resolution
        # features are permuted into those orders (once a call: they do not depend on the prompt).
        f1 = high_res_feats_1.reshape(self.c1, side, 2, side, 2).permute(1, 3, 2, 4, 0).reshape(1, -1, self.c1)
        f0 = high_res_feats_0.reshape(self.c2, side, 2, 2, side, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
        f0 = f0.reshape(1, -1, self.c2)
        y = (keys @ self.up1_w + self.up1_b).reshape(keys.shape[0], -1, self.c1) + f1  # (B, N*4, C1)
        y = act1(F.layer_norm(y, (self.c1,), ln1.weight, ln1.bias, ln1.eps))  # LayerNorm2d = over channels
        y = act2((y @ self.up2_w + self.up2_b).reshape(y.shape[0], -1, self.c2) + f0)  # (B, N*16, C2)
        m = (y @ hyper.transpose(1, 2)).transpose(1, 2)  # (B, K, N*16)
        return subpixels_to_raster(m, side), self.iou_head(iou_token)
