from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``edgesam`` in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "edgesam.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert the process failed with ``code``, one stderr line, no traceback; return that line."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("edgesam: error:"), proc.stderr
    assert len(lines) == 1, lines  # exactly one line: no progress chatter before the error
    return lines[-1]


DEMO_CHECKPOINT = REPO / "assets" / "demo_vit_t.pt"


@pytest.fixture(scope="session")
def vit_t_bundle(tmp_path_factory) -> Path:
    """The built-in demo model (trained vit_t, assets/demo_vit_t.pt) converted once per session:
    all precisions, lowres decoder. Trained weights make mask-level checks meaningful (random
    weights give nearly the same mask for every prompt)."""
    pytest.importorskip("torch")
    from edgesam.convert.pipeline import ConvertOptions, convert

    out = tmp_path_factory.mktemp("bundles") / "vit_t"
    convert(ConvertOptions(model="vit_t", out=out, checkpoint=DEMO_CHECKPOINT), log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def vit_t_random_fp32(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``edgesam convert --random-init 0 --precision fp32`` run once per session through the CLI:
    (bundle folder, the finished process)."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bundles") / "vit_t_random"
    return out, run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", out, "--precision", "fp32")


@pytest.fixture(scope="session")
def vit_t_model():
    """The torch model with the same weights as ``vit_t_bundle``."""
    pytest.importorskip("torch")
    from edgesam.convert.models import model_from_checkpoint

    return model_from_checkpoint("vit_t", DEMO_CHECKPOINT)


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB uint8 image of any size: smooth shapes plus mild noise."""
    from edgesam.synthetic.gate import scene as synthetic

    base = synthetic(256, 256, seed).astype(np.float32)
    ys = (np.arange(h) * 256 // h).clip(0, 255)
    xs = (np.arange(w) * 256 // w).clip(0, 255)
    img = base[ys][:, xs]
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def chunk_sums(graph) -> list:
    """The ReduceSum nodes that add partial products over chunks of image keys (inputs made by a MatMul)."""
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    return [n for n in graph.node if n.op_type == "ReduceSum" and made_by.get(n.input[0]) == "MatMul"]
