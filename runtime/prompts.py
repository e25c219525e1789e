"""Prompts -> decoder inputs, in numpy, with the official coordinate semantics.

Frames: user coordinates are original-image pixels, (X, Y), boxes XYXY. The
decoder takes the 1024 "input frame" of ``ResizeLongestSide``: x is scaled by
new_w/old_w and y by new_h/old_h (separately, as ``apply_coords`` does, since
rounding makes the two ratios differ slightly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgesam.errors import InputError
from edgesam.manifest import PROMPT_LAYOUTS, RESIZES

PAD_LABEL = -1.0  # "not a point", added when there is no box (PromptEncoder pad=True)
BOX_LABELS = (2.0, 3.0)  # top-left and bottom-right corner embeddings


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(new_h, new_w) after resizing the longest side to ``long_side`` (``get_preprocess_shape``)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


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


@dataclass(frozen=True)
class Transform:
    """Original-image prompts -> the decoder's inputs, as one bundle's manifest says: the encoder's
    input side and resize (segment-anything's ``ResizeLongestSide`` is built once from ``img_size``
    the same way; SAM 2's is a square resize), the decoder's low-res side and prompt layout.

    Built from a manifest (``Transform.of``), never with a family's values by default: a SAM 2
    bundle's prompts must not silently get SAM's geometry.
    """
    image_size: int
    resize: str  # edgesam.manifest.RESIZES
    lowres: int
    layout: str  # edgesam.manifest.PROMPT_LAYOUTS

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, not {self.resize!r}")
        if self.layout not in PROMPT_LAYOUTS:
            raise ValueError(f"prompt layout must be one of {', '.join(PROMPT_LAYOUTS)}, not {self.layout!r}")

    @classmethod
    def of(cls, preprocess, decoder) -> "Transform":
        """From a manifest's ``Preprocess`` and ``DecoderSpec`` (``Bundle.spec.preprocess``, ``.decoder``)."""
        return cls(image_size=preprocess.image_size, resize=preprocess.resize, lowres=decoder.lowres_size,
                   layout=decoder.prompt_layout)

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """(h, w) of the resized image inside the encoder's input, before padding."""
        if self.resize == "square":
            return self.image_size, self.image_size
        return preprocess_shape(h, w, self.image_size)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """...x2 array of (X, Y) original pixels -> float64 input-frame pixels (square: SAM 2's
        transform_coords, x * S / W and y * S / H)."""
        old_h, old_w = original_size
        new_h, new_w = self.input_size(old_h, old_w)
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] *= new_w / old_w
        out[..., 1] *= new_h / old_h
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Bx4 XYXY original pixels -> Bx4 input frame."""
        return self.apply_coords(np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def validate_mask_input(self, mask_input, batch: int) -> Optional[np.ndarray]:
        """1xLxL (or Bx1xLxL) low-res logits (L: the decoder's low-res side) -> Mx1xLxL float32, M in {1, B}."""
        lowres = self.lowres
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

    def decoder_feeds(self, coords: Optional[np.ndarray], labels: Optional[np.ndarray], boxes: Optional[np.ndarray],
                      mask_input: Optional[np.ndarray], original_size: tuple[int, int],
                      embedding: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
        """Validated prompts in original pixels -> the decoder's prompt inputs (input frame, float32):
        ``point_coords``, ``point_labels``, ``mask_input``, ``has_mask_input`` (and ``image_embeddings``
        when ``embedding`` is given).

        Layout "sam": points come first, then the two box corners; a padding point is added only
        when there is no box, exactly as ``PromptEncoder.forward`` does. "sam2": the box corners come
        first, then the points, and no padding point: SAM 2's graph appends it to every prompt, as
        ``SAM2ImagePredictor._predict`` has its prompt encoder do.
        """
        layout, lowres = self.layout, self.lowres
        parts_c, parts_l = [], []
        b = None
        if coords is not None:
            b = coords.shape[0]
            parts_c.append(self.apply_coords(coords, original_size))
            parts_l.append(labels)
        if boxes is not None:
            if b is not None and boxes.shape[0] != b:
                if b != 1:
                    raise InputError(f"{boxes.shape[0]} boxes but {b} point sets; give one point set per box")
                parts_c[0] = np.repeat(parts_c[0], boxes.shape[0], 0)
                parts_l[0] = np.repeat(parts_l[0], boxes.shape[0], 0)
            b = boxes.shape[0]
            corners = self.apply_boxes(boxes, original_size).reshape(-1, 2, 2)
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


def sam_transform() -> Transform:
    """SAM's and MobileSAM's transform, as their bundles' manifests say (for references built without
    a bundle: the convert gate, tests); the runtime takes a bundle's own."""
    from edgesam.manifest import parse_sections, sam_sections

    pre, _, dec = parse_sections(sam_sections("lowres"), "SAM")
    return Transform.of(pre, dec)
