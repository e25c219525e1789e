"""ONNX -> MNN through the converter core ``_tools.mnnconvert``.

Never through ``MNN.tools.mnnconvert`` or the ``mnnconvert`` script: those send
telemetry and pip-install packages. The core's return value is not trusted
either: success means the output file exists and loads.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from edgesam.errors import ConversionError

# Weight storage per bundle precision. Compute precision is a runtime choice.
PRECISION_FLAGS = {
    "fp32": [],
    "fp16": ["--fp16"],  # half weights on disk; arithmetic is fp16 only with precision="low"
    "int8": ["--weightQuantBits", "8"],  # int8 weights, dequantised at load/compute
}


def _run_quiet(argv: list[str]) -> tuple[int, str]:
    """Run the converter core with its stdout/stderr captured (it prints a lot at C level)."""
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            import _tools  # MNN's converter core (it prints a CPU banner on import); no telemetry module

            rc = _tools.mnnconvert(argv)
        except Exception as e:  # the core raises on some malformed graphs
            rc = f"{type(e).__name__}: {e}"
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    return rc, text


def onnx_to_mnn(onnx_path: Path, mnn_path: Path, precision: str, biz_code: str = "edgesam") -> str:
    """Convert one ONNX file; returns the converter's log. Raises ConversionError on any failure."""
    if precision not in PRECISION_FLAGS:
        raise ConversionError(f"unknown MNN precision {precision!r}")
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(mnn_path),
            "--bizCode", biz_code, "--keepInputFormat", *PRECISION_FLAGS[precision]]
    # The converter spills weights to ".__convert_external_data.bin" in the current directory
    # while it optimises. Two conversions sharing a working directory overwrite each other's
    # spill file and produce silently wrong weights (seen here: an int8 encoder at cosine -0.89
    # against torch while another conversion ran from the same folder). So each run gets a
    # private working directory, removed afterwards.
    onnx_abs, mnn_abs = str(Path(onnx_path).resolve()), str(Path(mnn_path).resolve())
    argv[argv.index("--modelFile") + 1], argv[argv.index("--MNNModel") + 1] = onnx_abs, mnn_abs
    cwd = os.getcwd()
    scratch = tempfile.mkdtemp(prefix=".mnnconvert-", dir=Path(mnn_abs).parent)
    try:
        os.chdir(scratch)
        rc, log = _run_quiet(argv)
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
    # The core returns True even when it failed, so judge by its log and by the file itself.
    if rc is not True or "Converted Success" not in log or "[ERROR]" in log:
        tail = " | ".join(log.strip().splitlines()[-3:])
        raise ConversionError(f"MNN conversion of {onnx_path.name} to {precision} failed ({rc}): {tail}")
    if not mnn_path.is_file() or mnn_path.stat().st_size == 0:
        tail = " | ".join(log.strip().splitlines()[-3:])
        raise ConversionError(f"MNN conversion of {onnx_path.name} to {precision} wrote no model: {tail}")
    return log
