"""The decoder graph with its large projections folded onto the few prompt tokens.

Computes the same function as ``DecoderWrapper`` (prompt encoder + mask decoder,
all four mask tokens) with far fewer multiply-adds on the 64x64 = 4096 image
tokens. With T prompt tokens (5 output tokens + points), H = 8 heads of width
d = 16 and C = 256 channels, every cross attention of the two-way transformer
normally projects all 4096 image tokens from 256 to 128 channels twice
(2 x 4096 x 256 x 128 multiply-adds). Here those projections move to the token
side, which is exact algebra:

token -> image (queries: tokens; keys/values: image X, keys carry the PE P)
  scores_h = q_h (W_k,h (X+P)^T + b_k,h)   = (q_h W_k,h) (X+P)^T + q_h.b_k,h
    The last term is constant along the softmax axis, so it cancels exactly.
  out_h    = A_h (X W_v,h^T + b_v,h)      = (A_h X) W_v,h^T + b_v,h
    because every row of the softmax A_h sums to one.

image -> token (queries: image Y = X+P; keys/values: the T tokens)
  scores_h = (Y W_q,h^T + b_q,h) k_h^T     = Y (W_q,h^T k_h^T) + b_q,h k_h^T
  out      = sum_h A_h (v_h W_out,h^T) + b_out

Each costs 2 x 4096 x 256 x (H*T) multiply-adds instead of 2 x 4096 x 256 x 128,
a saving while H*T < 128, i.e. T < 16 tokens (one point: 7, a box: 7, a box and
a point: 8; 11 or more points lose). The output upscaling runs channels-last:
each stride-2, kernel-2 ConvTranspose2d is a per-pixel matmul, LayerNorm2d is a
plain LayerNormalization over the last axis, and the hypernetwork product
rearranges the 4x4 sub-pixels into 256x256 at the end. The four hypernetwork
MLPs run as one batched matmul each layer. No mask input costs a 16-channel
product (the downscaled mask is multiplied by has_mask_input before its last
1x1 convolution, which is exact for has_mask_input in {0, 1}); in decoder.onnx the mask head
sits behind an If and runs only when some has_mask_input is nonzero.

Weights are only reshaped and permuted here, never multiplied together, so the
folded graph's parameters are the checkpoint's own float32 values.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from edgesam.convert.sam_decoder import AV_CHUNK, DecoderWrapper
from edgesam.specs import IMAGE_SIZE


def _per_batch(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A constant (H, ...) operand expanded to ``like``'s batch, (B, H, ...), before a batched MatMul.
    MNN 3.6 returns garbage (NaN) from a MatMul that broadcasts a constant 3-D operand over a 4-D one
    once the batch is above 1; with both operands 4-D and the same batch it is right."""
    return w.unsqueeze(0).expand(like.shape[0], *w.shape)


def _sum_over_keys(attn: torch.Tensor, values: torch.Tensor, chunk: int) -> torch.Tensor:
    """attn^T @ values for attn (B, N, K) and values (B or 1, N, C). With ``chunk`` > 0 the sum over N
    runs in chunks of ``chunk`` keys (sam_decoder.ChunkedKeyAttention: MNN's ARM fp16 MatMul accumulates in
    fp16); then values must have the batch B."""
    b, n, k = attn.shape
    if not chunk or n <= chunk or n % chunk:
        return attn.transpose(1, 2) @ values
    c = n // chunk
    parts = attn.reshape(b, c, chunk, k).transpose(2, 3) @ values.reshape(b, c, chunk, values.shape[-1])
    return parts.sum(1)  # (B, K, C)


def _layer_norm_2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """segment_anything's LayerNorm2d (over the channels of NCHW), written as it writes it."""
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return w[:, None, None] * ((x - u) / torch.sqrt(s + eps)) + b[:, None, None]


def _dense_sum(src: torch.Tensor, z: torch.Tensor, has: torch.Tensor, mask_w: torch.Tensor,
               mask_b: torch.Tensor, no_mask: torch.Tensor) -> torch.Tensor:
    """src + has * (z W + b) + (1 - has) * no_mask for the mask head's z (M, N, 16) and has (M, 1, 1),
    with has applied to z before the last (linear) 1x1 conv W."""
    return src + ((z * has) @ mask_w + (has * mask_b + (1 - has) * no_mask))


def _mask_keys(src: torch.Tensor, mask_input: torch.Tensor, has_mask_input: torch.Tensor,
               c1w: torch.Tensor, c1b: torch.Tensor, n1w: torch.Tensor, n1b: torch.Tensor,
               c2w: torch.Tensor, c2b: torch.Tensor, n2w: torch.Tensor, n2b: torch.Tensor,
               mask_w: torch.Tensor, mask_b: torch.Tensor, no_mask: torch.Tensor, eps: float) -> torch.Tensor:
    """src (1, N, C) + the dense prompt embedding, (M, N, C). Scripted, so that the export keeps the
    ``if`` as an ONNX If: without a mask input (every has_mask_input 0) the mask head is skipped and
    the sum is src + no_mask exactly. The mask head is the official one (conv 2x2/2, LayerNorm2d,
    GELU, twice)."""
    has = has_mask_input.reshape(-1, 1, 1)
    if bool((has_mask_input != 0).any()):
        x = F.gelu(_layer_norm_2d(F.conv2d(mask_input, c1w, c1b, stride=2), n1w, n1b, eps))
        x = F.gelu(_layer_norm_2d(F.conv2d(x, c2w, c2b, stride=2), n2w, n2b, eps))
        return _dense_sum(src, x.flatten(2).transpose(1, 2), has, mask_w, mask_b, no_mask)
    return src + (no_mask + 0 * has)  # (M, N, C) like the other branch


def _scripted_mask_branch(mask_downscaling: nn.Module):
    """``_mask_keys`` scripted, or None when the mask head is not the official layout (conv, LayerNorm2d,
    exact GELU, conv, LayerNorm2d, exact GELU, 1x1 conv): then the branch-free form is exported."""
    mods = list(mask_downscaling)
    if len(mods) != 7:
        return None
    gelus = [m for m in (mods[2], mods[5]) if isinstance(m, nn.GELU) and m.approximate == "none"]
    norms = [m for m in (mods[1], mods[4]) if type(m).__name__ == "LayerNorm2d"]
    if len(gelus) != 2 or len(norms) != 2 or norms[0].eps != norms[1].eps:
        return None
    return _scripted_mask_keys()


@functools.cache
def _scripted_mask_keys():
    """``_mask_keys`` scripted once a process (every export would otherwise compile it again)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated; the ONNX If comes from it
        return torch.jit.script(_mask_keys)


def _heads(w: torch.Tensor, h: int) -> torch.Tensor:
    """Linear weight (D, C) -> (H, D/H, C): the rows of each head."""
    return w.detach().reshape(h, w.shape[0] // h, w.shape[1]).clone()


class _TokenToImage(nn.Module):
    """Attention with T token queries over N image keys, projections folded onto the queries.

    Without ``chunk`` the scores are token-major, (B, H*T, N): the softmax runs over the last axis
    and probabilities @ values is a plain product. With ``chunk`` (the MNN graph) they are
    image-major, (B, N, H*T), the layout MNN's chunked sums were checked in on ARM.
    """

    def __init__(self, attn: nn.Module, chunk: int) -> None:
        super().__init__()
        h = attn.num_heads
        self.h, self.d, self.chunk = h, attn.internal_dim // h, chunk
        self.q_proj = attn.q_proj
        self.out_proj = attn.out_proj
        self.scale = 1.0 / math.sqrt(self.d)
        self.register_buffer("wk", _heads(attn.k_proj.weight, h), persistent=False)  # (H, d, C)
        self.register_buffer("wv_t", _heads(attn.v_proj.weight, h).transpose(1, 2).contiguous(),
                             persistent=False)  # (H, C, d)
        self.register_buffer("bv", attn.v_proj.bias.detach().clone(), persistent=False)

    def forward(self, q_in: torch.Tensor, keys_pe: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, t, _ = q_in.shape
        q = self.q_proj(q_in).reshape(b, t, self.h, self.d).transpose(1, 2)  # (B, H, T, d)
        g = ((q * self.scale) @ _per_batch(self.wk, q)).reshape(b, self.h * t, -1)  # (B, H*T, C); b_k cancels
        if self.chunk:
            # Image-major scores (B, N, H*T), softmax over N, sums over N in chunks (MNN graph).
            attn = torch.softmax(keys_pe @ g.transpose(1, 2), dim=1)
            ax = _sum_over_keys(attn, values, self.chunk)
        else:
            # Token-major scores (B, H*T, N). ONNX Runtime: 1.0 ms less a prompt than image-major
            # over the three token->image attentions (its softmax over a non-last axis transposes).
            ax = torch.softmax(g @ keys_pe.transpose(1, 2), dim=-1) @ values
        ax = ax.reshape(b, self.h, t, -1)  # (B, H, T, C)
        out = (ax @ _per_batch(self.wv_t, ax)).transpose(1, 2).reshape(b, t, self.h * self.d) + self.bv  # rows of A sum to 1
        return self.out_proj(out)


class _ImageToToken(nn.Module):
    """Attention with N image queries over T token keys, projections folded onto the keys and values."""

    def __init__(self, attn: nn.Module, head_major: bool) -> None:
        super().__init__()
        h = attn.num_heads
        self.h, self.d, self.head_major = h, attn.internal_dim // h, head_major
        self.k_proj = attn.k_proj
        self.v_proj = attn.v_proj
        self.scale = 1.0 / math.sqrt(self.d)
        self.register_buffer("wq_t", _heads(attn.q_proj.weight, h).transpose(1, 2).contiguous(),
                             persistent=False)  # (H, C, d)
        self.register_buffer("bq", attn.q_proj.bias.detach().reshape(h, 1, self.d).clone(), persistent=False)
        wo = attn.out_proj.weight.detach()  # (C, D): columns per head
        self.register_buffer("wo_t", wo.reshape(wo.shape[0], h, self.d).permute(1, 2, 0).contiguous(),
                             persistent=False)  # (H, d, C)
        self.register_buffer("bo_h", attn.out_proj.bias.detach() / h, persistent=False)

    def forward(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        b, t, _ = k_in.shape
        v = self.v_proj(v_in).reshape(b, t, self.h, self.d).transpose(1, 2)  # (B, H, T, d)
        # Each image row of attn sums to H (one softmax per head), so b_out / H on every row of u adds b_out.
        u = (v @ _per_batch(self.wo_t, v) + self.bo_h).reshape(b, self.h * t, -1)  # (B, H*T, C)
        if self.head_major:
            # Scores (B, H, T, N): the softmax over the T tokens reduces across rows of N contiguous
            # values, written out (max, exp, sum) because ONNX Runtime's Softmax on a non-last axis
            # transposes. 0.7 ms less a prompt over the two layers than (B, N, H, T) with Softmax.
            k = self.k_proj(k_in).reshape(b, t, self.h, self.d).transpose(1, 2) * self.scale  # (B, H, T, d)
            m = (k @ _per_batch(self.wq_t, k).transpose(2, 3)).reshape(b, self.h * t, -1)  # (B, H*T, C)
            c = (k @ _per_batch(self.bq, k).transpose(2, 3)).reshape(b, self.h * t, 1)  # (B, H*T, 1)
            s = (m @ q_in.transpose(1, 2) + c).reshape(b, self.h, t, -1)
            e = torch.exp(s - s.amax(dim=2, keepdim=True))
            attn = (e / e.sum(dim=2, keepdim=True)).reshape(b, self.h * t, -1)  # (B, H*T, N)
            return attn.transpose(1, 2) @ u
        k_t = self.k_proj(k_in).reshape(b, t, self.h, self.d).permute(0, 2, 3, 1) * self.scale  # (B, H, d, T)
        m = (_per_batch(self.wq_t, k_t) @ k_t).permute(0, 2, 1, 3).reshape(b, -1, self.h * t)  # (B, C, H*T)
        c = (_per_batch(self.bq, k_t) @ k_t).reshape(b, 1, self.h * t)  # (B, 1, H*T)
        s = (q_in @ m + c).reshape(b, -1, self.h, t)
        attn = torch.softmax(s, dim=-1).reshape(b, -1, self.h * t)  # (B, N, H*T)
        return attn @ u


def set_dense_prompt(m: nn.Module, pe: nn.Module, mnn: bool) -> None:
    """What ``FoldedDecoderWrapper.dense_keys`` reads, from a prompt encoder (SAM's or SAM 2's: the same
    mask head), on ``m``: the mask head but its last 1x1 conv, that conv as a matmul, ``no_mask``, the
    scripted If branch (not in the MNN graph) and the image PE channels-last."""
    # mask_downscaling = conv, LN2d, act, conv, LN2d, act, 1x1 conv: keep all but the last conv.
    m.mask_head = nn.Sequential(*list(pe.mask_downscaling)[:-1])
    last = pe.mask_downscaling[-1]
    m.register_buffer("mask_w", last.weight.detach()[:, :, 0, 0].t().contiguous(), persistent=False)
    m.register_buffer("mask_b", last.bias.detach().clone(), persistent=False)
    m.register_buffer("no_mask", pe.no_mask_embed.weight.detach().clone(), persistent=False)  # (1, C)
    m.mask_branch = None if mnn else _scripted_mask_branch(pe.mask_downscaling)
    dense_pe = pe.get_dense_pe().detach()  # (1, C, h, w), depends on weights only
    # A parameter, not a buffer: the exporter then writes it once, not once per use.
    m.image_pe = nn.Parameter(dense_pe.flatten(2).transpose(1, 2).contiguous(), requires_grad=False)


def set_upscale_matmuls(m: nn.Module, ct1: nn.Module, ct2: nn.Module) -> None:
    """The two output-upscaling ConvTranspose2d (kernel 2, stride 2) as per-pixel matmuls on ``m``:
    out[o, 2i+a, 2j+b] = sum_c x[c, i, j] w[c, o, a, b] + bias[o], weights (C_in, 4*C_out) with columns
    (a, b, o)."""
    for name, ct in (("up1", ct1), ("up2", ct2)):
        m.register_buffer(f"{name}_w", ct.weight.detach().permute(0, 2, 3, 1).reshape(ct.in_channels, -1).clone(),
                          persistent=False)
        m.register_buffer(f"{name}_b", ct.bias.detach().repeat(4), persistent=False)
    m.c1, m.c2 = ct1.out_channels, ct2.out_channels


def set_hyper(m: nn.Module, mlps: nn.ModuleList) -> None:
    """The hypernetwork MLPs as one batched MLP on ``m`` (``FoldedDecoderWrapper.hyper``): layer weights
    stacked (K, in, out). They must be ReLU MLPs without a sigmoid output (SAM's and SAM 2's are)."""
    if any(getattr(x, "sigmoid_output", False) or not isinstance(getattr(x, "act", nn.ReLU()), nn.ReLU)
           for x in mlps):
        raise ValueError("the folded decoder expects ReLU hypernetwork MLPs without a sigmoid output")
    m.hyper_layers = mlps[0].num_layers
    for i in range(m.hyper_layers):
        m.register_buffer(f"hyper_w{i}", torch.stack([x.layers[i].weight.detach().t() for x in mlps]),
                          persistent=False)
        m.register_buffer(f"hyper_b{i}", torch.stack([x.layers[i].bias.detach() for x in mlps]).unsqueeze(1),
                          persistent=False)


def subpixels_to_raster(m: torch.Tensor, side: int) -> torch.Tensor:
    """(B, K, side*side*16) mask logits in sub-pixel column order (i, j, a1, b1, a2, b2) -> (B, K,
    4*side, 4*side), row 4i + 2a1 + a2, column 4j + 2b1 + b2. One upscaling level at a time: each
    step is a low-rank transpose moving runs of 4 and then 2 values; ONNX Runtime ran that 2-3x
    faster than the equivalent single 8-D permute."""
    b, k = m.shape[:2]
    m = m.reshape(b * k * side, side, 2, 2 * 2 * 2).transpose(1, 2)  # (.., i, a1, j, b1, a2, b2)
    m = m.reshape(b * k * side * 2, side * 2, 2, 2).transpose(1, 2)  # (.., i, a1, a2, j, b1, b2)
    return m.reshape(b, k, side * 4, side * 4)


class FoldedTwoWayTransformer(nn.Module):
    """The two-way transformer of SAM's and SAM 2's mask decoders (the same layout in both packages),
    channels-last, with the image-side projections of its cross attentions folded onto the tokens
    (``_TokenToImage``, ``_ImageToToken``). ``mnn``: the MNN graph's layouts and chunked key sums."""

    def __init__(self, tr: nn.Module, mnn: bool = False) -> None:
        super().__init__()
        chunk = AV_CHUNK if mnn else 0
        self.layers = nn.ModuleList()
        for layer in tr.layers:
            self.layers.append(nn.ModuleDict({
                "self_attn": layer.self_attn, "norm1": layer.norm1,
                "t2i": _TokenToImage(layer.cross_attn_token_to_image, chunk), "norm2": layer.norm2,
                "mlp": layer.mlp, "norm3": layer.norm3,
                "i2t": _ImageToToken(layer.cross_attn_image_to_token, head_major=not mnn), "norm4": layer.norm4,
            }))
        self.skip_first_layer_pe = [bool(layer.skip_first_layer_pe) for layer in tr.layers]
        self.final_t2i = _TokenToImage(tr.final_attn_token_to_image, chunk)
        self.norm_final = tr.norm_final_attn

    def forward(self, point_embedding: torch.Tensor, keys: torch.Tensor, pe: torch.Tensor,
                n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, T, C) and image keys (M, N, C) with their PE (1, N, C) -> the first ``n_out``
        tokens after the final attention, and the keys."""
        queries = point_embedding
        for layer, skip in zip(self.layers, self.skip_first_layer_pe):
            if skip:
                queries = layer["self_attn"](q=queries, k=queries, v=queries)
            else:
                q = queries + point_embedding
                queries = queries + layer["self_attn"](q=q, k=q, v=queries)
            queries = layer["norm1"](queries)
            keys_pe = keys + pe  # shared by both cross attentions of the block
            queries = layer["norm2"](queries + layer["t2i"](queries + point_embedding, keys_pe, keys))
            queries = layer["norm3"](queries + layer["mlp"](queries))
            q = queries + point_embedding
            keys = layer["norm4"](keys + layer["i2t"](keys_pe, q, queries))
        # Only the output tokens are read after the final attention, and each query attends on its
        # own, so the point tokens are dropped before it (5 of 7 tokens for one point on SAM).
        queries, point_embedding = queries[:, :n_out], point_embedding[:, :n_out]
        queries = self.norm_final(queries + self.final_t2i(queries + point_embedding, keys + pe, keys))
        return queries, keys


class FoldedDecoderWrapper(nn.Module):
    """Same inputs and outputs as ``DecoderWrapper``; the same function, restructured (module docstring).

    ``mnn=True`` builds the graph the MNN files are converted from, with two workarounds for MNN at
    a cost elsewhere (about 2 ms a prompt in ONNX Runtime): the token->image sums over the image keys
    run in chunks of ``AV_CHUNK``, and the image keys are expanded to the prompt batch before the
    first attention. It also keeps the layouts checked on ARM before (image-major scores, ONNX
    Softmax) and the branch-free mask path. decoder.onnx (ONNX Runtime, OpenVINO, TensorRT) is the
    plain graph: token-/head-major scores and the mask head behind an If.
    """

    def __init__(self, sam: nn.Module, mnn: bool = False) -> None:
        super().__init__()
        self.mnn = mnn
        pe = sam.prompt_encoder
        md = sam.mask_decoder
        tr = md.transformer
        self.pe_layer = pe.pe_layer
        self.point_embeddings = pe.point_embeddings
        self.not_a_point = pe.not_a_point_embed
        self.img_size = float(IMAGE_SIZE)
        set_dense_prompt(self, pe, mnn)
        self.register_buffer("tokens", torch.cat([md.iou_token.weight, md.mask_tokens.weight], 0).detach().clone(),
                             persistent=False)
        self.transformer = FoldedTwoWayTransformer(tr, mnn)
        self.num_mask_tokens = md.num_mask_tokens
        up = md.output_upscaling  # ConvT(C, C/4, 2, 2), LayerNorm2d, act, ConvT(C/4, C/8, 2, 2), act
        ct1, ln, self.act1, ct2, self.act2 = up
        set_upscale_matmuls(self, ct1, ct2)
        self.ln_w, self.ln_b, self.ln_eps = ln.weight, ln.bias, float(ln.eps)
        set_hyper(self, md.output_hypernetworks_mlps)
        self.iou_head = md.iou_prediction_head

    # The same sparse prompt embedding as the reference graph (it reads the same attributes).
    embed_points = DecoderWrapper.embed_points

    def dense_keys(self, image_embeddings: torch.Tensor, mask_input: torch.Tensor,
                   has_mask_input: torch.Tensor) -> torch.Tensor:
        """image + dense prompt, channels-last (M, N, C) (``_dense_sum``). In decoder.onnx this is an If:
        the mask head runs only when some has_mask_input is nonzero (1.2 ms a prompt in ONNX Runtime
        without a mask input); the MNN graph keeps the branch-free form."""
        src = image_embeddings.flatten(2).transpose(1, 2)  # (1, N, C)
        if self.mask_branch is not None:
            conv1, ln1, _, conv2, ln2 = list(self.mask_head)[:5]
            return self.mask_branch(src, mask_input, has_mask_input, conv1.weight, conv1.bias, ln1.weight, ln1.bias,
                                    conv2.weight, conv2.bias, ln2.weight, ln2.bias, self.mask_w, self.mask_b,
                                    self.no_mask, float(ln1.eps))
        z = self.mask_head(mask_input).flatten(2).transpose(1, 2)  # (M, N, 16)
        return _dense_sum(src, z, has_mask_input.reshape(-1, 1, 1), self.mask_w, self.mask_b, self.no_mask)

    def hyper(self, mask_tokens: torch.Tensor) -> torch.Tensor:
        x = mask_tokens.transpose(0, 1)  # (K, B, C)
        for i in range(self.hyper_layers):
            x = x @ getattr(self, f"hyper_w{i}") + getattr(self, f"hyper_b{i}")
            if i < self.hyper_layers - 1:
                x = F.relu(x)
        return x.transpose(0, 1)  # (B, K, C/8)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self.embed_points(point_coords, point_labels)
        b = sparse.shape[0]
        point_embedding = torch.cat([self.tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)  # (B, T, C)
        keys = self.dense_keys(image_embeddings, mask_input, has_mask_input)  # (M, N, C), M = 1 or B
        if self.mnn:  # MNN 3.6's batched MatMul returns non-finite values when one operand has batch 1
            keys = keys.expand(b, -1, -1)  # and the other B > 1; elsewhere the matmuls broadcast
        queries, keys = self.transformer(point_embedding, keys, self.image_pe, 1 + self.num_mask_tokens)
        iou_token = queries[:, 0, :]
        hyper = self.hyper(queries[:, 1:1 + self.num_mask_tokens, :])  # (B, K, C/8)
        n = keys.shape[1]
        side = int(round(math.sqrt(n)))
        y = torch.addmm(self.up1_b, keys.reshape(-1, keys.shape[2]), self.up1_w).reshape(-1, self.c1)
        y = self.act1(F.layer_norm(y, (self.c1,), self.ln_w, self.ln_b, self.ln_eps))
        y = self.act2(torch.addmm(self.up2_b, y, self.up2_w)).reshape(b, n * 16, self.c2)  # (B, N*16, C/8)
        m = (y @ hyper.transpose(1, 2)).transpose(1, 2)  # (B, K, N*16), columns (i, j, a1, b1, a2, b2)
        return self.iou_head(iou_token), subpixels_to_raster(m, side)
