"""``edgesam bench``: per-stage latency on this device, swept over configurations in one run.

Configurations (backend x model precision x runtime precision x threads, and for MNN int8
files int8 or fp32 arithmetic) are
interleaved run by run, so machine drift hits them all alike. Stages: image
decode, preprocess, encoder, decoder for 1 prompt and for a batch, postprocess,
and end to end (file -> first mask). Runs on a board with only the base install.
"""
from __future__ import annotations

import itertools
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgesam.bundle import load_bundle
from edgesam.errors import InputError
from edgesam.runtime.options import RUN_DEFAULTS, RunOptions

STAGES = ("image_decode", "preprocess", "encoder", "decoder_1", "decoder_batch", "postprocess", "end_to_end")


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """A sweep: each run setting is a list, and every combination that the backend can run
    becomes one ``RunOptions`` (see ``_configs``). The values are checked one by one with the
    same functions as ``RunOptions``, so a bad one is refused before any model loads."""

    bundle: str
    image: Optional[str] = None  # default: a synthetic 600x400 PNG written to a temp folder
    backends: tuple[str, ...] = (RUN_DEFAULTS.backend,)
    precisions: tuple[str, ...] = (RUN_DEFAULTS.precision,)
    runtime_precisions: tuple[str, ...] = (RUN_DEFAULTS.runtime_precision,)
    threads: Optional[tuple[int, ...]] = None  # None: (every core,)
    int8_compute: tuple[str, ...] = (RUN_DEFAULTS.int8_compute,)  # for int8 files on MNN (see SamPredictor)
    runs: int = 5
    warmup: int = 1
    batch: int = 16  # prompts in the batched decoder stage

    def validate(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.batch < 1:
            raise InputError("--runs and --batch must be >= 1 and --warmup >= 0")
        from edgesam.runtime.backends import BACKENDS, INT8_COMPUTE, ARITHMETIC_PRECISIONS, require_tensorrt, resolve_threads
        from edgesam.runtime.options import check_choice

        for flag, values in (("--backend", self.backends), ("--precision", self.precisions),
                             ("--runtime-precision", self.runtime_precisions), ("--int8-compute", self.int8_compute)):
            if not values:
                raise InputError(f"{flag} needs at least one value")
        for b in self.backends:
            check_choice("backend", b, BACKENDS)
        for rp in self.runtime_precisions:
            check_choice("runtime precision", rp, ARITHMETIC_PRECISIONS)
        for mode in self.int8_compute:
            check_choice("int8 compute", mode, INT8_COMPUTE)
        for t in self.threads or ():
            resolve_threads(t)
        if "tensorrt" in self.backends:
            require_tensorrt()  # exit 2 with the reason, before any other backend loads


def machine() -> dict:
    """What a result from another board needs to be compared: CPU, cores, OS, MNN's CPU features."""
    from edgesam.runtime._mnn import cpu_features, import_mnn

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            info.setdefault(key.strip().lower(), val.strip())
    except OSError:
        pass
    # x86 names the CPU in "model name" ("model" is a number there); ARM boards use "Hardware"/"Model".
    model = next((info[k] for k in ("model name", "hardware", "cpu model", "model") if info.get(k)), "")
    return {"cpu": model or platform.processor() or "unknown", "arch": platform.machine(), "cores": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "mnn": import_mnn().version(), "mnn_cpu_features": cpu_features(), "numpy": np.__version__}


def matmul_peak(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """Best GFLOP/s of an n^3 float32 matrix product in numpy's BLAS on ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    best = float("inf")
    with threadpool_limits(threads, user_api="blas"):
        a @ a
        for _ in range(repeats):
            t = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def _configs(bundle, opts: BenchOptions) -> list[dict]:
    from edgesam.runtime.backends import default_threads, mnn_memory_mode

    out = []
    for backend, prec, rp, th, i8 in itertools.product(opts.backends, opts.precisions, opts.runtime_precisions,
                                                       opts.threads or (default_threads(),), opts.int8_compute):
        if backend == "openvino":
            if prec not in ("fp32", "fp16") or rp == "normal":
                continue  # IR is fp32 or fp16; OpenVINO arithmetic is high (f32) or low (plugin's choice)
        elif backend != "mnn":
            rp = "-"  # runtime precision is an MNN/OpenVINO setting
            if prec != "fp32":
                continue  # ONNX Runtime runs the fp32 ONNX model only
        cfg = {"backend": backend, "precision": prec, "runtime_precision": rp, "threads": th}
        if backend == "mnn" and prec == "int8":  # int8 arithmetic (MNN memory mode low) or fp32 on int8 weights
            cfg["int8_compute"] = "on" if mnn_memory_mode(prec, i8) == "low" else "off"
        if cfg not in out:
            out.append(cfg)
    if not out:
        raise InputError("no configuration to run: ort takes --precision fp32, openvino fp32 or fp16")
    return out


def _run_options(cfg: dict) -> RunOptions:
    """The RunOptions of one configuration ("-", no runtime precision, runs as the default "high")."""
    rp = cfg["runtime_precision"]
    return RunOptions(backend=cfg["backend"], precision=cfg["precision"], threads=cfg["threads"],
                      runtime_precision=RunOptions.runtime_precision if rp == "-" else rp,
                      int8_compute=cfg.get("int8_compute", RunOptions.int8_compute))


def _key(cfg: dict) -> str:
    i8 = " i8" if cfg.get("int8_compute") == "on" else ""  # int8 arithmetic
    return f"{cfg['backend']} {cfg['precision']}/{cfg['runtime_precision']} t{cfg['threads']}{i8}"


def _rss_mb() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return float("nan")


def _run_once(pred, image: Path, batch: int) -> dict:
    from edgesam.runtime.imageio import read_image_var
    from edgesam.runtime.preprocess import preprocess

    t = {}
    s = time.perf_counter()
    var = read_image_var(image)
    t["image_decode"] = time.perf_counter() - s
    s = time.perf_counter()
    x, input_size = preprocess(var, pred.preprocess_spec, bgr=True)
    t["preprocess"] = time.perf_counter() - s
    h, w = var.shape[:2]
    s = time.perf_counter()
    pred._embed(x, input_size, (h, w))  # the encoder run
    t["encoder"] = time.perf_counter() - s
    point = np.array([[w * 0.4, h * 0.5]])
    s = time.perf_counter()
    low, _ = pred.decode(point, np.array([1]))
    t["decoder_1"] = time.perf_counter() - s
    rng = np.random.default_rng(0)
    xy0 = rng.uniform(0, 0.5, (batch, 2)) * (w, h)
    boxes = np.concatenate([xy0, xy0 + rng.uniform(0.1, 0.5, (batch, 2)) * (w, h)], 1)
    s = time.perf_counter()
    pred.decode(boxes=boxes, multimask_output=False)
    t["decoder_batch"] = time.perf_counter() - s
    s = time.perf_counter()
    pred.upscale(low)
    t["postprocess"] = time.perf_counter() - s
    s = time.perf_counter()
    pred.set_image_file(image)
    pred.predict(point, np.array([1]))
    t["end_to_end"] = time.perf_counter() - s
    return t


def _stats(values: list[float]) -> dict:
    v = np.array(values) * 1e3
    return {"min_ms": float(v.min()), "p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90))}


def run_bench(opts: BenchOptions, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    opts.validate()
    bundle = load_bundle(opts.bundle, verify=True)
    configs = _configs(bundle, opts)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(opts.image) if opts.image else _synthetic_file(Path(tmp))
        if opts.image:
            from edgesam.runtime.imageio import read_image_var

            read_image_var(image)  # a bad --image fails before any model loads
        preds, loads = [], []
        for cfg in configs:
            s = time.perf_counter()
            preds.append(_run_options(cfg).predictor(bundle))
            loads.append((time.perf_counter() - s, _rss_mb()))
        samples = [{k: [] for k in STAGES} for _ in configs]
        total = opts.warmup + opts.runs
        for r in range(total):
            for i, (cfg, pred) in enumerate(zip(configs, preds)):
                log(f"[bench] run {r + 1}/{total}{' (warm-up)' if r < opts.warmup else ''}: {_key(cfg)}")
                t = _run_once(pred, image, opts.batch)
                if r >= opts.warmup:
                    for k, v in t.items():
                        samples[i][k].append(v)
        h, w = preds[0].original_size
    flops = bundle.manifest.get("flops", {})
    peaks = {th: matmul_peak(th) for th in sorted({c["threads"] for c in configs})}
    results = []
    for cfg, (load_s, rss), smp, pred in zip(configs, loads, samples, preds):
        stages = {k: _stats(v) for k, v in smp.items()}
        enc = flops.get("encoder", 0) / (stages["encoder"]["p50_ms"] / 1e3) / 1e9
        dec1 = flops.get("decoder_per_prompt", 0) / (stages["decoder_1"]["p50_ms"] / 1e3) / 1e9
        decb = opts.batch * flops.get("decoder_per_prompt", 0) / (stages["decoder_batch"]["p50_ms"] / 1e3) / 1e9
        peak = peaks[cfg["threads"]]
        results.append({**cfg, "key": _key(cfg), "load_s": load_s, "rss_after_load_mb": rss, "stages": stages,
                        "decoder_per_prompt_in_batch_ms": stages["decoder_batch"]["p50_ms"] / opts.batch,
                        "gflops": {"encoder": enc, "decoder_1": dec1, "decoder_batch": decb},
                        "fraction_of_matmul_peak": {"encoder": enc / peak, "decoder_1": dec1 / peak,
                                                    "decoder_batch": decb / peak},
                        **({"inference_precision": pred.encoder.inference_precision}
                           if hasattr(pred.encoder, "inference_precision") else {})})
    return {"kind": "edgesam-bench", "version": 1, "bundle": str(bundle.root), "model": bundle.model,
            "untrained": bundle.untrained, "image": str(opts.image or f"synthetic {h}x{w}"), "image_size": [h, w],
            "runs": opts.runs, "warmup": opts.warmup, "batch": opts.batch, "machine": machine(),
            "backend_versions": _backend_versions({c["backend"] for c in configs}),
            "matmul_peak_gflops": {str(k): v for k, v in peaks.items()},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "results": results}


def _backend_versions(backends: set[str]) -> dict:
    """Versions of the backends that ran (they are imported by now, so this costs nothing)."""
    mods = {"mnn": "MNN", "ort": "onnxruntime", "openvino": "openvino"}
    out = {}
    for b in sorted(backends):
        mod = sys.modules.get(mods.get(b, b))
        ver = getattr(mod, "__version__", None) or (mod.version() if hasattr(mod, "version") else None)
        out[b] = str(ver) if ver else "unknown"
    return out


def _synthetic_file(folder: Path) -> Path:
    from edgesam.runtime.imageio import write_image
    from edgesam.synthetic.scenes import make_scene

    p = folder / "synthetic-600x400.png"
    write_image(p, make_scene(1, (400, 600), style="gate").image)
    return p


def format_bench(report: dict) -> str:
    m = report["machine"]
    lines = [f"{report['model']} on {m['cpu']} ({m['arch']}, {m['cores']} cores, MNN {m['mnn']}); image "
             f"{report['image_size'][1]}x{report['image_size'][0]}; p50 of {report['runs']} runs (ms)",
             f"{'config':<24}" + "".join(f"{s:>14}" for s in STAGES) + f"{'enc GF/s':>10}{'dec GF/s':>10}{'load s':>8}"]
    for r in report["results"]:
        lines.append(f"{r['key']:<24}" + "".join(f"{r['stages'][s]['p50_ms']:14.1f}" for s in STAGES)
                     + f"{r['gflops']['encoder']:10.1f}{r['gflops']['decoder_batch']:10.1f}{r['load_s']:8.2f}")
    peaks = ", ".join(f"{v:.0f} GFLOP/s at {k} threads" for k, v in report["matmul_peak_gflops"].items())
    lines.append(f"matmul peak (numpy BLAS): {peaks}; peak RSS {report['peak_rss_mb']:.0f} MB; "
                 f"decoder_batch = {report['batch']} box prompts in one call")
    return "\n".join(lines)


def compare_reports(paths: list[str]) -> str:
    """Two or more bench JSON files side by side: p50 per stage for each config key."""
    import json

    reports = []
    for p in paths:
        try:
            r = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: not a readable bench JSON ({e})") from None
        if r.get("kind") != "edgesam-bench":
            raise InputError(f"{p}: not an edgesam bench report")
        reports.append(r)
    lines = ["  ".join(f"[{i}] {p}: {r['machine']['cpu']} ({r['machine']['arch']}, {r['machine']['cores']} cores), "
                       f"{r['model']}, image {r['image_size'][1]}x{r['image_size'][0]}"
                       for i, (p, r) in enumerate(zip(paths, reports)))]
    keys = list(dict.fromkeys(res["key"] for r in reports for res in r["results"]))
    lines.append(f"{'config':<24} {'stage':<14}" + "".join(f"{f'[{i}] p50 ms':>14}" for i in range(len(reports)))
                 + f"{'ratio 1/0':>10}")
    for key in keys:
        rows = [next((x for x in r["results"] if x["key"] == key), None) for r in reports]
        for s in STAGES:
            vals = [row["stages"][s]["p50_ms"] if row else float("nan") for row in rows]
            ratio = vals[1] / vals[0] if len(vals) > 1 and vals[0] else float("nan")
            lines.append(f"{key:<24} {s:<14}" + "".join(f"{v:14.1f}" for v in vals) + f"{ratio:10.2f}")
    return "\n".join(lines)
