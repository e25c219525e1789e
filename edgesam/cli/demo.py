"""``edgesam demo``: the main job on the built-in default, end to end.

Converts the built-in demo model (assets/demo_vit_t.pt: MobileSAM's architecture
trained here on synthetic shapes, see assets/demo_vit_t.md) with the parity gate,
then segments the sample images with the MNN runtime and writes overlays and a
report. ``--checkpoint`` swaps in any vit_t state_dict (for example the official
mobile_sam.pt); ``--untrained`` uses seeded random weights.

The sample images are generated (``edgesam.synthetic.samples``): a source checkout
has them in assets/, and an installed edgesam, which has no assets/, draws them.
The demo weights (20 MB) ship with the source checkout only, not in the wheel.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_CHECKPOINT = ASSETS / "demo_vit_t.pt"
# One click per sample image, on an object (fractions of width and height).
CLICKS = {"landscape.png": (0.525, 0.725), "portrait.png": (0.655, 0.2), "panorama.png": (0.325, 0.55)}
EVERYTHING_SAMPLE = "landscape.png"  # `everything` at the official defaults runs on this one


def _truth(name: str, image):
    """The generated scene behind sample ``name`` when the file is still exactly what the generator
    draws (edgesam.synthetic.samples), else None: its objects' masks are then known."""
    import numpy as np

    from edgesam.synthetic.samples import SAMPLES as DRAWN, sample

    if name not in DRAWN:
        return None
    sc = sample(name)
    return sc if np.array_equal(sc.image, image) else None


def sample_file(name: str, out: Path) -> Path:
    """The sample image ``name``: the checkout's assets/ file, or (an installed edgesam has no
    assets/) the same image drawn by the generator into ``out/samples/``."""
    src = ASSETS / name
    if src.is_file():
        return src
    from edgesam.runtime.imageio import write_image
    from edgesam.synthetic.samples import sample

    dst = out / "samples" / name
    if not dst.is_file():  # drawn once per output folder
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_image(dst, sample(name).image)
    return dst


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(out: Path, checkpoint: Optional[Path] = None, seed: int = 0, threads: Optional[int] = None,
             untrained: bool = False, model: str = "vit_t") -> dict:
    from edgesam.bundle import atomic_write_bytes
    from edgesam.errors import InputError
    from edgesam.convert.pipeline import ConvertOptions, convert
    from edgesam.runtime.imageio import read_image
    from edgesam.measure.parity import Cell, format_table
    from edgesam.runtime.options import RunOptions
    from edgesam.cli.segment import SegmentRequest, segment
    from edgesam.synthetic import quality

    out = Path(out)
    bundle = out / "bundle"
    from edgesam.specs import get_spec

    get_spec(model)
    if untrained and checkpoint is not None:
        raise InputError("give either --checkpoint or --untrained, not both")
    if model != "vit_t" and not untrained and checkpoint is None:
        raise InputError(f"the built-in demo model is a vit_t: --model {model} needs --checkpoint (the official "
                         f"weights) or --untrained")
    if not untrained and checkpoint is None:
        checkpoint = DEMO_CHECKPOINT
        if not checkpoint.is_file():
            raise InputError("the built-in demo model ships with the source checkout, not the installed package: "
                             "pass --checkpoint mobile_sam.pt (the official weights) or --untrained")
        _log(f"demo model: {checkpoint} (MobileSAM architecture trained on synthetic shapes only)")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = convert(ConvertOptions(model=model, out=bundle, checkpoint=checkpoint,
                                      random_init=seed if untrained else None, force=True, threads=threads),
                       log=_log)
    t_convert = time.perf_counter() - t0

    cells = [Cell(**{k: v for k, v in c.items() if k != "ok"}) for c in manifest["parity"]["cells"]]
    print("Parity (torch reference) of the converted bundle:")
    print(format_table(cells))
    results, truths = [], {}
    run = RunOptions(threads=threads)
    predictor = run.predictor(bundle)  # one model load for every sample
    for name, (fx, fy) in CLICKS.items():
        src = sample_file(name, out)
        stem = Path(name).stem
        image = read_image(src)
        h, w = image.shape[:2]
        req = SegmentRequest(bundle=str(bundle), image=str(src), points=[[w * fx, h * fy, 1]],
                             boxes=[], multimask=True, run=run,
                             out=str(out / f"{stem}.mask.png"), overlay=str(out / f"{stem}.overlay.png"))
        res = segment(req, predictor=predictor, image=image)
        scene = truths[name] = _truth(name, image)
        obj = None if scene is None else scene.object_at(w * fx, h * fy)
        line = res["summary"].splitlines()[0]
        if obj is not None:
            mask = read_image(req.out)[..., 0] > 127
            res["iou_with_true_object"] = round(quality.iou(mask, obj), 4)
            line += f"; IoU {res['iou_with_true_object']:.3f} with the clicked object"
        print(line)
        results.append(res)
    everything = _everything(bundle, out, run, predictor, truths.get(EVERYTHING_SAMPLE))
    untrained = manifest["untrained"]
    report = {"bundle": str(bundle), "untrained": untrained, "parity_ok": manifest["parity"]["ok"],
              "convert_seconds": round(t_convert, 1), "flops": manifest["flops"], "segments": results,
              "everything": everything}
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    files = ([str(bundle)] + [f for r in results for f in r["written"]] + (everything or {}).get("written", [])
             + [str(out / "report.json")])
    print("wrote:\n  " + "\n  ".join(files))
    if untrained:
        print("note: the demo model is UNTRAINED (seeded random weights): every stage runs and parity is "
              "real, but the masks carry no meaning. Pass --checkpoint mobile_sam.pt for real masks.")
    elif Path(checkpoint).resolve() == DEMO_CHECKPOINT.resolve():
        print("note: the built-in demo model was trained on synthetic shapes only (assets/demo_vit_t.md); "
              "it is not for real photos. Pass --checkpoint mobile_sam.pt for the official weights.")
    return report


def _everything(bundle: Path, out: Path, run, predictor, scene) -> Optional[dict]:
    """``edgesam everything`` on one sample at the official defaults (records and overlay written), and,
    with the sample's generated ``scene`` (``_truth``), how many of its true objects the masks find
    (IoU >= 0.5)."""
    import numpy as np

    from edgesam.cli.everything import EverythingRequest, everything
    from edgesam.runtime.rle import rle_to_mask
    from edgesam.synthetic import quality

    src = sample_file(EVERYTHING_SAMPLE, out)
    stem = Path(EVERYTHING_SAMPLE).stem
    req = EverythingRequest(bundle=str(bundle), image=str(src), run=run, out=str(out / f"{stem}.everything.json"),
                            overlay=str(out / f"{stem}.everything.png"))
    res = everything(req, predictor=predictor)
    line = res["summary"].splitlines()[0]
    if scene is not None:
        records = json.loads(Path(req.out).read_text())
        pred = np.stack([rle_to_mask(r["segmentation"]) for r in records]) if records else \
            np.zeros((0,) + scene.masks.shape[1:], bool)
        found = quality.covered(scene.masks, pred, 0.5)
        res["true_objects"], res["found_iou_0.5"] = len(scene.masks), found
        line += f"; found {found} of its {len(scene.masks)} objects (IoU >= 0.5)"
    print(line)
    for extra in res["summary"].splitlines()[1:]:
        if extra.startswith("no masks"):
            print(extra)
    return res
