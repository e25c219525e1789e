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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from edgesam.errors import BundleError, InputError

FORMAT = "edgesam-bundle"
VERSION = 1
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
    root: Path
    manifest: dict

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def untrained(self) -> bool:
        return "random_init_seed" in self.manifest.get("checkpoint", {})

    def entries(self, role: Optional[str] = None, format: Optional[str] = None,
                precision: Optional[str] = None) -> list[dict]:
        return [f for f in self.manifest["files"]
                if (role is None or f["role"] == role) and (format is None or f["format"] == format)
                and (precision is None or f["precision"] == precision)]

    def precisions(self, format: str) -> list[str]:
        """Precisions present for ``format``, widest first (fp32, fp16, int8)."""
        order = ("fp32", "fp16", "int8")
        return sorted({f["precision"] for f in self.entries(format=format)},
                      key=lambda p: (order.index(p) if p in order else len(order), p))

    def find(self, role: str, format: str, precision: str) -> Path:
        """Path of the model with this role/format/precision, or a BundleError naming what exists."""
        hits = self.entries(role, format, precision)
        if not hits:
            have = ", ".join(self.precisions(format)) or "none"
            raise BundleError(f"{self.root}: no {format} {role} at precision {precision} (bundle has: {have})")
        return self.root / hits[0]["path"]


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
    """Read ``manifest.json``; with ``verify``, check every file's size and sha256."""
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
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not an edgesam bundle manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise BundleError(f"{mpath}: bundle format version {version!r} is newer than this edgesam "
                          f"reads ({VERSION}); upgrade edgesam")
    for key in ("model", "files", "preprocess", "decoder"):
        if key not in manifest:
            raise BundleError(f"{mpath}: manifest lacks {key!r}")
    source = manifest.get("source")
    for entry in manifest["files"]:
        if source is not None and entry.get("source", source) != source:
            raise BundleError(f"{root / entry['path']}: made from other weights ({str(entry['source'])[:20]}) "
                              f"than this bundle ({str(source)[:20]}); encoder and decoder must come from "
                              "one conversion")
    bundle = Bundle(root, manifest)
    if verify:
        for entry in manifest["files"]:
            verify_entry(bundle, entry)
    return bundle


def verify_entry(bundle: Bundle, entry: dict) -> None:
    p = _resolve_inside(bundle.root, entry["path"])
    if not p.is_file():
        raise BundleError(f"{p}: missing ({entry['role']} {entry['format']} {entry['precision']})")
    size = p.stat().st_size
    if size != entry["bytes"]:
        raise BundleError(f"{p}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced)")
    if sha256_file(p) != entry["sha256"]:
        raise BundleError(f"{p}: sha256 does not match the manifest (file changed or corrupt)")


def write_manifest(root: Path, manifest: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def _output_error(path: Path, e: OSError) -> Exception:
    """The one-line error for a destination that cannot be written (exit code 2)."""
    from edgesam.errors import OutputError

    if isinstance(e, FileNotFoundError) and not path.parent.exists():
        return OutputError(f"{path}: folder {path.parent} does not exist")
    return OutputError(f"{path}: cannot write there ({e.strerror or type(e).__name__})")


def _check_free(out: Path, force: bool) -> None:
    if out.exists() and not force:
        if not out.is_dir() or any(out.iterdir()):
            raise InputError(f"{out}: already exists; choose another --out or pass --force")


def check_out_dir(out: str | os.PathLike, force: bool = False) -> None:
    """Fail now, not after minutes of work, if ``atomic_dir(out, force)`` could not write: ``out``
    taken (without ``force``), or no folder can be made where it goes (probed with an empty
    temporary folder, removed at once; missing parents are not created here)."""
    out = Path(out)
    try:
        _check_free(out, force)
        where = out.parent
        while not where.exists() and where != where.parent:  # atomic_dir would create the missing parents
            where = where.parent
        os.rmdir(tempfile.mkdtemp(prefix=_temp_prefix(out), dir=where))
    except OSError as e:
        raise _output_error(out, e) from None


def _temp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` only on success.

    On any exception (KeyboardInterrupt included) the temporary folder is removed,
    so a failed or interrupted write leaves nothing behind. A destination that
    cannot be written raises OutputError (exit code 2), nothing written.
    """
    out = Path(out)
    try:
        _check_free(out, force)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), dir=out.parent))
    except OSError as e:
        raise _output_error(out, e) from None
    try:
        yield tmp
        try:
            _publish(tmp, out)
        except OSError as e:
            raise _output_error(out, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, out: Path) -> None:
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary name and rename, so readers never see half of it.
    A destination that cannot be written raises OutputError (exit code 2), nothing left there."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise _output_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _output_error(path, e) from None
        raise
