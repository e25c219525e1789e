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


# A write in progress lives in ".NAME.tmp-HOST-PID-START-XXXXXXXX" beside NAME: HOST and PID name its
# owner, START is that process's start time (clock ticks after boot, from /proc; 0 where unknown),
# so that a reused pid is not taken for the owner. A process killed with SIGKILL cannot remove its
# temporary folder; the next atomic_dir to the same NAME does (_remove_stale_temps).
def _temp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-{_host_tag()}-{os.getpid()}-{_start_time(os.getpid()) or 0}-"


def _host_tag() -> str:
    import socket

    return "".join(c if c.isalnum() or c in ".-" else "_" for c in socket.gethostname() or "localhost")[:32]


def _proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """(state, start time in clock ticks after boot) of a process, from /proc/PID/stat; None where
    there is no /proc or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the command name (in parentheses) may hold spaces
        return fields[0].decode(), int(fields[19])  # fields 3 and 22 of proc(5)
    except (OSError, IndexError, ValueError):
        return None


def _start_time(pid: int) -> Optional[int]:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _owner_gone(host: str, pid: int, start: int) -> bool:
    """Whether the process that made a temporary folder is certainly gone. Unsure means no."""
    if os.name == "nt" or pid <= 0:  # Windows' os.kill terminates instead of probing; pid 0 is a group
        return False
    if host != _host_tag():
        return False  # a folder shared between machines: a pid from another one says nothing here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is None:  # no /proc (macOS): a live pid is taken for the owner, reused or not
        return False
    state, started = stat
    return state == "Z" or (start != 0 and started != start)  # killed but not reaped, or a reused pid


def _remove_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary folders of earlier writes to ``out`` whose owner is gone; the removed."""
    head, removed = f".{out.name}.tmp-", []
    try:
        candidates = [p for p in out.parent.iterdir() if p.name.startswith(head)]
    except OSError:
        return removed
    for p in candidates:
        parts = p.name[len(head):].rsplit("-", 3)  # HOST may hold "-"; PID, START and mkdtemp's suffix do not
        if len(parts) != 4 or not (parts[1].isdigit() and parts[2].isdigit()):
            continue  # not made by this scheme (or by an older edgesam): its owner is unknown, keep it
        if p.is_symlink() or not p.is_dir() or not _owner_gone(parts[0], int(parts[1]), int(parts[2])):
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` only on success.

    On any exception (KeyboardInterrupt included) the temporary folder is removed,
    so a failed or interrupted write leaves nothing behind. A write killed outright
    (SIGKILL) cannot clean up: its folder is removed by the next atomic_dir to the
    same ``out`` once its owner is gone. A destination that cannot be written raises
    OutputError (exit code 2), nothing written.
    """
    out = Path(out)
    try:
        _check_free(out, force)
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(out)
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
        try:
            tmp.rename(out)
        except OSError:
            old.rename(out)  # put the previous one back rather than leave no out at all
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _umask() -> int:
    """The process's umask, read without setting it where /proc says it (Linux 4.7+): os.umask can
    only be read by setting it, and a file another thread creates meanwhile would get the wrong mode."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable_file(path: str | os.PathLike) -> None:
    """Fail now, before any work, if ``atomic_write_bytes(path)`` could not write there: the folder
    is probed with an empty temporary file, removed at once (OutputError, exit code 2)."""
    path = Path(path)
    if path.is_dir():
        from edgesam.errors import OutputError

        raise OutputError(f"{path}: is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise _output_error(path, e) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary name and rename, so readers never see half of it.
    A destination that cannot be written raises OutputError (exit code 2), nothing left there."""
    path = Path(path)
    if path.is_dir():
        from edgesam.errors import OutputError

        raise OutputError(f"{path}: is a folder; give a file name")
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
