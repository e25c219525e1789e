"""Regenerate assets/*.png: synthetic scenes drawn with numpy (own work, CC0). Run from the repo root."""
from __future__ import annotations

from edgesam.runtime.imageio import write_image
from edgesam.synthetic.samples import SAMPLES, sample_scene

if __name__ == "__main__":
    for name, (h, w, seed) in SAMPLES.items():
        write_image(f"assets/{name}", sample_scene(h, w, seed))
        print("wrote", name)
