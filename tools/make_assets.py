"""Regenerate assets/*.png: synthetic scenes drawn with numpy (own work, CC0). Run from the repo root."""
from __future__ import annotations

from edgesam.runtime.imageio import write_image
from edgesam.synthetic.samples import SAMPLES, sample

if __name__ == "__main__":
    for name in SAMPLES:
        write_image(f"assets/{name}", sample(name).image)
        print("wrote", name)
