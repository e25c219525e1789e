"""Importing MNN quietly, and what it says about the CPU.

``import MNN`` prints "The device supports: i8sdot:0, fp16:0, ..." on file
descriptor 1 from C code. That would corrupt ``--json -`` output, so the
import runs with fd 1 pointed at a temporary file, and the line is kept as
the machine's feature report.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

from edgesam.errors import BackendError

_features: dict[str, int] = {}


def import_mnn() -> ModuleType:
    if "MNN" in sys.modules:
        return sys.modules["MNN"]
    with tempfile.TemporaryFile() as cap:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(cap.fileno(), 1)
        try:
            import MNN  # noqa: F401
        except ImportError as e:
            raise BackendError(f"MNN is not installed ({e}); pip install MNN") from None
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        cap.seek(0)
        text = cap.read().decode("utf-8", "replace")
    for key, val in re.findall(r"(\w+):\s*(\d+)", text):
        _features[key] = int(val)
    return sys.modules["MNN"]


def cpu_features() -> dict[str, int]:
    """MNN's own report of CPU features (i8sdot, fp16, i8mm, sve2, sme2): 1 = supported."""
    import_mnn()
    return dict(_features)
