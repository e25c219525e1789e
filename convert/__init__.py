"""Host side of edgesam: torch checkpoint -> ONNX -> MNN bundle, gated on parity.

Submodules import torch; this package file does not, so ``edgesam.convert.sam_models``
and friends can be imported one by one.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("ConvertOptions", "convert"):
        from edgesam.convert import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)


def code_fingerprint() -> str:
    """A short hash of this package's sources: benchmarks key their cached bundles on it (and on the
    checkpoint's hash), so a change to the export or conversion never reuses a stale bundle."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for f in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:8]
