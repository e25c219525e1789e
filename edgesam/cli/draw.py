"""Overlays: masks tinted over the image, prompts drawn on top (numpy slicing, no pixel loops)."""
from __future__ import annotations

import numpy as np

PALETTE = np.array([[30, 144, 255], [255, 99, 71], [60, 179, 113], [238, 130, 238], [255, 215, 0],
                    [0, 206, 209], [255, 140, 0], [147, 112, 219], [50, 205, 50], [220, 20, 60]], np.float32)


def tint(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """HxWx3 uint8 RGB + KxHxW bool -> HxWx3 uint8 with each mask tinted in its own colour."""
    out = image.astype(np.float32)
    for k, m in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)]
        out[m] = out[m] * (1 - alpha) + colour * alpha
        edge = m ^ _erode(m)
        out[edge] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def _erode(m: np.ndarray) -> np.ndarray:
    e = m.copy()
    e[1:] &= m[:-1]
    e[:-1] &= m[1:]
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    return e


def draw_points(image: np.ndarray, points: np.ndarray, labels: np.ndarray) -> None:
    """In place: foreground points green, background red, as small squares with a white rim."""
    h, w = image.shape[:2]
    r = max(2, min(h, w) // 100)
    for (x, y), lab in zip(points, labels):
        x, y = int(round(x)), int(round(y))
        if not (0 <= x < w and 0 <= y < h):
            continue
        image[max(0, y - r - 1):y + r + 2, max(0, x - r - 1):x + r + 2] = 255
        image[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = (0, 200, 0) if lab == 1 else (220, 0, 0)


def draw_box(image: np.ndarray, box: np.ndarray, colour=(255, 255, 0)) -> None:
    """In place: an XYXY rectangle outline, clipped to the image."""
    h, w = image.shape[:2]
    t = max(1, min(h, w) // 300)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = np.clip([x0, x1], 0, w - 1)
    y0, y1 = np.clip([y0, y1], 0, h - 1)
    image[y0:y0 + t, x0:x1 + 1] = colour
    image[max(y1 - t + 1, 0):y1 + 1, x0:x1 + 1] = colour
    image[y0:y1 + 1, x0:x0 + t] = colour
    image[y0:y1 + 1, max(x1 - t + 1, 0):x1 + 1] = colour
