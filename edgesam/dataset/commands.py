"""The dataset forms of ``edgesam everything`` and ``edgesam segment``: many images in, one output per image, COCO out."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from edgesam.bundle import atomic_write_bytes, check_writable_file, load_bundle, sha256_file
from edgesam.dataset.engine import Job, check_engine, execute, settings_of, share_threads
from edgesam.dataset.inputs import Item, collect
from edgesam.dataset.store import Store, coco_file
from edgesam.errors import InputError
from edgesam.runtime.amg import AmgOptions
from edgesam.runtime.options import RunOptions


def _summary(what: str, res: dict, written: list[str]) -> str:
    lines = [f"{what}: {res['images']} image(s): {res['processed']} done now, {res['skipped']} already done, "
             f"{len(res['failed'])} failed; {res['seconds']:.1f} s, {res['images_per_s']:.2f} images/s"]
    lines += [f"  failed: {f['image']}: {f['error']}" for f in res["failed"][:20]]
    if len(res["failed"]) > 20:
        lines.append(f"  ... and {len(res['failed']) - 20} more (errors.json)")
    return "\n".join(lines + ["wrote " + ", ".join(written)])


def _size(item: Item, records: list[dict], res: dict) -> tuple[int, int]:
    """(height, width): from this run, else a mask's RLE, else the image file's header."""
    from edgesam.runtime.imageio import image_size

    if item.name in res["sizes"]:
        return tuple(res["sizes"][item.name])
    if records:
        return tuple(records[0]["segmentation"]["size"])
    return image_size(item.path)


def everything_dataset(bundle_path: str, inputs: list[str], out: str, options: AmgOptions,
                       point_grids: Optional[str], run: RunOptions, coco: Optional[str] = None,
                       engine: str = "local", workers: int = 1, progress: bool = True,
                       address: Optional[str] = None) -> dict[str, Any]:
    """Segment everything in every image: ``out/<name>.json`` each (the single-image command's
    records), ``out/errors.json``, and with ``coco`` one COCO instances file built from them all."""
    from edgesam.runtime.amg import bundle_options

    check_engine(engine, workers, address)
    if options.output_mode != "coco_rle":
        raise InputError("the dataset form writes RLE records (--output-mode coco_rle)")
    # --coco inside the --out folder that this run creates (the natural place to keep it) is probed
    # once that folder exists; anywhere else, now
    coco_in_out = bool(coco) and Path(coco).resolve().parent == Path(out).resolve()
    if coco and not coco_in_out:
        check_writable_file(coco)
    bundle = load_bundle(bundle_path, verify=False)
    opts = bundle_options(bundle, options, point_grids)
    items = collect(inputs)
    job = Job(bundle=str(bundle.root), run=share_threads(run, workers), task="everything", options=opts, out=out)
    store = Store(Path(out), settings_of(job, bundle.manifest.get("source", "")))
    if coco_in_out:
        check_writable_file(coco)
    res = execute(job, items, store, engine, workers, progress, address)
    written = [str(store.write_errors(res["failed"]))]
    masks = None
    if coco:  # rebuilt from every image's output, those of earlier runs included
        failed = {f["image"] for f in res["failed"]}
        done = [(it, store.load(it.name)) for it in items if it.name not in failed]
        done = [(it, recs) for it, recs in done if recs is not None]
        data = coco_file((it.name, _size(it, recs, res), recs) for it, recs in done)
        atomic_write_bytes(coco, (json.dumps(data) + "\n").encode())
        written.append(coco)
        masks = len(data["annotations"])
    return {"summary": _summary("everything", res, [str(Path(out) / "*.json")] + written),
            "images": res["images"], "processed": res["processed"], "skipped": res["skipped"],
            "failed": res["failed"], "masks": masks, "masks_this_run": res["masks"], "seconds": res["seconds"],
            "images_per_s": res["images_per_s"], "written": written}


def _detections(path: str) -> tuple[dict, dict[int, list], list[str]]:
    """A COCO detection file -> (the file, image id -> [(annotation, XYXY box)], problems)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON file ({type(e).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise InputError(f"{path}: a COCO file with 'images' and 'annotations' lists is needed")
    ids = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or "id" not in im:
            raise InputError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
        ids[im["id"]] = im
    boxes: dict[Any, list] = {}
    problems = []
    for i, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox) \
                or bbox[2] < 0 or bbox[3] < 0:
            raise InputError(f"{path}: annotations[{i}] needs a 'bbox' [x, y, width, height] with width, height >= 0")
        if ann.get("image_id") not in ids:
            problems.append(f"annotations[{i}]: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        x, y, w, h = (float(v) for v in bbox)
        boxes.setdefault(ann["image_id"], []).append((ann, [x, y, x + w, y + h]))
    return data, boxes, problems


def boxes_dataset(bundle_path: str, images: str, boxes_file: str, coco: str, run: RunOptions,
                  engine: str = "local", workers: int = 1, progress: bool = True,
                  address: Optional[str] = None) -> dict[str, Any]:
    """Box prompts from a COCO detection file -> one mask per box, written back as the same
    annotations with ``segmentation`` (RLE), ``area`` (the mask's) and ``predicted_iou`` added. Per-image
    outputs go to ``<coco>.parts/``, so an interrupted run resumes; only images with boxes are read."""
    check_engine(engine, workers, address)
    if not Path(images).is_dir():
        raise InputError(f"{images}: no such folder of images")
    check_writable_file(coco)
    data, boxes, problems = _detections(boxes_file)
    by_id = {im["id"]: im for im in data["images"]}
    items = [Item(Path(images) / by_id[image_id]["file_name"], by_id[image_id]["file_name"], tuple(rows))
             for image_id, rows in boxes.items()]
    bundle = load_bundle(bundle_path, verify=False)
    job = Job(bundle=str(bundle.root), run=share_threads(run, workers), task="boxes", out=f"{coco}.parts")
    store = Store(Path(job.out), settings_of(job, bundle.manifest.get("source", ""),
                                             {"boxes": sha256_file(Path(boxes_file)), "boxes_task": "boxes"}))
    res = execute(job, items, store, engine, workers, progress, address)
    failed = {f["image"] for f in res["failed"]}
    anns = []
    for it in items:
        recs = None if it.name in failed else store.load(it.name)
        anns += recs or []
    errors = res["failed"] + [{"image": None, "error": p} for p in problems]
    out = {**data, "annotations": anns, "edgesam_errors": errors}
    atomic_write_bytes(coco, (json.dumps(out) + "\n").encode())
    summary = _summary("segment", res, [coco])
    if problems:
        summary += f"\n{len(problems)} detection(s) name no image in the file (listed in 'edgesam_errors')"
    return {"summary": summary, "images": res["images"], "processed": res["processed"], "skipped": res["skipped"],
            "failed": res["failed"], "unmatched_detections": problems, "masks": len(anns),
            "seconds": res["seconds"], "images_per_s": res["images_per_s"], "written": [coco]}
