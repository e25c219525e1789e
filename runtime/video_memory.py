"""SAM 2's per-frame tracking step in numpy, over three stateless graphs: the bookkeeping of
``sam2.modeling.sam2_base.SAM2Base.track_step`` (which memories and object pointers a frame
attends to, the mask and pointer choices, the no-object handling) without torch.

The graphs (exported by ``edgesam.convert.sam2_video``, listed in a bundle's ``video`` section):

- ``memory_attention``: the current frame's features against the memory bank; inputs ``pix_feat``
  (1xCx64x64, the backbone's top level), ``memory`` (Fx64x64x64 mask memories), ``memory_tpos``
  (FxT one-hot temporal slots), ``obj_ptrs`` (PxC), ``obj_ptr_tpos`` (P, the pointers' signed
  distances / (max pointers - 1)), ``obj_ptr_mask`` (P, 1 or 0); output ``pix_feat_with_mem``;
- ``memory_encoder``: ``pix_feat`` + ``mask_logits`` (1x1x256x256, upsampled inside) + ``binarize``
  -> ``maskmem_features``;
- ``track_decoder``: the prompt encoder and mask decoder with the object-score head; the image
  decoder's inputs -> ``masks`` (every token), ``iou_predictions``, ``object_score_logits``,
  ``obj_ptrs`` (every token's pointer, before the no-object mix).

The small learned vectors the bookkeeping mixes in (``no_mem_embed``, ``no_obj_ptr``,
``no_obj_embed_spatial``, the 4x4 ``mask_downsample`` conv) come from the bundle's
``video_constants.npz``.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from edgesam.manifest import DecoderSpec, VideoSpec

NO_OBJ_SCORE = -1024.0  # the logit an absent object's masks get (sam2_base.NO_OBJ_SCORE)
MEMORY_DTYPES = ("float32", "float16", "bfloat16")  # how the bank stores mask memories


def bilinear_aa_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out_size x in_size) weights of torch's ``interpolate(mode="bilinear", align_corners=False,
    antialias=True)`` along one axis: a triangle filter widened by the scale when shrinking, its
    taps clipped to the input and renormalised (plain bilinear when enlarging)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) * inv))
        total = w.sum()
        m[i, lo:hi] = w / total if total > 0 else w
    return m


def resize_aa(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """...xHxW float -> ...x size, as ``bilinear_aa_matrix`` on each axis (float32)."""
    h, w = x.shape[-2:]
    wh = bilinear_aa_matrix(size[0], h).astype(np.float32)
    ww = bilinear_aa_matrix(size[1], w).astype(np.float32)
    return (wh @ x.astype(np.float32) @ ww.T).astype(np.float32)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """...xHxW -> ...x size, torch's bilinear without antialias (align_corners=False)."""
    from edgesam.runtime.postprocess import _linear_weights

    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return np.asarray(x, np.float32)
    wh = _linear_weights(size[0], h).astype(np.float32)
    ww = _linear_weights(size[1], w).astype(np.float32)
    return (wh @ np.asarray(x, np.float32) @ ww.T).astype(np.float32)


def fill_small_holes(low_res: np.ndarray, max_area: int) -> np.ndarray:
    """``sam2.utils.misc.fill_holes_in_mask_scores``: background components (logits <= 0) of at most
    ``max_area`` pixels become 0.1 (the official code needs its CUDA extension and skips this
    without one)."""
    from edgesam.runtime.regions import small_components

    if max_area <= 0:
        return low_res
    out = np.array(low_res, np.float32, copy=True)
    for m in out.reshape(-1, *out.shape[-2:]):
        m[small_components(m <= 0, max_area)] = 0.1
    return out


def store_memory(x: np.ndarray, dtype: str) -> np.ndarray:
    """A mask memory as the bank keeps it: float32, float16, or bfloat16 (kept as its uint16 bits,
    rounded to nearest even, as torch's ``.to(torch.bfloat16)`` does)."""
    if dtype == "float32":
        return np.asarray(x, np.float32)
    if dtype == "float16":
        return np.asarray(x, np.float16)
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def load_memory(x: np.ndarray) -> np.ndarray:
    """``store_memory``'s inverse, to float32."""
    if x.dtype == np.uint16:
        return (x.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return np.asarray(x, np.float32)


def select_closest_cond_frames(frame_idx: int, cond: dict, max_num: int) -> tuple[dict, dict]:
    """The conditioning frames a frame attends to (all, or ``max_num`` of them: the closest before,
    the closest at or after, then the nearest others), and the rest."""
    if max_num == -1 or len(cond) <= max_num:
        return cond, {}
    selected = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in rest[:max_num - len(selected)]:
        selected[t] = cond[t]
    return selected, {t: v for t, v in cond.items() if t not in selected}


Graph = Callable[[dict], dict]


class TrackStep:
    """One object's tracking step on one frame, from a frame's features and the object's outputs so
    far: ``SAM2Base.track_step`` with its memory in numpy. Stateless itself: the caller keeps the
    per-object output dicts (``{"cond_frame_outputs": {...}, "non_cond_frame_outputs": {...}}``)."""

    def __init__(self, spec: VideoSpec, decoder: DecoderSpec, constants: dict, graphs: dict[str, Graph],
                 memory_dtype: str = "float32") -> None:
        from edgesam.errors import InputError

        if memory_dtype not in MEMORY_DTYPES:
            raise InputError(f"memory_dtype must be one of {', '.join(MEMORY_DTYPES)}, not {memory_dtype!r}")
        self.spec, self.decoder, self.graphs, self.memory_dtype = spec, decoder, graphs, memory_dtype
        c = {k: np.asarray(v, np.float32) for k, v in constants.items()}
        self.no_mem_embed = c["no_mem_embed"].reshape(1, -1, 1, 1)
        self.no_obj_ptr = c["no_obj_ptr"].reshape(1, -1)
        self.no_obj_embed_spatial = c["no_obj_embed_spatial"].reshape(1, -1, 1, 1) \
            if c.get("no_obj_embed_spatial") is not None and c["no_obj_embed_spatial"].size else None
        self.mask_downsample_w = c["mask_downsample_weight"].reshape(4, 4)
        self.mask_downsample_b = float(c["mask_downsample_bias"].reshape(-1)[0])
        self.lowres = decoder.lowres_size

    # --- the frame ------------------------------------------------------------------------
    def frame_features(self, encoder_out: dict) -> dict:
        """The encoder's outputs plus ``pix_feat``: its top level before ``no_mem_embed`` was added
        (what the memory graphs take)."""
        feats = {k: np.asarray(v, np.float32) for k, v in encoder_out.items()}
        feats["pix_feat"] = feats["image_embed"] - self.no_mem_embed
        return feats

    # --- heads ----------------------------------------------------------------------------
    def use_multimask(self, is_init_cond_frame: bool, point_inputs: Optional[dict]) -> bool:
        s = self.spec
        n = 0 if point_inputs is None else point_inputs["point_labels"].shape[1]
        return (s.multimask_output_in_sam and (is_init_cond_frame or s.multimask_output_for_tracking)
                and s.multimask_min_pt_num <= n <= s.multimask_max_pt_num)

    def sam_heads(self, backbone: np.ndarray, feats: dict, point_inputs: Optional[dict],
                  mask_inputs: Optional[np.ndarray], multimask: bool) -> dict:
        """``SAM2Base._forward_sam_heads`` for one object: the chosen low-res mask, the object
        pointer (mixed with ``no_obj_ptr`` by the object score) and the score."""
        if point_inputs is None:  # an empty prompt: one padding point
            coords, labels = np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.float32)
        else:
            coords = point_inputs["point_coords"].astype(np.float32)
            labels = point_inputs["point_labels"].astype(np.float32)
        if mask_inputs is not None:
            if mask_inputs.shape[-2:] != (self.lowres, self.lowres):
                mask_inputs = resize_aa(mask_inputs, (self.lowres, self.lowres))
            mask, has = mask_inputs.astype(np.float32), np.ones(1, np.float32)
        else:
            mask, has = np.zeros((1, 1, self.lowres, self.lowres), np.float32), np.zeros(1, np.float32)
        out = self.graphs["track_decoder"]({"image_embed": backbone, "high_res_feats_0": feats["high_res_feats_0"],
                                             "high_res_feats_1": feats["high_res_feats_1"], "point_coords": coords,
                                             "point_labels": labels, "mask_input": mask, "has_mask_input": has})
        masks, ious = out["masks"].astype(np.float32), out["iou_predictions"].astype(np.float32)
        score = out["object_score_logits"].astype(np.float32).reshape(1, 1)
        ptrs = out["obj_ptrs"].astype(np.float32)
        appear = score > 0
        if self.spec.pred_obj_scores:
            masks = np.where(appear.reshape(1, 1, 1, 1), masks, np.float32(NO_OBJ_SCORE))
        token = self.decoder.single_mask_token
        if multimask:
            multi = list(self.decoder.multimask_tokens)
            best = int(np.argmax(ious[0, multi]))
            low = masks[:, multi[best]:multi[best] + 1]
            if self.spec.use_multimask_token_for_obj_ptr:
                token = multi[best]
        else:
            from edgesam.runtime.predictor import select_tokens

            low, _ = select_tokens(masks, ious, False, self.decoder)
        ptr = ptrs[:, token]
        if self.spec.pred_obj_scores:
            lam = 1.0 / (1.0 + np.exp(-score)) if self.spec.soft_no_obj_ptr else appear.astype(np.float32)
            if self.spec.fixed_no_obj_ptr:
                ptr = lam * ptr
            ptr = ptr + (1 - lam) * self.no_obj_ptr
        return {"pred_masks": np.ascontiguousarray(low, np.float32), "obj_ptr": ptr.astype(np.float32),
                "object_score_logits": score}

    def mask_as_output(self, feats: dict, mask_inputs: np.ndarray) -> dict:
        """``SAM2Base._use_mask_as_output``: a given mask (1x1xSxS, 0/1) is the output (+-10 logits);
        the decoder, fed the mask, makes the object pointer."""
        high = mask_inputs.astype(np.float32) * 20.0 - 10.0
        low = resize_aa(high, (high.shape[-2] // 4, high.shape[-1] // 4))
        s = mask_inputs.shape[-1]
        down = np.einsum("aibj,ij->ab", mask_inputs.astype(np.float32).reshape(s // 4, 4, s // 4, 4),
                         self.mask_downsample_w).astype(np.float32) + np.float32(self.mask_downsample_b)
        ptr = self.sam_heads(feats["pix_feat"], feats, None, down[None, None], multimask=False)["obj_ptr"]
        lam = np.float32(1.0 if (mask_inputs > 0).any() else 0.0)
        score = np.full((1, 1), 20.0 * lam - 10.0, np.float32)
        if self.spec.pred_obj_scores:
            if self.spec.fixed_no_obj_ptr:
                ptr = lam * ptr
            ptr = ptr + (1 - lam) * self.no_obj_ptr
        return {"pred_masks": np.ascontiguousarray(low, np.float32), "obj_ptr": ptr.astype(np.float32),
                "object_score_logits": score}

    # --- memory ---------------------------------------------------------------------------
    def memory_inputs(self, frame_idx: int, output_dict: dict, num_frames: Optional[int],
                      reverse: bool) -> Optional[dict]:
        """The memory attention's inputs for a frame: the conditioning frames' and the last
        ``num_maskmem - 1`` frames' mask memories with their temporal slots, and the object
        pointers of up to ``max_obj_ptrs_in_encoder`` frames with their temporal distances
        (``SAM2Base._prepare_memory_conditioned_features``)."""
        s = self.spec
        cond = output_dict["cond_frame_outputs"]
        non_cond = output_dict["non_cond_frame_outputs"]
        selected, unselected = select_closest_cond_frames(frame_idx, cond, s.max_cond_frames_in_attn)
        slots = [(0, out) for out in selected.values()]
        stride = s.memory_temporal_stride_for_eval
        for t_pos in range(1, s.num_maskmem):
            t_rel = s.num_maskmem - t_pos
            if t_rel == 1:
                prev = frame_idx + t_rel if reverse else frame_idx - t_rel
            elif not reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            out = non_cond.get(prev)
            if out is None:
                out = unselected.get(prev)
            slots.append((t_pos, out))
        memory, tpos = [], []
        for t_pos, out in slots:
            if out is None:
                continue
            memory.append(load_memory(out["maskmem_features"]))
            onehot = np.zeros(s.num_maskmem, np.float32)
            onehot[s.num_maskmem - t_pos - 1] = 1.0
            tpos.append(onehot)
        max_ptrs = s.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, s.max_obj_ptrs_in_encoder)
        if s.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
        else:
            ptr_cond = selected
        sign = -1 if reverse else 1
        pos_ptrs = [((frame_idx - t) * sign if s.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), o["obj_ptr"])
                    for t, o in ptr_cond.items()]
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if reverse else frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = non_cond.get(t, unselected.get(t))
            if out is not None:
                pos_ptrs.append((t_diff, out["obj_ptr"]))
        if pos_ptrs:
            t_diff_max = np.float32(max_ptrs - 1)
            ptr_pos = np.array([p for p, _ in pos_ptrs], np.float32) / t_diff_max
            ptrs = np.concatenate([np.asarray(p, np.float32).reshape(1, -1) for _, p in pos_ptrs])
            ptr_mask = np.ones(len(pos_ptrs), np.float32)
        else:  # no pointer to attend to: one masked-out placeholder (the graph takes P >= 1)
            ptr_pos, ptrs = np.zeros(1, np.float32), np.zeros((1, s.hidden_dim), np.float32)
            ptr_mask = np.zeros(1, np.float32)
        return {"memory": np.concatenate(memory), "memory_tpos": np.stack(tpos), "obj_ptrs": ptrs,
                "obj_ptr_tpos": ptr_pos, "obj_ptr_mask": ptr_mask}

    def encode_memory(self, feats: dict, pred_masks: np.ndarray, score: np.ndarray, from_points: bool) -> np.ndarray:
        """``SAM2Base._encode_new_memory`` on the low-res logits (upsampled inside the graph), stored
        in the bank's dtype."""
        binarize = self.spec.binarize_mask_from_pts_for_mem_enc and from_points
        out = self.graphs["memory_encoder"]({"pix_feat": feats["pix_feat"], "mask_logits": pred_masks.astype(np.float32),
                                              "binarize": np.full(1, 1.0 if binarize else 0.0, np.float32)})
        mem = out["maskmem_features"].astype(np.float32)
        if self.no_obj_embed_spatial is not None:
            appear = np.float32(1.0 if float(np.asarray(score).reshape(-1)[0]) > 0 else 0.0)
            mem = mem + (1 - appear) * self.no_obj_embed_spatial
        return store_memory(mem, self.memory_dtype)

    # --- the step -------------------------------------------------------------------------
    def step(self, feats: dict, frame_idx: int, is_init_cond_frame: bool, point_inputs: Optional[dict],
             mask_inputs: Optional[np.ndarray], output_dict: dict, num_frames: Optional[int], reverse: bool,
             run_mem_encoder: bool, prev_sam_mask_logits: Optional[np.ndarray] = None) -> dict:
        """The compact output the video predictor keeps per frame and object: ``pred_masks``
        (1x1x256x256 logits), ``obj_ptr``, ``object_score_logits``, ``maskmem_features`` (or None)."""
        if mask_inputs is not None and self.spec.use_mask_input_as_output_without_sam:
            out = self.mask_as_output(feats, mask_inputs)
        else:
            if is_init_cond_frame:
                backbone = feats["image_embed"]  # the top level + no_mem_embed, as the encoder returns it
            else:
                mem = self.memory_inputs(frame_idx, output_dict, num_frames, reverse)
                backbone = self.graphs["memory_attention"]({"pix_feat": feats["pix_feat"], **mem})["pix_feat_with_mem"]
            if prev_sam_mask_logits is not None:
                mask_inputs = prev_sam_mask_logits
            out = self.sam_heads(backbone, feats, point_inputs, mask_inputs,
                                 self.use_multimask(is_init_cond_frame, point_inputs))
        out["maskmem_features"] = (self.encode_memory(feats, out["pred_masks"], out["object_score_logits"],
                                                      point_inputs is not None) if run_mem_encoder else None)
        return out
