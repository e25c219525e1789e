"""Importing MNN, quietly when the program asks, and what it says about the CPU.

``import MNN`` prints "The device supports: i8sdot:0, fp16:0, ..." on file
descriptor 1 from C code (libMNN, while the extension module is loaded; MNN has
no switch for it). A library does not redirect its caller's descriptors: by
default MNN is imported as it is, and that line goes where MNN sends it. A
program that owns its stdout and needs it clean (the ``edgesam`` CLI, whose
``--json -`` writes there, and the ARM lane's checks) sets ``QUIET = True``
before the first import: then the import runs with fd 1 pointed at a temporary
file, and the line is kept as the machine's feature report. Without it,
``cpu_features`` asks a child interpreter for the line.

Why this module, unlike the rest of the library, touches a process-wide
resource: the line is written by C code straight to descriptor 1, below
``sys.stdout``, so redirecting ``sys.stdout`` does not catch it; and the import
has to happen in this process, because the runtime uses the module's objects
here. A child process could capture its own banner, but this process would
print the line again when it imports MNN itself. Descriptor 1 is shared by the
whole process, so the only way to keep the line off the caller's stdout is to
point fd 1 elsewhere for the duration of the import. (The converter, which only
needs files, runs in a child instead: ``edgesam.convert.mnn._run_quiet``.)

How it is kept safe: it happens once per process (later calls find MNN in
``sys.modules``); Python's own stdout buffer is flushed before the swap, so
nothing already printed ends up in the capture; C stdio buffers are flushed
before the swap back, so nothing MNN buffered surfaces later on the real
stdout; fd 1 is restored on every path (a failed import, an interrupt); and the
saved descriptor is always closed. Output that another thread writes to fd 1
during the import lands in the capture, not on stdout: import MNN before
starting threads that print.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from types import ModuleType

from edgesam.errors import BackendError

QUIET = False  # set by a program that needs its stdout clean (the CLI), before MNN is first imported
_features: dict[str, int] = {}
_probed = False


def _flush_c_stdio() -> None:
    """fflush(NULL): push out whatever C code buffered in stdio (POSIX; a no-op where unavailable)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library handle (Windows): nothing to flush
        pass


def _import_capturing_fd1() -> str:
    """``import MNN`` with fd 1 pointed at a temporary file; returns what was written there."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            with contextlib.suppress(ValueError, OSError):  # closed or broken: nothing to keep in order
                stream.flush()
    try:
        saved = os.dup(1)
    except OSError:  # fd 1 is closed: the banner has nowhere to go anyway
        import MNN  # noqa: F401

        return ""
    try:
        with tempfile.TemporaryFile() as cap:
            _flush_c_stdio()
            os.dup2(cap.fileno(), 1)
            try:
                import MNN  # noqa: F401,F811
            finally:
                _flush_c_stdio()
                os.dup2(saved, 1)
            cap.seek(0)
            return cap.read().decode("utf-8", "replace")
    finally:
        os.close(saved)


def _parse(text: str) -> None:
    global _probed
    for key, val in re.findall(r"(\w+):\s*(\d+)", text[text.find("The device supports"):]):
        _features[key] = int(val)
    _probed = "The device supports" in text


def import_mnn() -> ModuleType:
    if "MNN" in sys.modules:
        return sys.modules["MNN"]
    try:
        if QUIET:
            _parse(_import_capturing_fd1())
        else:
            import MNN  # noqa: F401
    except ImportError as e:
        raise BackendError(f"MNN is not installed ({e}); pip install MNN") from None
    return sys.modules["MNN"]


def cpu_features() -> dict[str, int]:
    """MNN's own report of CPU features (i8sdot, fp16, i8mm, sve2, sme2): 1 = supported. From the
    line captured at a quiet import, else from a child interpreter's import (once per process)."""
    import_mnn()
    if not _probed:
        import subprocess

        p = subprocess.run([sys.executable, "-c", "import MNN"], capture_output=True, text=True, timeout=120)
        _parse(p.stdout)
    return dict(_features)
