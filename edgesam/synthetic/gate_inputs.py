"""The parity gate's fixed inputs, which need no files: its image and a varied prompt set.

Used by the convert parity gate, ``edgesam parity`` and the tests, so all three
check the same prompt kinds.
"""
from __future__ import annotations

import numpy as np

from edgesam.runtime import prompts
from edgesam.synthetic.scenes import make_scene


def gate_image() -> np.ndarray:
    """The convert gate's image: the ``"gate"`` scene at 683x1024 (seed 7), which needs no file."""
    return make_scene(7, (683, 1024), style="gate").image


def prompt_set(size: tuple[int, int], embedding: np.ndarray | None, prev_logits: np.ndarray | None,
               transform: prompts.Transform) -> dict:
    """Named decoder feeds for points, pos+neg points, box, box+point and a batch of boxes (and a
    point with ``prev_logits`` as mask input), as ``transform.decoder_feeds`` (the bundle's) makes them."""
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
        feeds[name] = transform.decoder_feeds(coords, labels, prompts.validate_boxes(b), None, size, embedding)
    if prev_logits is not None:
        coords, labels = prompts.validate_points(np.array([[w * 0.3, h * 0.4]]), np.array([1]))
        mask = transform.validate_mask_input(prev_logits, 1)
        feeds["point_mask"] = transform.decoder_feeds(coords, labels, None, mask, size, embedding)
    return feeds
