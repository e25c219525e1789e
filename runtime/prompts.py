"""Prompts -> decoder inputs, in numpy, with the official coordinate semantics.

Frames: user coordinates are original-image pixels, (X, Y), boxes XYXY. The
decoder takes the 1024 "input frame" of ``ResizeLongestSide``: x is scaled by
new_w/old_w and y by new_h/old_h (separately, as ``apply_coords`` does, since
rounding makes the two ratios differ slightly).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from edgesam.errors import InputError
from edgesam.specs import IMAGE_SIZE, LOWRES

PAD_LABEL = -1.0  # "not a point", added when there is no box (PromptEncoder pad=True)
BOX_LABELS = (2.0, 3.0)  # top-left and bottom-right corner embeddings


def preprocess_shape(h: int, w: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """(new_h, new_w) after resizing the longest side to ``long_side`` (``get_preprocess_shape``)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def apply_coords(coords: np.ndarray, original_size: tuple[int, int], long_side: int = IMAGE_SIZE,
                 resize: str = "longest_side") -> np.ndarray:
    """...x2 array of (X, Y) original pixels -> float64 input-frame pixels. ``resize``: the
    preprocessing's ("square": SAM 2's transform_coords, x * S / W and y * S / H)."""
    old_h, old_w = original_size
    new_h, new_w = (long_side, long_side) if resize == "square" else preprocess_shape(old_h, old_w, long_side)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= new_w / old_w
    out[..., 1] *= new_h / old_h
    return out


def apply_boxes(boxes: np.ndarray, original_size: tuple[int, int], long_side: int = IMAGE_SIZE,
                resize: str = "longest_side") -> np.ndarray:
    """Bx4 XYXY original pixels -> Bx4 input frame."""
    return apply_coords(np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2), original_size,
                        long_side, resize).reshape(-1, 4)


def _finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or inf")


def validate_points(point_coords, point_labels) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Return (BxNx2 float64, BxN float64) or (None, None). Accepts Nx2 + N (one prompt) or batched."""
    if point_coords is None and point_labels is None:
        return None, None
    if point_coords is None:
        raise InputError("point_labels given without point_coords")
    if point_labels is None:
        raise InputError("point_labels must be supplied if point_coords is supplied")
    try:
        coords = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("point_coords and point_labels must be numeric arrays") from None
    if coords.ndim == 2:
        coords, labels = coords[None], labels.reshape(1, -1) if labels.ndim <= 1 else labels
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise InputError(f"point_coords must be Nx2 (or BxNx2), got shape {coords.shape}")
    if coords.shape[1] == 0:
        raise InputError("point_coords is empty")
    if labels.shape != coords.shape[:2]:
        raise InputError(f"point_labels shape {labels.shape} does not match point_coords {coords.shape[:2]}")
    _finite("point_coords", coords)
    _finite("point_labels", labels)
    if not np.all(np.isin(labels, (0.0, 1.0))):
        raise InputError("point_labels must be 0 (background) or 1 (foreground)")
    return coords, labels


def validate_boxes(box) -> Optional[np.ndarray]:
    """A length-4 XYXY box or Bx4 boxes -> Bx4 float64, or None."""
    if box is None:
        return None
    try:
        boxes = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("box must be a numeric XYXY array") from None
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise InputError(f"box must be length 4 (XYXY) or Bx4, got shape {np.shape(box)}")
    _finite("box", boxes)
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise InputError("box must be XYXY with x1 >= x0 and y1 >= y0")
    if np.any(boxes[:, 2] == boxes[:, 0]) or np.any(boxes[:, 3] == boxes[:, 1]):
        # segment-anything would run it, but a box that encloses nothing is a caller's mistake
        raise InputError("box has zero area (x1 == x0 or y1 == y0); a box must enclose the object")
    return boxes


def validate_mask_input(mask_input, batch: int, lowres: int = LOWRES) -> Optional[np.ndarray]:
    """1xLxL (or Bx1xLxL) low-res logits (L = ``lowres``, 256) -> Mx1xLxL float32 with M in {1, B}."""
    if mask_input is None:
        return None
    m = np.asarray(mask_input)
    if not np.issubdtype(m.dtype, np.floating) and not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"mask_input must be a float array, got dtype {m.dtype}")
    if m.ndim == 3:
        m = m[None]
    if m.ndim != 4 or m.shape[1:] != (1, lowres, lowres) or m.shape[0] not in (1, batch):
        raise InputError(f"mask_input must be 1x{lowres}x{lowres} (low-res logits from a previous "
                         f"predict), got shape {np.shape(mask_input)}")
    m = m.astype(np.float32)
    _finite("mask_input", m)
    return m


def decoder_feeds(coords: Optional[np.ndarray], labels: Optional[np.ndarray], boxes: Optional[np.ndarray],
                  mask_input: Optional[np.ndarray], original_size: tuple[int, int],
                  embedding: Optional[np.ndarray] = None, *, long_side: int = IMAGE_SIZE,
                  lowres: int = LOWRES, resize: str = "longest_side", layout: str = "sam") -> dict[str, np.ndarray]:
    """Validated prompts in original pixels -> the decoder's prompt inputs (input frame, float32):
    ``point_coords``, ``point_labels``, ``mask_input``, ``has_mask_input`` (and ``image_embeddings``
    when ``embedding`` is given). ``long_side``: the encoder's input side; ``lowres``: the mask side.

    ``layout`` "sam": points come first, then the two box corners; a padding point is added only
    when there is no box, exactly as ``PromptEncoder.forward`` does. "sam2": the box corners come
    first, then the points, and no padding point: SAM 2's graph appends it to every prompt, as
    ``SAM2ImagePredictor._predict`` has its prompt encoder do. ``resize``: the preprocessing's.
    """
    if layout not in ("sam", "sam2"):
        raise ValueError(f"prompt layout must be sam or sam2, not {layout!r}")
    parts_c, parts_l = [], []
    b = None
    if coords is not None:
        b = coords.shape[0]
        parts_c.append(apply_coords(coords, original_size, long_side, resize))
        parts_l.append(labels)
    if boxes is not None:
        if b is not None and boxes.shape[0] != b:
            if b != 1:
                raise InputError(f"{boxes.shape[0]} boxes but {b} point sets; give one point set per box")
            parts_c[0] = np.repeat(parts_c[0], boxes.shape[0], 0)
            parts_l[0] = np.repeat(parts_l[0], boxes.shape[0], 0)
        b = boxes.shape[0]
        corners = apply_boxes(boxes, original_size, long_side, resize).reshape(-1, 2, 2)
        at = 0 if layout == "sam2" else len(parts_c)
        parts_c.insert(at, corners)
        parts_l.insert(at, np.tile(np.array(BOX_LABELS), (b, 1)))
    elif coords is not None and layout == "sam":
        parts_c.append(np.zeros((b, 1, 2)))
        parts_l.append(np.full((b, 1), PAD_LABEL))
    if b is None:
        # The official encoder gives a mask-only prompt zero sparse tokens; an exported graph
        # needs N >= 1 and a padding token changes the result, so refuse rather than differ.
        raise InputError("empty prompt: give points or a box (mask_input alone is not supported)"
                         if mask_input is not None else "empty prompt: give points or a box")
    has = np.ones((1,), np.float32)
    if mask_input is None:
        mask_input = np.zeros((1, 1, lowres, lowres), np.float32)
        has = np.zeros((1,), np.float32)
    elif mask_input.shape[0] != 1:
        has = np.ones((mask_input.shape[0],), np.float32)
    return {
        **({"image_embeddings": embedding} if embedding is not None else {}),
        "point_coords": np.concatenate(parts_c, axis=1).astype(np.float32),
        "point_labels": np.concatenate(parts_l, axis=1).astype(np.float32),
        "mask_input": mask_input,
        "has_mask_input": has,
    }
