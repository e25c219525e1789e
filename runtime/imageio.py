"""Image files in and out with MNN.cv, guarded so that a bad file is an error, not a crash.

MNN.cv.imread returns a null Var for a file it cannot decode, and touching
that Var segfaults. So files are checked before decoding (exists, readable,
non-empty, a JPEG/PNG/BMP signature, not truncated), and the decoded Var is
checked for null before use.
"""
from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

import numpy as np

from edgesam.errors import ImageError, InputError
from edgesam.runtime._mnn import import_mnn


def _cv():
    import_mnn()
    import MNN.cv as cv  # the Python wrapper (constants, keyword arguments), not the raw C module

    return cv


def _sniff(path: Path) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(32)
            f.seek(max(0, size - 1024))
            tail = f.read()
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    return _kind(head, tail, size, str(path))


def _kind(head: bytes, tail: bytes, size: int, path: str) -> str:
    """"png", "jpeg" or "bmp" from a file's first 32 and last 1024 bytes, or an ImageError naming ``path``."""
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if b"IEND" not in tail:
            raise ImageError(f"{path}: truncated PNG (no IEND chunk)")
        return "png"
    if head.startswith(b"\xff\xd8"):
        if b"\xff\xd9" not in tail:
            raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
        return "jpeg"
    if head.startswith(b"BM") and len(head) >= 6:
        if struct.unpack("<I", head[2:6])[0] > size:
            raise ImageError(f"{path}: truncated BMP")
        return "bmp"
    raise ImageError(f"{path}: not a JPEG, PNG or BMP image")


def _is_null(var) -> bool:
    # PyMNNVar is {PyObject_HEAD; VARP* var}; VARP's first member is the Variable pointer.
    p = ctypes.c_void_p.from_address(id(var) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    return (not p) or (not ctypes.c_void_p.from_address(p).value)


def read_image_var(path: str | os.PathLike):
    """Decode an image file to an MNN Var, HxWx3 uint8 **BGR** (MNN.cv's order)."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    _sniff(path)
    if not os.access(path, os.R_OK):
        raise ImageError(f"{path}: permission denied")
    cv = _cv()
    if not cv.haveImageReader(str(path)):
        raise ImageError(f"{path}: MNN.cv cannot decode this image")
    var = cv.imread(str(path), cv.IMREAD_COLOR)
    if _is_null(var):
        raise ImageError(f"{path}: MNN.cv failed to decode this image (corrupt?)")
    shape = var.shape
    if len(shape) != 3 or shape[2] != 3 or shape[0] < 1 or shape[1] < 1:
        raise ImageError(f"{path}: decoded to an unexpected shape {shape}")
    return var


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """An image file's bytes (JPEG/PNG/BMP), decoded in memory by MNN.cv -> HxWx3 uint8 RGB, with the
    same checks as ``read_image`` (``name`` starts their messages). Nothing is written to disk."""
    _kind(data[:32], data[-1024:], len(data), name)
    cv = _cv()
    var = cv.imdecode(np.frombuffer(data, np.uint8), cv.IMREAD_COLOR)
    if _is_null(var):
        raise ImageError(f"{name}: MNN.cv failed to decode this image (corrupt?)")
    shape = var.shape
    if len(shape) != 3 or shape[2] != 3 or shape[0] < 1 or shape[1] < 1:
        raise ImageError(f"{name}: decoded to an unexpected shape {shape}")
    return np.ascontiguousarray(np.array(var.read(), copy=True)[..., ::-1])


def read_image(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB numpy array. Grey, RGBA (alpha dropped) and palette images become RGB."""
    var = read_image_var(path)
    return np.ascontiguousarray(np.array(var.read(), copy=True)[..., ::-1])


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write HxWx3 RGB (or HxW grey) uint8 to PNG/JPEG/BMP atomically (temp name, then rename)."""
    import_mnn()
    from MNN import expr

    path = Path(path)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
        raise ImageError(f"{path}: output image must end in .png, .jpg or .bmp")
    if not path.parent.is_dir():
        raise ImageError(f"{path.parent}: output folder does not exist")
    arr = np.ascontiguousarray(rgb if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, 2), np.uint8)
    bgr = np.ascontiguousarray(arr[..., ::-1])  # imwrite swaps BGR -> RGB itself
    var = expr.const(bgr, list(bgr.shape), expr.NHWC, expr.uint8)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        if not _cv().imwrite(str(tmp), var):
            raise ImageError(f"{path}: could not write image")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of a PNG, JPEG or BMP from its header, without decoding it (e.g. for the COCO
    entry of an image that has no masks)."""
    path = Path(path)
    kind = _sniff(path)
    with open(path, "rb") as f:
        if kind == "png":
            f.seek(16)
            w, h = struct.unpack(">II", f.read(8))
            return int(h), int(w)
        if kind == "bmp":
            f.seek(18)
            w, h = struct.unpack("<ii", f.read(8))
            return abs(int(h)), int(w)
        f.seek(2)  # JPEG: walk the markers to the first start-of-frame
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                break
            (length,) = struct.unpack(">H", f.read(2))
            if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">xHH", f.read(5))
                return int(h), int(w)
            f.seek(length - 2, 1)
    raise ImageError(f"{path}: no image size in its header (corrupt?)")


def load_npy(path: str) -> np.ndarray:
    """A .npy array (never a pickle), or one line (InputError) naming the file."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npy array ({e})") from None
