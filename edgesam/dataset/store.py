"""The outputs of a dataset run: one JSON file per image, written atomically, and what is built from them.

A rerun skips every image whose output exists and parses as a list of records (an interrupted
write leaves only a temporary file, which never counts), and recomputes the rest. The COCO file and
the errors list are rebuilt from the per-image outputs at the end of every run, so a resumed run
never holds an annotation twice. The settings of the run (bundle, options) are kept beside the
outputs; a rerun with other settings is refused rather than mixing two kinds of masks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from edgesam.bundle import atomic_write_bytes
from edgesam.errors import InputError, OutputError

SETTINGS = ".edgesam-run.json"
RECORD_KEYS = ("segmentation", "area", "bbox")


class Store:
    def __init__(self, root: Path, settings: dict[str, Any]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"{self.root}: exists and is not a folder (the dataset form writes one file per image)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.root}: cannot create the output folder ({e.strerror or e})") from None
        kept = self.root / SETTINGS
        if kept.is_file():
            try:
                old = json.loads(kept.read_text())
            except (OSError, ValueError):
                old = None
            if old != settings:
                raise InputError(f"{self.root} holds the outputs of a run with other settings (bundle or options; "
                                 f"see {SETTINGS}): give another folder, or delete it to start again")
        else:
            atomic_write_bytes(kept, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())

    @classmethod
    def opened(cls, root: Path) -> "Store":
        """The store a worker writes to: its folder and settings were checked by the run that started it."""
        store = cls.__new__(cls)
        store.root = Path(root)
        return store

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def load(self, name: str) -> list[dict] | None:
        """The image's records if its output is complete and valid, else None."""
        try:
            data = json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, list) or not all(isinstance(r, dict) and all(k in r for k in RECORD_KEYS)
                                                 for r in data):
            return None
        return data

    def write(self, name: str, records: list[dict]) -> None:
        out = self.path(name)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, (json.dumps(records) + "\n").encode())

    def write_errors(self, errors: list[dict]) -> Path:
        out = self.root / "errors.json"
        atomic_write_bytes(out, (json.dumps(errors, indent=1) + "\n").encode())
        return out


def coco_annotation(ann_id: int, image_id: int, record: dict) -> dict:
    """A generator record (official keys, RLE segmentation) as a COCO instance annotation."""
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "segmentation": record["segmentation"], "area": record["area"], "bbox": record["bbox"],
            "score": record["predicted_iou"], "predicted_iou": record["predicted_iou"],
            "stability_score": record["stability_score"]}


def coco_file(images: Iterable[tuple[str, tuple[int, int], list[dict]]]) -> dict:
    """COCO instances from (file_name, (height, width), records) per image, in the given order; image
    ids from 1 in that order and annotation ids from 1, so a rebuilt file is the same file."""
    out_images, anns = [], []
    for image_id, (name, (h, w), records) in enumerate(images, start=1):
        out_images.append({"id": image_id, "file_name": name, "height": int(h), "width": int(w)})
        for r in records:
            anns.append(coco_annotation(len(anns) + 1, image_id, r))
    return {"info": {"description": "edgesam everything"}, "images": out_images, "annotations": anns,
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}
