"""AMG recall of the demo model on held-out scenes, with edgesam's torch-free generator on a bundle.

    .venv/bin/python training/amg_recall.py BUNDLE [--scenes 8] [--points-per-side 16]

Prints JSON: recall of ground-truth objects at IoU 0.5, at the official thresholds, at lowered
ones (pred_iou_thresh 0.5, stability_score_thresh 0.8) and with the IoU filter off (stability 0.5).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--points-per-side", type=int, default=16)
    a = ap.parse_args(argv)
    from edgesam.runtime import SamAutomaticMaskGenerator, SamPredictor
    from edgesam.synthetic.quality import HELDOUT_SEEDS, amg_recall

    pred = SamPredictor(a.bundle, threads=2)
    out = {}
    for name, kw in {"official_thresholds": {},
                     "lowered_thresholds": {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.8},
                     # what the AMG parity tests run on this model (tests/test_amg_model.py)
                     "iou_filter_off": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.5}}.items():
        t = time.time()
        gen = SamAutomaticMaskGenerator(pred, points_per_side=a.points_per_side, output_mode="binary_mask", **kw)
        r = amg_recall(gen, HELDOUT_SEEDS[:a.scenes])
        r.update(points_per_side=a.points_per_side, seconds=round(time.time() - t, 1), **kw)
        out[name] = r
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
