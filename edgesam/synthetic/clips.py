"""Generated video clips for the video gate, the tests and the examples: shapes that move over a
textured background, one of them leaving the frame and coming back, with their true masks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Clip:
    frames: list  # HxWx3 uint8 RGB
    masks: dict  # object id -> list of HxW bool, one per frame
    centres: dict  # object id -> list of (x, y) or None when the object is out of the frame


def make_clip(n_frames: int = 12, size: tuple[int, int] = (480, 640), seed: int = 0) -> Clip:
    """``n_frames`` frames of ``size`` (h, w): object 1 (a disc) drifts right, object 2 (a square)
    moves down, leaves the frame at the bottom in the middle third and comes back, object 3 (an
    ellipse) stays. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    base = rng.integers(40, 90, size=3).astype(np.float32)
    texture = (18 * np.sin(xx / (7 + 5 * rng.random())) * np.cos(yy / (9 + 5 * rng.random())))[..., None]
    background = np.clip(base + texture + rng.normal(0, 4, (h, w, 3)), 0, 255)
    colours = {1: (225, 60, 50), 2: (50, 200, 80), 3: (240, 220, 60)}
    frames, masks, centres = [], {1: [], 2: [], 3: []}, {1: [], 2: [], 3: []}
    r = min(h, w)
    for t in range(n_frames):
        img = background.copy()
        phase = t / max(n_frames - 1, 1)
        shapes = {
            1: ((0.2 + 0.5 * phase) * w, 0.35 * h, lambda cx, cy: (xx - cx) ** 2 + (yy - cy) ** 2 < (0.12 * r) ** 2),
            3: (0.75 * w, 0.7 * h, lambda cx, cy: ((xx - cx) / (0.14 * r)) ** 2 + ((yy - cy) / (0.08 * r)) ** 2 < 1),
        }
        # object 2 goes down out of the frame over the middle third and comes back up
        away = 1 / 3 <= phase <= 2 / 3
        cy2 = 1.4 * h if away else (0.2 + 0.5 * (phase if phase < 1 / 3 else 1 - phase)) * h
        shapes[2] = (0.5 * w, cy2, lambda cx, cy: (np.abs(xx - cx) < 0.09 * r) & (np.abs(yy - cy) < 0.09 * r))
        for obj in (3, 2, 1):  # 1 in front
            cx, cy, fn = shapes[obj]
            m = fn(cx, cy)
            img[m] = colours[obj]
            for other in masks:
                if other != obj and len(masks[other]) == t + 1:
                    masks[other][t] &= ~m
            masks[obj].append(m)
            centres[obj].append((float(cx), float(cy)) if m.any() else None)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return Clip(frames, {k: v for k, v in masks.items()}, centres)


def write_jpeg_folder(clip: Clip, folder: Path, quality: int = 95) -> Path:
    """The clip as ``folder/00000.jpg, 00001.jpg, ...`` (the official video predictor's input)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(clip.frames):
        Image.fromarray(f).save(folder / f"{i:05d}.jpg", quality=quality)
    return folder
