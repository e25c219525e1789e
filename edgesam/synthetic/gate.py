"""Deterministic test inputs that need no files: a scene and a varied prompt set.

Used by the convert parity gate, ``edgesam parity`` and the tests, so all three
check the same prompt kinds.
"""
from __future__ import annotations

import numpy as np

from edgesam.runtime import prompts
from edgesam.specs import IMAGE_SIZE, LOWRES


def scene(h: int = 683, w: int = 1024, seed: int = 7) -> np.ndarray:
    """A deterministic RGB uint8 scene (gradients, discs, a bar) that needs no file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200, yy / h * 180, (xx + yy) / (h + w) * 120], -1) + 30
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(40, 180)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img[h // 3:h // 3 + 40, :] = (240, 240, 20)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def prompt_set(size: tuple[int, int], embedding: np.ndarray | None, prev_logits: np.ndarray | None, *,
               long_side: int = IMAGE_SIZE, lowres: int = LOWRES, resize: str = "longest_side",
               layout: str = "sam") -> dict:
    """Named decoder feeds for points, pos+neg points, box, box+point and a batch of boxes (and a
    point with ``prev_logits`` as mask input), as ``prompts.decoder_feeds`` makes them."""
    kw = {"long_side": long_side, "lowres": lowres, "resize": resize, "layout": layout}
    h, w = size
    cases = {
        "point": (np.array([[w * 0.3, h * 0.4]]), np.array([1]), None),
        "points_neg": (np.array([[w * 0.5, h * 0.5], [w * 0.8, h * 0.2]]), np.array([1, 0]), None),
        "box": (None, None, np.array([w * 0.1, h * 0.2, w * 0.6, h * 0.9])),
        "box_point": (np.array([[w * 0.4, h * 0.5]]), np.array([1]), np.array([w * 0.2, h * 0.1, w * 0.7, h * 0.8])),
        "boxes_batch": (None, None, np.array([[0, 0, w / 2, h / 2], [w / 3, h / 3, w, h], [10, 20, 300, 200]])),
    }
    feeds = {}
    for name, (c, l, b) in cases.items():
        coords, labels = prompts.validate_points(c, l)
        feeds[name] = prompts.decoder_feeds(coords, labels, prompts.validate_boxes(b), None, size, embedding, **kw)
    if prev_logits is not None:
        coords, labels = prompts.validate_points(np.array([[w * 0.3, h * 0.4]]), np.array([1]))
        mask = prompts.validate_mask_input(prev_logits, 1, lowres)
        feeds["point_mask"] = prompts.decoder_feeds(coords, labels, None, mask, size, embedding, **kw)
    return feeds


def upsampled_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``scene`` at any size, cheaply (12 MP in a fraction of a second): drawn at 256x256, enlarged
    (nearest), plus mild noise. A photo-like RGB uint8 image for the large-image tests."""
    base = scene(256, 256, seed).astype(np.float32)
    ys = (np.arange(h) * 256 // h).clip(0, 255)
    xs = (np.arange(w) * 256 // w).clip(0, 255)
    img = base[ys][:, xs]
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
