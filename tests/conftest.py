from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from edgesam.synthetic.scenes import upsampled_scene as scene  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parent.parent

# What `make setup` installs, as the tests import it. `make test` sets EDGESAM_REQUIRE_SETUP=1: in that
# tier a missing or broken one fails the run at the start instead of letting its tests skip (a broken
# sam2 build would otherwise make the SAM 2 tests vanish). Outside it, tests skip with their reason.
SETUP_MODULES = ("torch", "torchvision", "segment_anything", "mobile_sam", "sam2", "onnx", "onnxruntime", "onnxslim",
                 "openvino", "ray.data", "pycocotools.mask", "jsonschema", "cv2", "hypothesis", "samexporter", "PIL",
                 "MNN", "selenium")


def pytest_sessionstart(session):
    if os.environ.get("EDGESAM_REQUIRE_SETUP") != "1":
        return
    # imported in a fresh interpreter: this process must not load torch before the tests that check
    # which modules the runtime loads
    code = ("import importlib, sys\nbad = []\nfor n in sys.argv[1:]:\n    try:\n        importlib.import_module(n)\n"
            "    except Exception as e:\n        bad.append(f'{n} ({type(e).__name__}: {e})')\nprint('MISSING:' + '; '.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code, *SETUP_MODULES], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    last = (proc.stdout.strip().splitlines() or [""])[-1]  # MNN prints a line of its own on import
    missing = last[len("MISSING:"):] if last.startswith("MISSING:") else \
        (proc.stderr.strip().splitlines() or ["the import check failed"])[-1]
    if proc.returncode or missing:
        pytest.exit(f"make test needs what make setup installs; missing or broken: {missing}", returncode=3)


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
def vit_t_full_bundle(tmp_path_factory) -> tuple[Path, dict]:
    """The demo model converted with ``--decoder full`` (the official SamOnnxModel contract), every
    precision: (bundle folder, manifest)."""
    pytest.importorskip("torch")
    from edgesam.convert.pipeline import ConvertOptions, convert

    out = tmp_path_factory.mktemp("bundles") / "vit_t_full"
    m = convert(ConvertOptions(model="vit_t", out=out, checkpoint=DEMO_CHECKPOINT, decoder="full"), log=lambda s: None)
    return out, m


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
    from edgesam.convert.sam_models import model_from_checkpoint

    return model_from_checkpoint("vit_t", DEMO_CHECKPOINT)


def chunk_sums(graph) -> list:
    """The ReduceSum nodes that add partial products over chunks of image keys (inputs made by a MatMul)."""
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    return [n for n in graph.node if n.op_type == "ReduceSum" and made_by.get(n.input[0]) == "MatMul"]


# --- a base (runtime-only, non-editable) install in a fresh venv, offline after the first run ---

# Runtime dependency wheels (MNN, numpy, threadpoolctl) are downloaded here once; later runs
# install from this folder with --no-index and need no network.
WHEEL_CACHE = Path(os.environ.get("EDGESAM_WHEEL_CACHE", Path.home() / ".cache" / "edgesam-test"))
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "edgesam", "convert", "runtime")


def pip(python: Path | str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def edgesam_wheel(tmp_path_factory) -> Path:
    """This checkout as a wheel, built once per session without network (no build isolation: the
    running environment's setuptools). Built from a copy, so no stale build/ folder leaks in."""
    pytest.importorskip("setuptools")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in PACKAGE_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    p = pip(sys.executable, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))
    assert p.returncode == 0, p.stderr[-3000:]
    return next(out.glob("edgesam-*.whl"))


@pytest.fixture(scope="session")
def base_venv(edgesam_wheel, tmp_path_factory) -> Path:
    """A fresh venv holding a plain ``pip install`` of the wheel with only the base dependencies;
    returns its python. The dependencies come from WHEEL_CACHE (downloaded on the first run)."""
    env_dir = tmp_path_factory.mktemp("base") / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    cache = WHEEL_CACHE / f"py{sys.version_info.major}{sys.version_info.minor}"
    install = ("install", "-q", "--no-index", "--find-links", str(cache), str(edgesam_wheel))
    p = pip(py, *install)
    if p.returncode != 0:  # first run, or the dependencies changed: fill the cache, then offline again
        cache.mkdir(parents=True, exist_ok=True)
        d = pip(py, "download", "-q", "-d", str(cache), str(edgesam_wheel))
        assert d.returncode == 0, d.stderr[-3000:]
        for stale in cache.glob("edgesam-*.whl"):
            stale.unlink()
        p = pip(py, *install)
    assert p.returncode == 0, p.stderr[-3000:]
    return py
