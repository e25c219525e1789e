"""int8 (and fp16) masks against fp32 masks of the same bundle, on held-out synthetic scenes.

Protocol: ``edgesam.synthetic.quality.agreement`` (per object: the point prompt's three masks, the
box mask, point + one refinement), over the first --scenes held-out scenes at their own sizes plus
a 6:1 panorama and a 1:3 portrait. The floors for int8: mean mask IoU >= 0.95 and 10th
percentile >= 0.85. Runs on the base install (MNN + numpy). Usage:

  .venv/bin/python benchmarks/int8_quality.py BUNDLE [--scenes 40] [--objects 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    from edgesam.runtime import SamPredictor
    from edgesam.synthetic.quality import HELDOUT_SEEDS, agreement

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()
    ref = SamPredictor(a.bundle, precision="fp32")
    rows = {}
    for label, kw in (("int8, fp32 arithmetic", dict(precision="int8", int8_compute="off")),
                      ("int8, int8 arithmetic", dict(precision="int8", int8_compute="on")),
                      ("fp16 weights", dict(precision="fp16"))):
        t = time.perf_counter()
        r = agreement(ref, SamPredictor(a.bundle, **kw), HELDOUT_SEEDS[:a.scenes], max_objects=a.objects)
        rows[label] = {**{k: v for k, v in r.items() if k != "ious"}, "seconds": round(time.perf_counter() - t, 1),
                       "ious": r["ious"]}
        print(f"{label:<24} mean IoU {r['mean_iou']:.4f}  p10 {r['p10_iou']:.4f}  min {r['min_iou']:.4f}  "
              f"({r['masks']} masks, {r['scenes']} scenes)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f)


if __name__ == "__main__":
    main()
