"""Dataset throughput: `edgesam everything DIR --out OUT` on the local engine and on Ray Data, with 1 and
2 workers of 1 thread each, on the same images and bundle, in one run.

The images are held-out-style samples (edgesam.synthetic.scenes' "sky" style, that of assets/, at the
three sample sizes with seeds the assets do not use). Every configuration runs through the CLI in a
fresh process, as a user runs it, so the times include loading the bundle once per worker and, for
Ray, starting a local Ray. Each configuration writes to a fresh folder (nothing is skipped).

  .venv/bin/python benchmarks/datasets.py BUNDLE [--images 12] [--points-per-side 16] [--json out.json]

Prints images/s per configuration, each one's time against the local engine's at the same worker
count (Ray's overhead), and a cost on paper for a million images from the local 1-worker time per
image (load included, so it slightly over-states the cost of a long run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def make_images(folder: Path, n: int) -> None:
    from edgesam.runtime.imageio import write_image
    from edgesam.synthetic.samples import SAMPLES
    from edgesam.synthetic.scenes import make_scene

    sizes = [(h, w) for h, w, _ in SAMPLES.values()]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        write_image(folder / f"img{i:03d}.png", make_scene(1000 + i, (h, w), style="sky").image)


def run(bundle: str, images: Path, out: Path, engine: str, workers: int, pps: int) -> float:
    cmd = [sys.executable, "-m", "edgesam.cli", "everything", bundle, str(images), "--out", str(out), "--quiet",
           "--engine", engine, "--workers", str(workers), "--threads", "1", "--points-per-side", str(pps)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{engine} x{workers} failed ({p.returncode}): {p.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgesam-dsbench-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        make_images(images, a.images)
        rows = []
        for engine, workers in CONFIGS:
            dt = run(a.bundle, images, Path(tmp) / f"out-{engine}-{workers}", engine, workers, a.points_per_side)
            rows.append({"engine": engine, "workers": workers, "seconds": dt, "images_per_s": a.images / dt})
            print(f"{engine:<6} {workers} worker(s): {dt:7.1f} s  {a.images / dt:6.3f} images/s", flush=True)
    local = {r["workers"]: r["seconds"] for r in rows if r["engine"] == "local"}
    print(f"\n{a.images} images (3 sample sizes: 640x427, 400x600, 1200x200), --points-per-side "
          f"{a.points_per_side}, 1 thread per worker; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print("| engine | workers | seconds | images/s | time / local at the same workers |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['workers']} | {r['seconds']:.1f} | {r['images_per_s']:.3f} | "
              f"{r['seconds'] / local[r['workers']]:.2f} |")
    per_image = local[1] / a.images  # one worker, one thread, load included
    print(f"\nOn paper, from the local 1-worker time ({per_image:.2f} s per image per core, load included): "
          f"1,000,000 images take {per_image * 1e6 / 3600:.0f} core-hours; on 10 nodes of 16 cores "
          f"(160 one-thread workers) about {per_image * 1e6 / 160 / 3600:.1f} hours, if the nodes are as fast as "
          f"this machine and the work scales with workers.")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "images": a.images, "points_per_side": a.points_per_side,
                                            "per_image_s": per_image}, indent=1))


if __name__ == "__main__":
    main()
