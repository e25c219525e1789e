"""What to process: images, folders (searched recursively) and text files listing images."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgesam.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")  # what the runtime's reader decodes
LIST_SUFFIXES = (".txt", ".lst")


@dataclass(frozen=True)
class Item:
    path: Path  # the file to read
    name: str  # its name in the outputs: relative to its input folder or list (POSIX separators)
    boxes: tuple = ()  # segment --boxes: this image's (annotation, XYXY box) pairs, shipped with the image


def is_dataset_input(inputs: list[str]) -> bool:
    """Whether these inputs ask for the dataset form: several, a folder, or a list file."""
    return len(inputs) > 1 or any(Path(i).is_dir() or Path(i).suffix.lower() in LIST_SUFFIXES for i in inputs)


def _name(rel: str, where: str) -> str:
    p = PurePosixPath(rel.replace(os.sep, "/"))
    parts = [x for x in p.parts if x not in ("", ".", "/")]
    if not parts or ".." in parts:
        raise InputError(f"{where}: {rel!r} has no name inside the output folder (.. or an empty path)")
    return "/".join(parts)


def collect(inputs: list[str]) -> list[Item]:
    """Every image the inputs name, in a stable order, each with a unique output name; an InputError
    (one line) for a missing input, an empty folder or list, or two images with one output name."""
    items: list[Item] = []
    for raw in inputs:
        src = Path(raw)
        if src.is_dir():
            found = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{src}: no images in this folder ({', '.join(IMAGE_SUFFIXES)}, searched recursively)")
            items += [Item(p, _name(p.relative_to(src).as_posix(), raw)) for p in found]
        elif src.suffix.lower() in LIST_SUFFIXES:
            try:
                lines = src.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"{src}: cannot read this image list ({type(e).__name__})") from None
            listed = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not listed:
                raise InputError(f"{src}: the image list is empty")
            for ln in listed:
                p = Path(ln) if Path(ln).is_absolute() else src.parent / ln
                items.append(Item(p, _name(Path(ln).name if Path(ln).is_absolute() else ln, raw)))
        elif src.exists() or src.suffix.lower() in IMAGE_SUFFIXES:
            items.append(Item(src, _name(src.name, raw)))  # a missing image is a per-image failure later
        else:
            raise InputError(f"{src}: no such image, folder or image list")
    seen: dict[str, Path] = {}
    for it in items:
        if it.name in seen and seen[it.name] != it.path:
            raise InputError(f"{seen[it.name]} and {it.path} would both be written as {it.name}.json; "
                             "give them in separate folders or runs")
        seen[it.name] = it.path
    unique = {it.name: it for it in items}
    return list(unique.values())
