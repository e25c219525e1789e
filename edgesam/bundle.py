"""Bundle = a folder of models plus ``manifest.json``; reading, verifying, atomic writing.

Tools find models by role/format/precision, never by file name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from edgesam.errors import BundleError, InputError
from edgesam.manifest import (COMPANIONS, FORMAT, PRECISIONS, VERSION, FileEntry, Manifest,  # noqa: F401
                              find_entry, parse_manifest)

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(root: Path, rel: str, **fields: Any) -> dict:
    """A manifest ``files`` entry for ``root/rel`` with its hash and size."""
    p = root / rel
    return {**fields, "path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size}


@dataclass
class Bundle:
    """A loaded bundle: ``manifest`` is the JSON as written, ``spec`` the validated, typed view of it."""
    root: Path
    manifest: dict
    spec: Manifest
    verified: set = field(default_factory=set)  # paths whose size and sha256 were checked

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def untrained(self) -> bool:
        return self.spec.untrained

    def entries(self, role: Optional[str] = None, format: Optional[str] = None,
                precision: Optional[str] = None) -> list[FileEntry]:
        return [f for f in self.spec.files
                if (role is None or f.role == role) and (format is None or f.format == format)
                and (precision is None or f.precision == precision)]

    def precisions(self, format: str) -> list[str]:
        """Precisions present for ``format``, widest first (fp32, fp16, int8)."""
        order = PRECISIONS
        return sorted({f.precision for f in self.entries(format=format)},
                      key=lambda p: (order.index(p) if p in order else len(order), p))

    def entry(self, role: str, format: str, precision: str) -> FileEntry:
        """The manifest record of the model with this role/format/precision, or a BundleError naming
        what exists (the manifest holds at most one: parse_manifest refuses duplicates)."""
        hit = find_entry(self.spec, role, format, precision)
        if hit is None:
            have = ", ".join(self.precisions(format)) or "none"
            raise BundleError(f"{self.root}: no {format} {role} at precision {precision} (bundle has: {have})")
        return hit

    def find(self, role: str, format: str, precision: str) -> Path:
        """Path of the model with this role/format/precision (not verified: see ``open``)."""
        return _resolve_inside(self.root, self.entry(role, format, precision).path)

    def open(self, role: str, format: str, precision: str) -> tuple[Path, FileEntry]:
        """Path and record of a model that is about to be loaded, with it and the files it needs
        beside it (external weights) checked against the manifest's size and sha256, once."""
        e = self.entry(role, format, precision)
        for f in [e, *(c for kind in COMPANIONS.get(format, ())
                       for c in self.entries(role, kind, precision))]:
            verify_entry(self, f)
        return _resolve_inside(self.root, e.path), e


def _resolve_inside(root: Path, rel: str) -> Path:
    # A manifest path or a symlink must never lead outside the bundle folder.
    if os.path.isabs(rel) or ".." in Path(rel).parts:
        raise BundleError(f"{root}: manifest path {rel!r} points outside the bundle")
    p = root / rel
    real = p.resolve()
    if root.resolve() not in real.parents:
        raise BundleError(f"{p}: resolves outside the bundle ({real})")
    return p


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read and validate ``manifest.json``; with ``verify``, check every file's size and sha256 now
    (``edgesam info``). Without it, files are checked when they are opened (``Bundle.open``), so
    a predictor hashes only the models it loads."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: missing {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: invalid JSON ({e})") from None
    spec = parse_manifest(manifest, str(mpath))
    source = manifest.get("source")
    for entry in spec.files:
        if source is not None and entry.record.get("source", source) != source:
            raise BundleError(f"{root / entry.path}: made from other weights ({str(entry.record['source'])[:20]}) "
                              f"than this bundle ({str(source)[:20]}); encoder and decoder must come from "
                              "one conversion")
    bundle = Bundle(root, manifest, spec)
    for entry in spec.files:
        _resolve_inside(root, entry.path)
    if verify:
        for entry in spec.files:
            verify_entry(bundle, entry)
    return bundle


def verify_entry(bundle: Bundle, entry: FileEntry) -> None:
    p = _resolve_inside(bundle.root, entry.path)
    if entry.path in bundle.verified:
        return
    if not p.is_file():
        raise BundleError(f"{p}: missing ({entry.role} {entry.format} {entry.precision})")
    size = p.stat().st_size
    if size != entry.bytes:
        raise BundleError(f"{p}: {size} bytes, manifest says {entry.bytes} (truncated or replaced)")
    if sha256_file(p) != entry.sha256:
        raise BundleError(f"{p}: sha256 does not match the manifest (file changed or corrupt)")
    bundle.verified.add(entry.path)


def write_manifest(root: Path, manifest: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` only on success.

    On any exception (KeyboardInterrupt included) the temporary folder is removed,
    so a failed or interrupted write leaves nothing behind.
    """
    out = Path(out)
    if out.exists() and not force:
        if not out.is_dir() or any(out.iterdir()):
            raise InputError(f"{out}: already exists; choose another --out or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        # mkdtemp makes the folder 0700; a bundle is meant to be copied and read by others.
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        for p in tmp.rglob("*"):
            if p.is_file() and not p.is_symlink():
                os.chmod(p, 0o666 & ~mask)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary name and rename, so readers never see half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
