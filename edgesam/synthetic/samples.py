"""The sample images in assets/ (landscape, portrait, panorama): how they are drawn and with which
sizes and seeds. ``tools/make_assets.py`` writes them; they are committed, so this must not change."""
from __future__ import annotations

import numpy as np

SAMPLES = {"landscape.png": (427, 640, 1), "portrait.png": (600, 400, 2), "panorama.png": (200, 1200, 3)}


def sample_scene(h: int, w: int, seed: int) -> np.ndarray:
    """The sample images' style (assets/*.png): sky, ground and shaded ellipses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([90 + 60 * yy / h, 140 + 50 * yy / h, 200 + 0 * yy], -1)
    img = sky + rng.normal(0, 4, (h, w, 3))
    ground = yy > h * rng.uniform(0.55, 0.7)
    img[ground] = (np.array([70, 120, 60]) + rng.normal(0, 10, (int(ground.sum()), 3)))
    for _ in range(rng.integers(5, 9)):
        cy, cx = rng.uniform(0.2, 0.9) * h, rng.uniform(0.05, 0.95) * w
        ry, rx = rng.uniform(0.05, 0.2) * h, rng.uniform(0.03, 0.15) * w
        colour = rng.uniform(20, 250, 3)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        shade = 0.75 + 0.25 * np.clip((cx - xx) / rx, -1, 1)[..., None]
        img[inside] = (colour * shade)[inside]
    return np.clip(img, 0, 255).astype(np.uint8)
