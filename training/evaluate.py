"""Score a vit_t checkpoint on held-out synthetic scenes with the official predictor; write the card data.

    .venv/bin/python training/evaluate.py assets/demo_vit_t.pt --card assets/demo_vit_t.card.json \
        --train-log /tmp/train.log

Measures one-point, box and point + refinement mIoU (edgesam.synthetic.quality) for the checkpoint
and for the seeded random vit_t the demo used before (random_model("vit_t", 0)), on the same
scenes and objects, with mobile_sam.SamPredictor (torch) so the figures do not depend on edgesam.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CI_SEEDS = 6          # the test re-measures the first CI_SEEDS held-out scenes on the MNN bundle
MAX_OBJECTS = 8


def score(model, seeds) -> dict:
    from mobile_sam import SamPredictor

    from edgesam.synthetic import quality

    t = time.time()
    res = quality.evaluate(SamPredictor(model.eval()), seeds=seeds, max_objects=MAX_OBJECTS)
    res["seconds"] = round(time.time() - t, 1)
    return res


def subset(res: dict, n_objects: int) -> dict:
    per = res["per_object"]
    return {f"miou_{k}": round(float(np.mean(v[:n_objects])), 4) for k, v in per.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--card", type=Path, help="write the card data (JSON) here")
    ap.add_argument("--scenes", type=int, default=42, help="held-out scenes (42: at least 300 objects)")
    ap.add_argument("--extra", type=Path, help="JSON merged into the card (training details, AMG recall)")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    from edgesam.convert.sam_models import model_from_checkpoint, random_model
    from edgesam.synthetic.quality import HELDOUT_SEEDS
    from edgesam.synthetic.scenes import make_scene

    seeds = HELDOUT_SEEDS[:a.scenes]
    trained = model_from_checkpoint("vit_t", a.checkpoint)  # weights_only loading, strict keys
    res = score(trained, seeds)
    rnd = score(random_model("vit_t", 0), seeds)
    n_ci = sum(min(MAX_OBJECTS, len(make_scene(s).masks)) for s in seeds[:CI_SEEDS])
    card = {
        "file": a.checkpoint.name,
        "sha256": hashlib.sha256(a.checkpoint.read_bytes()).hexdigest(),
        "bytes": a.checkpoint.stat().st_size,
        "heldout": {"seeds": [seeds[0], seeds[-1]], "scenes": len(seeds), "objects": res["objects"],
                    "max_objects_per_scene": MAX_OBJECTS, "predictor": "mobile_sam.SamPredictor (torch)",
                    **{k: round(v, 4) for k, v in res.items() if k.startswith("miou")},
                    "iou_head_abs_err": round(res["iou_head_abs_err"], 4)},
        "random_model": {"model": 'random_model("vit_t", 0)',
                         **{k: round(v, 4) for k, v in rnd.items() if k.startswith("miou")}},
        "ci_subset": {"seeds": list(seeds[:CI_SEEDS]), "max_objects": MAX_OBJECTS, "objects": n_ci,
                      **subset(res, n_ci)},
    }
    if a.extra and a.extra.exists():
        card.update(json.loads(a.extra.read_text()))
    text = json.dumps(card, indent=2) + "\n"
    print(text)
    if a.card:
        a.card.write_text(text)


if __name__ == "__main__":
    main()
