"""The sample images in assets/ (landscape, portrait, panorama): their sizes and seeds. They are
``make_scene(seed, (h, w), style="sky")``; ``tools/make_assets.py`` writes them and they are committed,
so the "sky" style must not change."""
from __future__ import annotations

from edgesam.synthetic.scenes import Scene, make_scene

SAMPLES = {"landscape.png": (427, 640, 1), "portrait.png": (600, 400, 2), "panorama.png": (200, 1200, 3)}


def sample(name: str) -> Scene:
    """The scene behind the committed sample image ``name``, with its objects' exact masks."""
    h, w, seed = SAMPLES[name]
    return make_scene(seed, (h, w), style="sky")
