"""SAM 2's video graphs: what ``sam2.sam2_video_predictor.SAM2VideoPredictor`` runs per frame beyond
the image encoder, as three stateless graphs (the memory bank lives in the caller, in numpy:
``edgesam.runtime.video_memory``), and the reference the convert gate checks them against.

- ``MemoryAttentionGraph``: ``SAM2Base.memory_attention`` with its inputs assembled as
  ``_prepare_memory_conditioned_features`` does (the backbone's sine position encoding, the mask
  memories' spatial encoding plus their temporal slot, the object pointers split into
  ``hidden_dim / mem_dim`` tokens with their projected sine distance encoding). The rotary
  encoding of ``RoPEAttention`` multiplies complex tensors, which the ONNX exporter does not take;
  here it is the same rotation in real arithmetic (``rotate``), pairs (x0, x1) -> (x0 cos - x1 sin,
  x0 sin + x1 cos), and the gate compares the result with the official module. Queries run in
  blocks of ``Q_BLOCK`` so no runtime holds the whole 4096 x (F x 4096) score matrix at once.
- ``MemoryEncoderGraph``: ``_encode_new_memory`` from the low-res logits: bilinear upsampling to
  the image size, sigmoid (or > 0 for clicked frames), the scale and bias, ``memory_encoder`` with
  its channel LayerNorms written channels-last (``_channels_last_norm``: MNN's converter crashed on
  the NCHW form).
- ``TrackDecoderGraph``: the prompt encoder and mask decoder with every token's mask, IoU,
  the object-score logit and every token's object pointer (``obj_ptr_proj``).
"""
from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesam.convert.sam2_family import DECODER_INPUTS, Sam2Decoder
from edgesam.specs import LOWRES

Q_BLOCK = 1024  # memory attention queries per block
MEMORY_ATTENTION_INPUTS = ("pix_feat", "memory", "memory_tpos", "obj_ptrs", "obj_ptr_tpos", "obj_ptr_mask")
MEMORY_ATTENTION_OUTPUTS = ("pix_feat_with_mem",)
MEMORY_ENCODER_INPUTS = ("pix_feat", "mask_logits", "binarize")
MEMORY_ENCODER_OUTPUTS = ("maskmem_features",)
TRACK_DECODER_INPUTS = DECODER_INPUTS
TRACK_DECODER_OUTPUTS = ("masks", "iou_predictions", "object_score_logits", "obj_ptrs")
VIDEO_GRAPHS = {"memory_attention": (MEMORY_ATTENTION_INPUTS, MEMORY_ATTENTION_OUTPUTS),
                "memory_encoder": (MEMORY_ENCODER_INPUTS, MEMORY_ENCODER_OUTPUTS),
                "track_decoder": (TRACK_DECODER_INPUTS, TRACK_DECODER_OUTPUTS)}
PTR_MASK_LOGIT = 1e4  # a masked-out object pointer's score offset: its softmax weight is exactly 0
# SAM2Base attributes recorded in a bundle's "video" section (runtime.video_memory.VideoSpec)
SPEC_ATTRIBUTES = ("num_maskmem", "max_obj_ptrs_in_encoder", "memory_temporal_stride_for_eval",
                   "max_cond_frames_in_attn", "hidden_dim", "mem_dim", "image_size", "add_tpos_enc_to_obj_ptrs",
                   "use_signed_tpos_enc_to_obj_ptrs", "only_obj_ptrs_in_the_past_for_eval",
                   "binarize_mask_from_pts_for_mem_enc", "multimask_output_in_sam", "multimask_output_for_tracking",
                   "multimask_min_pt_num", "multimask_max_pt_num", "use_multimask_token_for_obj_ptr",
                   "pred_obj_scores", "soft_no_obj_ptr", "fixed_no_obj_ptr", "use_mask_input_as_output_without_sam")
# what build_sam2_video_predictor switches on (its apply_postprocessing): the image model built for
# the image predictor has the same stability fallback; these two only the video predictor sets
VIDEO_PREDICTOR_SETTINGS = {"binarize_mask_from_pts_for_mem_enc": True, "fill_hole_area": 8}


def feat_size(model: nn.Module) -> int:
    return model.image_size // 16


def video_spec(model: nn.Module) -> dict:
    """The bundle's ``video`` section: the memory bank's shape and the tracking rules, from the model."""
    spec = {}
    for name in SPEC_ATTRIBUTES:
        v = getattr(model, name)
        spec[name] = bool(v) if isinstance(v, bool) else int(v)
    spec.update(VIDEO_PREDICTOR_SETTINGS)
    return spec


def video_constants(model: nn.Module) -> dict[str, np.ndarray]:
    """The learned vectors the numpy bookkeeping mixes in (``video_constants.npz``)."""
    nospatial = model.no_obj_embed_spatial
    return {"no_mem_embed": model.no_mem_embed.detach().reshape(-1).numpy().astype(np.float32),
            "no_obj_ptr": model.no_obj_ptr.detach().reshape(-1).numpy().astype(np.float32),
            "no_obj_embed_spatial": (nospatial.detach().reshape(-1).numpy().astype(np.float32)
                                     if nospatial is not None else np.zeros(0, np.float32)),
            "mask_downsample_weight": model.mask_downsample.weight.detach().numpy().astype(np.float32),
            "mask_downsample_bias": model.mask_downsample.bias.detach().numpy().astype(np.float32)}


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotary encoding on the last axis of ``x`` (pairs of channels), ``cos``/``sin`` broadcast
    over its leading axes: ``view_as_complex(x) * freqs_cis`` in real numbers."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class MemoryAttentionGraph(nn.Module):
    def __init__(self, model: nn.Module, q_block: int = Q_BLOCK) -> None:
        super().__init__()
        self.ma = model.memory_attention
        self.hidden, self.mem_dim, self.q_block = model.hidden_dim, model.mem_dim, q_block
        self.add_tpos = bool(model.add_tpos_enc_to_obj_ptrs)
        self.tpos_dim = model.hidden_dim if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim
        self.obj_ptr_tpos_proj = model.obj_ptr_tpos_proj
        s = feat_size(model)
        with torch.no_grad():
            curr_pos = model.image_encoder.neck.position_encoding(torch.zeros(1, self.hidden, s, s))
            mem_pos = model.memory_encoder.position_encoding(torch.zeros(1, self.mem_dim, s, s))
        self.register_buffer("curr_pos", curr_pos.flatten(2).transpose(1, 2).contiguous(), persistent=False)
        self.register_buffer("mem_pos", mem_pos.flatten(2).transpose(1, 2).contiguous(), persistent=False)
        self.register_buffer("tpos_table", model.maskmem_tpos_enc.detach().reshape(model.num_maskmem, self.mem_dim),
                             persistent=False)
        pe_dim = self.tpos_dim // 2
        dim_t = torch.arange(pe_dim, dtype=torch.float32)
        self.register_buffer("dim_t", 10000 ** (2 * (dim_t // 2) / pe_dim), persistent=False)
        for i, layer in enumerate(self.ma.layers):
            for name in ("self_attn", "cross_attn_image"):
                cis = getattr(layer, name).freqs_cis.detach().cpu()
                if cis.shape[0] != s * s:
                    cis = getattr(layer, name).compute_cis(end_x=s, end_y=s)
                self.register_buffer(f"cos_{name}_{i}", cis.real.contiguous(), persistent=False)
                self.register_buffer(f"sin_{name}_{i}", cis.imag.contiguous(), persistent=False)

    def _attend(self, attn, qk, v_in, cos, sin):
        """Self-attention (``RoPEAttention.forward`` over one frame's tokens): rotary on queries and
        keys, queries in blocks."""
        h = attn.num_heads
        q, k, v = attn.q_proj(qk), attn.k_proj(qk), attn.v_proj(v_in)
        n, d = q.shape[1], q.shape[2] // h
        q = rotate(q.reshape(1, n, h, d).transpose(1, 2), cos, sin)  # 1 x h x n x d
        k = rotate(k.reshape(1, n, h, d).transpose(1, 2), cos, sin)
        v = v.reshape(1, n, h, d).transpose(1, 2)
        scale = 1.0 / math.sqrt(d)
        outs = [torch.matmul(torch.softmax(torch.matmul(qb, k.transpose(-1, -2)) * scale, dim=-1), v)
                for qb in q.split(self.q_block, dim=2)]
        return attn.out_proj(torch.cat(outs, dim=2).transpose(1, 2).reshape(1, n, h * d))

    def forward(self, pix_feat, memory, memory_tpos, obj_ptrs, obj_ptr_tpos, obj_ptr_mask):
        ma = self.ma
        curr = pix_feat.flatten(2).transpose(1, 2)  # 1 x HW x C
        qpos = self.curr_pos
        mem = memory.flatten(2).transpose(1, 2)  # F x HW x mem_dim
        mem_pos = self.mem_pos + torch.matmul(memory_tpos, self.tpos_table).unsqueeze(1)
        mem = mem.reshape(1, -1, self.mem_dim)
        mem_pos = mem_pos.reshape(1, -1, self.mem_dim)
        split = self.hidden // self.mem_dim
        ptr = obj_ptrs.reshape(1, -1, self.mem_dim)  # each pointer as `split` tokens, pointer-major
        if self.add_tpos:
            pe = obj_ptr_tpos.unsqueeze(-1) / self.dim_t
            pe = self.obj_ptr_tpos_proj(torch.cat((pe.sin(), pe.cos()), dim=-1))  # P x mem_dim
        else:
            pe = torch.zeros_like(obj_ptrs[:, :self.mem_dim])
        ptr_pos = pe.unsqueeze(1).expand(-1, split, -1).reshape(1, -1, self.mem_dim)
        bias = ((obj_ptr_mask - 1.0) * PTR_MASK_LOGIT).unsqueeze(1).expand(-1, split).reshape(1, 1, 1, -1)
        out = curr
        if ma.pos_enc_at_input:
            out = out + 0.1 * qpos
        for i, layer in enumerate(ma.layers):
            cos_s, sin_s = getattr(self, f"cos_self_attn_{i}"), getattr(self, f"sin_self_attn_{i}")
            cos_c, sin_c = getattr(self, f"cos_cross_attn_image_{i}"), getattr(self, f"sin_cross_attn_image_{i}")
            t2 = layer.norm1(out)
            qk = t2 + qpos if layer.pos_enc_at_attn else t2
            out = out + self._attend(layer.self_attn, qk, t2, cos_s, sin_s)
            t2 = layer.norm2(out)
            q = t2 + qpos if layer.pos_enc_at_cross_attn_queries else t2
            k_mem = mem + mem_pos if layer.pos_enc_at_cross_attn_keys else mem
            k_ptr = ptr + ptr_pos if layer.pos_enc_at_cross_attn_keys else ptr
            out = out + self._attend_cross(layer.cross_attn_image, q, k_mem, mem, cos_c, sin_c, k_ptr, ptr, bias)
            t2 = layer.norm3(out)
            out = out + layer.linear2(layer.activation(layer.linear1(t2)))
        out = ma.norm(out)
        s = int(math.isqrt(curr.shape[1]))
        return out.transpose(1, 2).reshape(1, self.hidden, s, s)

    def _attend_cross(self, attn, q, k_mem, v_mem, cos, sin, k_ptr, v_ptr, bias):
        """Cross-attention: the rotary keys are the memory frames (their value is the memory itself,
        the key adds the position encodings), the pointer tokens after them keep no rotation."""
        h = attn.num_heads
        qq = attn.q_proj(q)
        n, d = qq.shape[1], qq.shape[2] // h
        qq = rotate(qq.reshape(1, n, h, d).transpose(1, 2), cos, sin)
        k = attn.k_proj(k_mem)
        frames_n = k.shape[1]
        k = k.reshape(1, -1, n, h, d).permute(0, 3, 1, 2, 4)
        k = rotate(k, cos, sin).reshape(1, h, frames_n, d)
        v = attn.v_proj(v_mem).reshape(1, frames_n, h, d).transpose(1, 2)
        kp = attn.k_proj(k_ptr).reshape(1, -1, h, d).transpose(1, 2)
        vp = attn.v_proj(v_ptr).reshape(1, -1, h, d).transpose(1, 2)
        scale = 1.0 / math.sqrt(d)
        outs = []
        for qb in qq.split(self.q_block, dim=2):
            s = torch.matmul(qb, k.transpose(-1, -2)) * scale
            sp = torch.matmul(qb, kp.transpose(-1, -2)) * scale + bias
            p = torch.softmax(torch.cat((s, sp), dim=-1), dim=-1)
            outs.append(torch.matmul(p[..., :frames_n], v) + torch.matmul(p[..., frames_n:], vp))
        out = torch.cat(outs, dim=2).transpose(1, 2).reshape(1, n, h * d)
        return attn.out_proj(out)


class MemoryEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.memory_encoder
        self.size = model.image_size
        self.scale, self.bias = float(model.sigmoid_scale_for_mem_enc), float(model.sigmoid_bias_for_mem_enc)

    def forward(self, pix_feat, mask_logits, binarize):
        high = F.interpolate(mask_logits, size=(self.size, self.size), mode="bilinear", align_corners=False)
        # written as Where: MNN 3.6.1's converter miscomputed b * (high > 0) + (1 - b) * sigmoid(high)
        # followed by the encoder (cosine 0.76 against torch), though each part alone converts right
        hard = torch.where(high > 0, torch.ones_like(high), torch.zeros_like(high))
        mask = torch.where(binarize.reshape(1, 1, 1, 1) > 0.5, hard, torch.sigmoid(high))
        if self.scale != 1.0:
            mask = mask * self.scale
        if self.bias != 0.0:
            mask = mask + self.bias
        me = self.encoder
        x = mask
        for layer in me.mask_downsampler.encoder:
            x = _channels_last_norm(layer, x) if _is_layernorm2d(layer) else layer(x)
        x = me.pix_feat_proj(pix_feat) + x
        x = me.fuser.proj(x)
        for block in me.fuser.layers:  # CXBlock
            y = block.dwconv(x).permute(0, 2, 3, 1)
            y = F.layer_norm(y, (y.shape[-1],), block.norm.weight, block.norm.bias, block.norm.eps)
            y = block.pwconv2(block.act(block.pwconv1(y)))
            if block.gamma is not None:
                y = block.gamma * y
            x = x + y.permute(0, 3, 1, 2)
        return me.out_proj(x)


def _is_layernorm2d(layer: nn.Module) -> bool:
    return type(layer).__name__ == "LayerNorm2d"


def _channels_last_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sam2's ``LayerNorm2d`` (over channels, NCHW) as a LayerNorm over the last axis of NHWC: the
    same function. MNN 3.6.1's converter fuses the NCHW form as a LayerNorm and crashed (signal 11)
    converting the memory encoder's fuser written that way; channels-last it converts and matches."""
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, norm.eps)
    return y.permute(0, 3, 1, 2)


class TrackDecoderGraph(Sam2Decoder):
    """The image decoder's graph (``Sam2Decoder``) returning the object score and pointers too."""

    def __init__(self, model: nn.Module, av_chunk: int = 0) -> None:
        super().__init__(model, av_chunk)
        self.obj_ptr_proj = model.obj_ptr_proj

    def forward(self, *inputs):
        masks, iou, tokens, score = self.predict(*inputs)
        return masks, iou, score, self.obj_ptr_proj(tokens)


def graph_module(model: nn.Module, name: str, mnn: bool = False) -> nn.Module:
    from edgesam.convert.sam_export import AV_CHUNK

    if name == "memory_attention":
        return MemoryAttentionGraph(model).eval()
    if name == "memory_encoder":
        return MemoryEncoderGraph(model).eval()
    if name == "track_decoder":
        return TrackDecoderGraph(model, AV_CHUNK if mnn else 0).eval()
    raise ValueError(f"unknown video graph {name!r}")


def dummy_inputs(model: nn.Module, name: str, frames: int = 2, ptrs: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s, c, m = feat_size(model), model.hidden_dim, model.mem_dim
    if name == "memory_attention":
        tpos = np.zeros((frames, model.num_maskmem), np.float32)
        tpos[np.arange(frames), rng.integers(0, model.num_maskmem, frames)] = 1
        return {"pix_feat": rng.standard_normal((1, c, s, s)).astype(np.float32),
                "memory": rng.standard_normal((frames, m, s, s)).astype(np.float32), "memory_tpos": tpos,
                "obj_ptrs": rng.standard_normal((ptrs, c)).astype(np.float32),
                "obj_ptr_tpos": rng.uniform(-1, 1, ptrs).astype(np.float32),
                "obj_ptr_mask": np.ones(ptrs, np.float32)}
    if name == "memory_encoder":
        return {"pix_feat": rng.standard_normal((1, c, s, s)).astype(np.float32),
                "mask_logits": (4 * rng.standard_normal((1, 1, LOWRES, LOWRES))).astype(np.float32),
                "binarize": np.zeros(1, np.float32)}
    from edgesam.convert.sam2_family import dummy_decoder_inputs

    feeds = dummy_decoder_inputs(model, b=1, n=2, seed=seed)
    return feeds


DYNAMIC_AXES = {"memory_attention": {"memory": {0: "F"}, "memory_tpos": {0: "F"}, "obj_ptrs": {0: "P"},
                                     "obj_ptr_tpos": {0: "P"}, "obj_ptr_mask": {0: "P"}},
                "memory_encoder": None,
                "track_decoder": {"point_coords": {1: "N"}, "point_labels": {1: "N"}}}


def export_graph(model: nn.Module, name: str, path: Path, opset: int, mnn: bool = False) -> None:
    from edgesam.convert.sam_export import _export

    ins, outs = VIDEO_GRAPHS[name]
    feeds = dummy_inputs(model, name)
    args = tuple(torch.from_numpy(feeds[k]) for k in ins)
    _export(graph_module(model, name, mnn), args, path, ins, outs, DYNAMIC_AXES[name], opset)


# --- the official reference --------------------------------------------------------------------

class _Float32Storage:
    """Stands in for ``torch`` inside ``sam2.sam2_video_predictor`` only, with ``bfloat16`` meaning
    float32: sam2 1.1.0 stores every mask memory with ``.to(torch.bfloat16)``, and on the CPU without
    autocast its memory attention then fails at the second frame (bfloat16 keys against float32
    queries). Everything else is torch itself."""

    def __init__(self, real) -> None:
        self._real = real
        self.bfloat16 = real.float32

    def __getattr__(self, name):
        return getattr(self._real, name)


@contextlib.contextmanager
def float32_memory_storage():
    """Run the official video predictor with its memory bank kept in float32 (see ``_Float32Storage``)."""
    import sam2.sam2_video_predictor as vp

    real = vp.torch
    vp.torch = _Float32Storage(real)
    try:
        yield
    finally:
        vp.torch = real


def official_video_predictor(model: nn.Module) -> nn.Module:
    """A ``SAM2VideoPredictor`` sharing ``model``'s weights, with the settings
    ``build_sam2_video_predictor`` gives (the CPU skips its hole filling: it needs the CUDA extension,
    so the reference is built with ``fill_hole_area=0`` and the candidates run the same way)."""
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    pred = copy.copy(model)
    pred.__class__ = SAM2VideoPredictor
    pred.fill_hole_area = 0
    pred.non_overlap_masks = False
    pred.clear_non_cond_mem_around_input = False
    pred.add_all_frames_to_correct_as_cond = False
    pred.binarize_mask_from_pts_for_mem_enc = VIDEO_PREDICTOR_SETTINGS["binarize_mask_from_pts_for_mem_enc"]
    return pred.eval()


def official_state(pred, frames_tensor: torch.Tensor, height: int, width: int, tmp: Path) -> dict:
    """``init_state`` on a folder of one placeholder JPEG per frame, its images then replaced by
    ``frames_tensor`` (Nx3xSxS, the runtime's preprocessing), so both sides see the same pixels."""
    from PIL import Image

    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(frames_tensor.shape[0]):
        Image.new("RGB", (width, height)).save(tmp / f"{i:05d}.jpg")
    import sam2.utils.misc as misc

    real = misc.tqdm
    misc.tqdm = lambda it, **_: it  # its frame-loading bar: the placeholders are replaced below anyway
    try:
        with torch.inference_mode():
            state = pred.init_state(str(tmp))
    finally:
        misc.tqdm = real
    state["images"] = frames_tensor
    state["video_height"], state["video_width"] = height, width
    state["cached_features"] = {}
    return state


# --- the bundle's video files and their gate ---------------------------------------------------

GATE_FRAMES = 12
VIDEO_CONTRACT = "sam2-video"


def write_video_files(model: nn.Module, tmp: Path, work: Path, precisions: tuple[str, ...], mnn: bool, opset: int,
                      meta: dict, prog, model_name: str, openvino: tuple[str, ...] = ()) -> dict:
    """Export the three graphs to ``tmp/{graph}.onnx`` (and the MNN files' source graphs into
    ``work``), convert them to MNN at ``precisions`` (and OpenVINO IR at ``openvino``) and write
    ``video_constants.npz``. Returns {graph: {"onnx": path, "mnn": {prec: path}, "openvino": {prec: xml}}}."""
    from functools import partial

    from edgesam.convert.pipeline import convert_mnn, finalise_onnx

    files = {}
    sources = {}
    for name in VIDEO_GRAPHS:
        path = tmp / f"{name}.onnx"
        prog.stage(f"export {name}", partial(export_graph, model, name, path, opset))
        finalise_onnx(path, meta={**meta, "role": name, "contract": f"{VIDEO_CONTRACT}-{name.replace('_', '-')}"},
                      simplify=False, make_full=False)
        files[name] = {"onnx": path, "mnn": {}, "openvino": {}}
        sources[name] = path
        if mnn and name == "track_decoder":  # the MNN files' decoder: key sums in chunks, as the image decoder's
            sources[name] = work / f"{name}.onnx"
            export_graph(model, name, sources[name], opset, mnn=True)
    if mnn and precisions:
        convert_mnn(sources, {(name, prec): "exact" for name in VIDEO_GRAPHS for prec in precisions}, tmp,
                    model_name, prog)
        for name in VIDEO_GRAPHS:
            files[name]["mnn"] = {prec: tmp / f"{name}.{prec}.mnn" for prec in precisions}
    if openvino:
        from edgesam.convert.openvino import onnx_to_openvino

        for name in VIDEO_GRAPHS:
            for prec in openvino:
                xml = tmp / f"{name}.{prec}.xml"
                prog.stage(f"openvino {name} {prec}", partial(onnx_to_openvino, files[name]["onnx"], xml_path=xml,
                                                              precision=prec))
                files[name]["openvino"][prec] = xml
    np.savez(tmp / "video_constants.npz", **video_constants(model))
    return files


def _gate_session(model: nn.Module, files: dict, tmp: Path, fmt: str, prec: str, threads: int,
                  runtime_precision: str = "high", int8_compute: str = "off",
                  decoder_runtime_precision: str | None = None):
    """A runtime video session over the files being checked (no bundle yet); the tracking decoder at
    ``decoder_runtime_precision`` where given."""
    from edgesam.manifest import VideoSpec, parse_sections
    from edgesam.manifest import sam2_sections
    from edgesam.runtime.backends import BACKEND_TABLE, ModelRequest, mnn_memory_mode
    from edgesam.runtime.sam2_video_predictor import _Session, graph_arithmetic

    pre, enc, dec = parse_sections(sam2_sections(), "gate")
    backend = {"onnx": "ort", "mnn": "mnn", "openvino": "openvino"}[fmt]
    kind = BACKEND_TABLE[backend]
    memory = mnn_memory_mode(prec, int8_compute) if backend == "mnn" else "normal"

    def open_file(path: Path, ins, outs, name: str = "encoder"):
        return kind.open(ModelRequest(path=path, inputs=list(ins), outputs=list(outs), threads=threads, memory=memory,
                                      runtime_precision=graph_arithmetic(name, runtime_precision,
                                                                         decoder_runtime_precision)))

    enc_path = tmp / {"onnx": "encoder.onnx", "mnn": f"encoder.{prec}.mnn", "openvino": f"encoder.{prec}.xml"}[fmt]
    encoder = open_file(enc_path, [enc.image_input], list(enc.outputs))
    graphs = {name: open_file(files[name]["onnx"] if fmt == "onnx" else files[name][fmt][prec], *VIDEO_GRAPHS[name],
                              name).run for name in VIDEO_GRAPHS}
    with np.load(tmp / "video_constants.npz") as z:
        constants = {k: z[k] for k in z.files}
    return _Session(encoder, graphs, constants, VideoSpec(**video_spec(model)), pre, dec, enc.image_input,
                    "pyramid", "float32")


def _track(pred, clip, point) -> tuple[dict, dict]:
    """Point prompt on frame 0 for object 1, propagated through the clip: per-frame video-res logits
    and the last frame's mask memory (pred: the official or the runtime video predictor)."""
    state = pred.init_state(clip.frames) if not isinstance(clip, dict) else clip["state"]
    pred.add_new_points_or_box(state, 0, 1, points=[point], labels=[1])
    masks = {f: np.asarray(m, np.float32) for f, _, m in pred.propagate_in_video(state)}
    last = state["output_dict_per_obj"][0]["non_cond_frame_outputs"][max(masks)]
    mem = last["maskmem_features"]
    mem = mem.float().numpy() if hasattr(mem, "numpy") else np.asarray(mem, np.float32)
    scores = {f: float(np.asarray(o["object_score_logits"]).reshape(-1)[0])
              for f, o in state["output_dict_per_obj"][0]["non_cond_frame_outputs"].items()}
    return masks, {"memory": mem, "scores": scores}


@torch.no_grad()
def video_gate(model: nn.Module, files: dict, tmp: Path, precisions: tuple[str, ...], threads: int, log) -> list:
    """The video graphs, through the runtime's ``SAM2VideoPredictor``, against the official
    ``SAM2VideoPredictor`` (memory kept in float32: ``float32_memory_storage``) on a generated clip
    of ``GATE_FRAMES`` frames, both fed the same preprocessed frames: per-frame mask IoU (the
    tolerance's), the frames where the object is present, every frame's logits, and the last frame's
    mask memory."""
    import tempfile
    import warnings

    from edgesam.measure.parity import Cell, TOLERANCES, compare, tolerance_key
    from edgesam.runtime.backends import openvino_low_arithmetic
    from edgesam.runtime.maskstats import mask_iou
    from edgesam.runtime.preprocess import preprocess
    from edgesam.runtime.sam2_video_predictor import SAM2VideoPredictor
    from edgesam.synthetic.clips import make_clip

    clip = make_clip(GATE_FRAMES, (480, 640), seed=0)
    point = clip.centres[1][0]
    pre = _gate_session(model, files, tmp, "onnx", "fp32", threads).preprocess_spec
    xs = torch.from_numpy(np.concatenate([preprocess(f, pre)[0] for f in clip.frames]))
    official = official_video_predictor(model)
    with float32_memory_storage(), warnings.catch_warnings(), tempfile.TemporaryDirectory() as d, \
            torch.inference_mode():
        warnings.simplefilter("ignore")
        state = official_state(official, xs, 480, 640, Path(d))
        ref, ref_extra = _track(_Quiet(official), {"state": state}, point)
    shown = sum(score > 0 for score in ref_extra["scores"].values())
    log(f"video gate: the official predictor finds the object on {shown} of the {len(ref_extra['scores'])} "
        "frames it tracks after the prompt"
        + ("; the masks compared are empty: the gate checks the memory path only" if not shown else ""))
    candidates = [("onnx", "fp32", "high", "ort fp32")] + [("mnn", p, "high", f"mnn {p}") for p in precisions
                                                           if p in files["memory_attention"]["mnn"]]
    # OpenVINO also at runtime precision low (the plugin's choice on this CPU: bf16 with AVX512-BF16 or
    # AMX), the fastest way it tracks, judged by that arithmetic's row; the tracking decoder stays at f32
    # (measured on the test model against the official, lowest mask IoU: bf16 in the decoder alone 0.961,
    # in the encoder alone 0.984, in the memory attention and memory encoder 0.988, nowhere 0.989; the
    # decoder is the cheapest graph)
    candidates += [("openvino", p, rp, f"openvino {p}" + (" low (decoder high)" if rp == "low" else ""))
                   for p in files["memory_attention"]["openvino"] for rp in ("high", "low")]
    low = openvino_low_arithmetic() if files["memory_attention"]["openvino"] else "fp32"
    cells = []
    for fmt, prec, rp, label in candidates:
        session = _gate_session(model, files, tmp, fmt, prec, threads, runtime_precision=rp,
                                decoder_runtime_precision="high")
        pred = SAM2VideoPredictor(session, fill_hole_area=0, progress=False)
        got, extra = _track(pred, clip, point)
        prec = tolerance_key(prec, rp, low if fmt == "openvino" else "fp16")
        tol = TOLERANCES[prec]
        ious = [mask_iou(got[f][0, 0] > 0, ref[f][0, 0] > 0) for f in sorted(ref)]
        present = [f for f in ref_extra["scores"] if (ref_extra["scores"][f] > 0) != (extra["scores"].get(f, 0) > 0)]
        worst = int(np.argmin(ious))
        fails = [] if min(ious) >= tol.mask_iou else [f"frame {worst} mask IoU {min(ious):.4f} < {tol.mask_iou:g}"]
        if present:
            fails.append(f"object presence differs on frames {present}")
        cells.append(Cell("video", "masks", label, "torch (SAM2VideoPredictor)", prec, 0.0, 0.0, 0.0, 1.0,
                          mask_iou=float(min(ious)), failures=fails))
        frames = sorted(ref)
        # clamped to +-32 (the image predictor's low-res clamp): a frame without the object holds -1024
        # everywhere, which would otherwise be the scale every error is measured against
        cells.append(compare("video", "mask logits (every frame, clamped to 32)",
                             np.clip(np.stack([ref[f] for f in frames]), -32, 32),
                             np.clip(np.stack([got[f] for f in frames]), -32, 32), prec, label,
                             "torch (SAM2VideoPredictor)", "logits"))
        cells.append(compare("video", "maskmem_features (last frame)", ref_extra["memory"], extra["memory"], prec,
                             label, "torch (SAM2VideoPredictor)"))
        log(f"video {label}: per-frame mask IoU min {min(ious):.4f} over {len(ious)} frames")
    return cells


class _Quiet:
    """The official predictor with its progress bar off (stderr carries the convert's stage lines)."""

    def __init__(self, pred) -> None:
        self._p = pred

    def __getattr__(self, name):
        return getattr(self._p, name)

    def propagate_in_video(self, state, *a, **kw):
        import sam2.sam2_video_predictor as vp

        real = vp.tqdm
        vp.tqdm = lambda it, **_: it
        try:
            yield from self._p.propagate_in_video(state, *a, **kw)
        finally:
            vp.tqdm = real
