"""Side-by-side latency of SAM pipelines on the same weights and images (the project's speed targets).

  torch-official  mobile_sam.SamPredictor (PIL resize, torch encoder/decoder/postprocess)
  ort-samexporter PIL resize + numpy normalise, ONNX Runtime encoder, *full* decoder (orig_im_size -> masks),
                  sessions with ONNX Runtime's default options (as samexporter opens them) but --threads
  mnn-seed        the seed blog post's MNN script: MNN.cv resize with mean/norm folded in, MNN modules
                  converted *plainly* by the converter core from the same encoder.onnx and *full*
                  decoder.onnx (no edgesam rewrite or workaround), orig_im_size -> masks
                  (both baselines on the reference decoder graph, as samexporter-style exports have it)
  edgesam         edgesam.runtime.SamPredictor on MNN, default bundle (folded decoder graph, lowres
                  decoder + the runtime's exact upscale, MNN files as the parity gate chose them),
                  fp32 files; edgesam-fp16 and edgesam-int8 (int8 files, this CPU's default arithmetic)
                  and edgesam-int8-i8 (int8 arithmetic forced) beside it
  edgesam-exact-gelu  an --exact-gelu bundle on MNN (every MNN file's graph before MNN's fused GELU was chosen by the gate)
  edgesam-ort     the same bundle on ONNX Runtime
  edgesam-openvino  the same on OpenVINO (fp32 IR; x86 hosts; only if openvino is installed)
  edgesam-reference, edgesam-reference-ort  a bundle with the official step-by-step decoder graph
                  (--decoder-graph reference)
Every pipeline embeds the image from its file, then decodes one foreground point with
multimask output and thresholds at the original size (image -> first mask); then five more points,
each timed alone (decode + post: their median). Each pipeline lives in its own process,
and only one works at a time. Runs are interleaved (rep by rep, pipeline by pipeline, in a new
random order each turn) so machine drift hits all alike; medians are reported with ratios
against the ONNX Runtime pipeline written as samexporter's is (the first baseline) and against
the seed MNN script (the second). Per pipeline also: the encoder alone (median) and its GFLOP/s
against numpy's matmul peak on the same threads, the process's peak RSS, and the first mask's IoU
against edgesam MNN fp32's (the int8 and fp16 rows' mask agreement). The weights are the trained
demo model by default, so that masks have the shape of real ones (the thresholded upscale's cost
depends on the mask's boundary). Needs the convert extra (torch, onnxruntime; openvino for its
row). Usage:

  .venv/bin/python benchmarks/pipelines.py [--runs 5] [--threads 2] [--work /tmp/edgesam-bench]
                                           [--checkpoint assets/demo_vit_t.pt | --random]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def build(work: Path, checkpoint: Path | None) -> tuple[Path, Path, Path, Path, Path]:
    """edgesam's lowres bundles (reference and folded decoder graph, and the folded one with
    --exact-gelu), the baselines' full bundle and the seed script's plain MNN conversion of its ONNX
    files. The baselines get the reference graph, the one samexporter-style exports produce."""
    import hashlib
    import importlib.util

    from edgesam.convert import code_fingerprint
    from edgesam.convert.mnn import onnx_to_mnn
    from edgesam.convert.pipeline import ConvertOptions, convert

    bundles = []
    weights = f"{checkpoint.stem}-{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]}" if checkpoint else "random0"
    for variant, graph, gelu, precs in (("lowres", "reference", "fused", ("fp32",)),
                                        ("lowres", "folded", "fused", ("fp32", "fp16", "int8")),
                                        ("full", "reference", "fused", ("fp32",)),
                                        ("lowres", "folded", "exact", ("fp32",))):
        out = work / f"vit_t-{weights}-{variant}-{graph}-{gelu}-{code_fingerprint()}"
        formats = ("onnx", "mnn")
        if graph == "folded" and gelu == "fused" and importlib.util.find_spec("openvino"):
            formats += ("openvino",)
        if not (out / "manifest.json").exists():
            convert(ConvertOptions(model="vit_t", out=out, random_init=None if checkpoint else 0,
                                   checkpoint=checkpoint, precisions=precs, decoder=variant,
                                   decoder_graph=graph, formats=formats, mnn_gelu=gelu, force=True), log=lambda m: None)
        bundles.append(out)
    seed = work / f"vit_t-{weights}-seed-{code_fingerprint()}"
    if not (seed / "decoder.fp32.mnn").exists():  # the seed script's `mnnconvert -f ONNX` of the same files
        seed.mkdir(parents=True, exist_ok=True)
        for role in ("encoder", "decoder"):
            onnx_to_mnn(bundles[2] / f"{role}.onnx", seed / f"{role}.fp32.mnn", "fp32", rewrite_gelu=False)
    return bundles[0], bundles[1], bundles[2], bundles[3], seed


def make_images(work: Path) -> dict[str, Path]:
    from PIL import Image

    from edgesam.synthetic.scenes import make_scene

    imgs = {}
    for name, (w, h) in {"600x400": (600, 400), "12MP": (4000, 3000)}.items():
        p = work / f"{name}.jpg"
        if not p.exists():
            base = Image.fromarray(make_scene(3, (683, 1024), style="gate").image).resize((w, h), Image.BICUBIC)
            noise = np.random.default_rng(0).normal(0, 4, (h, w, 3))
            Image.fromarray(np.clip(np.asarray(base) + noise, 0, 255).astype(np.uint8)).save(p, quality=92)
        imgs[name] = p
    return imgs


def _timed(owner, fn):
    """``fn`` wrapped so that each call's wall time lands in ``owner.enc_s`` (the encoder alone)."""
    def run(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        owner.enc_s = time.perf_counter() - t
        return out
    return run


class TorchOfficial:
    name = "torch-official"

    def __init__(self, threads: int, checkpoint: Path | None):
        import torch
        from mobile_sam import SamPredictor

        from edgesam.convert.sam_models import model_from_checkpoint, random_model

        torch.set_num_threads(threads)
        self.p = SamPredictor(model_from_checkpoint("vit_t", checkpoint) if checkpoint else random_model("vit_t", 0))
        enc = self.p.model.image_encoder
        enc.forward = _timed(self, enc.forward)  # nn.Module.__call__ looks forward up on the instance

    def embed(self, path: Path):
        from PIL import Image

        self.p.set_image(np.asarray(Image.open(path).convert("RGB")))
        return self.p.original_size

    def decode(self, pt):
        m, s, _ = self.p.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
        return m


def _full_decoder_feeds(emb, pt, size):
    from edgesam.runtime.prompts import sam_transform

    c = sam_transform().apply_coords(np.array([[pt, [0.0, 0.0]]]), size).astype(np.float32)
    c[0, 1] = 0
    return {"image_embeddings": emb, "point_coords": c, "point_labels": np.array([[1, -1]], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(size, np.float32)}


class OrtSamexporter:
    name = "ort-samexporter"

    def __init__(self, full: Path, threads: int):
        import onnxruntime as ort

        # samexporter opens its sessions with ONNX Runtime's defaults; only the thread count is pinned.
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.enc = ort.InferenceSession(str(full / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.dec = ort.InferenceSession(str(full / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.enc.run = _timed(self, self.enc.run)

    def embed(self, path: Path):
        from PIL import Image

        from edgesam.runtime.prompts import preprocess_shape
        from edgesam.specs import PIXEL_MEAN, PIXEL_STD

        img = Image.open(path).convert("RGB")
        w, h = img.size
        nh, nw = preprocess_shape(h, w, 1024)
        x = (np.asarray(img.resize((nw, nh), Image.BILINEAR), np.float32) - PIXEL_MEAN) / PIXEL_STD
        inp = np.zeros((1, 3, 1024, 1024), np.float32)
        inp[0, :, :nh, :nw] = x.transpose(2, 0, 1)
        self.emb, self.size = self.enc.run(None, {"image": inp})[0], (h, w)
        return self.size

    def decode(self, pt):
        _, masks = self.dec.run(["iou_predictions", "masks"], _full_decoder_feeds(self.emb, pt, self.size))
        return masks[0, 1:] > 0


class MnnSeed:
    name = "mnn-seed"

    def __init__(self, seed: Path, threads: int):
        from edgesam.runtime.backends import MNNBackend
        from edgesam.specs import DECODER_INPUTS

        self.enc = MNNBackend(seed / "encoder.fp32.mnn", ["image"], ["image_embeddings"], "high", threads)
        self.dec = MNNBackend(seed / "decoder.fp32.mnn", [*DECODER_INPUTS, "orig_im_size"],
                              ["iou_predictions", "masks"], "high", threads)
        self.enc.run = _timed(self, self.enc.run)

    def embed(self, path: Path):
        import MNN.cv as cv

        from edgesam.runtime.prompts import preprocess_shape
        from edgesam.specs import PIXEL_MEAN, PIXEL_STD

        img = cv.imread(str(path))
        h, w = img.shape[:2]
        nh, nw = preprocess_shape(h, w, 1024)
        x = cv.resize(img, (nw, nh), 0.0, 0.0, cv.INTER_LINEAR, cv.COLOR_BGR2RGB, list(PIXEL_MEAN),
                      [1 / s for s in PIXEL_STD])
        inp = np.zeros((1, 3, 1024, 1024), np.float32)
        inp[0, :, :nh, :nw] = np.asarray(x.read()).reshape(nh, nw, 3).transpose(2, 0, 1)
        self.emb, self.size = self.enc.run({"image": inp})["image_embeddings"], (h, w)
        return self.size

    def decode(self, pt):
        out = self.dec.run(_full_decoder_feeds(self.emb, pt, self.size))
        return out["masks"][0, 1:] > 0


class Edgesam:
    name = "edgesam"

    def __init__(self, lowres: Path, threads: int, backend: str = "mnn", tag: str = "", precision: str = "fp32",
                 int8_compute: str = "auto"):
        from edgesam.runtime import SamPredictor

        self.name = "edgesam" + tag + ("" if backend == "mnn" else f"-{backend}")
        self.p = SamPredictor(lowres, backend=backend, precision=precision, threads=threads, int8_compute=int8_compute)
        self.p.encoder.run = _timed(self, self.p.encoder.run)

    def embed(self, path: Path):
        self.p.set_image_file(path)
        return self.p.original_size

    def decode(self, pt):
        m, s, _ = self.p.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
        return m


# Further prompts after the first mask, as fractions of (width, height); each is timed on its own.
MORE_PROMPTS = ((0.6, 0.3), (0.45, 0.45), (0.2, 0.25), (0.75, 0.7), (0.5, 0.85))


def _time_once(p, path: Path) -> tuple[float, float, float, np.ndarray]:
    """Image -> first mask, then the median decode + postprocess of the further prompts (seconds);
    the encoder's own time in that first step; the first masks (3 x H x W bool).
    One prompt per turn was too noisy: that column moved by 0.06 in ratio between two runs of the same code."""
    t0 = time.perf_counter()
    h, w = p.embed(path)
    masks = p.decode([w * 0.3, h * 0.6])
    t1 = time.perf_counter()
    assert masks.shape == (3, h, w), (p.name, masks.shape)
    each = []
    for fx, fy in MORE_PROMPTS:
        t2 = time.perf_counter()
        p.decode([w * fx, h * fy])
        each.append(time.perf_counter() - t2)
    return t1 - t0, statistics.median(each), p.enc_s, masks


def memory_mb(field: str = "VmHWM") -> float:
    """A memory figure of this process from /proc/self/status, in MB: ``VmHWM`` (peak resident,
    which exec resets, unlike getrusage's ru_maxrss, which a spawned worker inherits from its parent,
    a conversion's peak included) or ``VmRSS`` (resident now)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _serve(conn, cls_name: str, args: tuple) -> None:
    """Worker process: build one pipeline, then time it on each (image path, want the masks) the parent
    sends; each reply carries the process's peak RSS so far (``memory_mb``)."""
    pipe = globals()[cls_name](*args)
    conn.send(pipe.name)
    for path, want_masks in iter(conn.recv, None):
        first, dec, enc, masks = _time_once(pipe, path)
        conn.send((first, dec, enc, memory_mb(), (masks.shape, np.packbits(masks)) if want_masks else None))


def _unpack(packed) -> np.ndarray:
    shape, bits = packed
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from edgesam.runtime.maskstats import mask_iou

    return mask_iou(a, b)


def start_workers(serve, specs: list) -> list:
    """One process per pipeline (spawned: no framework's thread pool or allocator state carries over
    into another pipeline's turn; torch's OpenMP threads keep spinning for a few ms after each call).
    ``serve(conn, cls_name, args)`` builds the pipeline and answers timing requests."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    workers = []
    for cls_name, args in specs:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(child, cls_name, args), daemon=True)
        proc.start()
        workers.append((parent.recv(), parent, proc))
    return workers


def interleave(workers: list, images: dict, runs: int, settle: float) -> tuple[dict, dict, dict, dict]:
    """Time every worker on every image, rep by rep, one at a time after ``settle`` s of idle, in a new
    random order each turn. Rep 0 is the warm-up; it returns the first masks and the RSS after the
    first image. Returns (times[(name, image, stage)], rss after the first image, peak rss, masks)."""
    import random

    order = random.Random(0)
    times = {(name, img, stage): [] for name, _, _ in workers for img in images for stage in ("first", "decode", "enc")}
    rss_small, rss_peak, masks = {}, {}, {}
    for rep in range(runs + 1):
        for img, path in images.items():
            for name, conn, _ in order.sample(workers, len(workers)):
                time.sleep(settle)
                conn.send((path, rep == 0))
                first, dec, enc, rss, packed = conn.recv()
                rss_peak[name] = rss
                if rep == 0:
                    masks[(name, img)] = _unpack(packed)
                    rss_small.setdefault(name, rss)
                else:
                    times[(name, img, "first")].append(first)
                    times[(name, img, "decode")].append(dec)
                    times[(name, img, "enc")].append(enc)
        print(f"rep {rep}/{runs} done", flush=True)
    for _, conn, proc in workers:
        conn.send(None)
        proc.join()
    return times, rss_small, rss_peak, masks


def main() -> None:
    from edgesam.measure.bench import matmul_peak

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/edgesam-bench")
    ap.add_argument("--checkpoint", type=Path, default=Path(__file__).resolve().parent.parent / "assets" / "demo_vit_t.pt")
    ap.add_argument("--random", action="store_true", help="seeded random weights instead of --checkpoint")
    ap.add_argument("--with-reference", action="store_true",
                    help="also edgesam on the reference decoder graph (ORT and MNN rows)")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds of idle between two pipelines' turns (lets spinning thread pools park)")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = None if a.random else a.checkpoint
    lowres, folded, full, exact, seed = build(work, checkpoint)
    images = make_images(work)
    t = a.threads
    specs = [("TorchOfficial", (t, checkpoint)), ("OrtSamexporter", (full, t)), ("MnnSeed", (seed, t)),
             ("Edgesam", (folded, t, "ort")), ("Edgesam", (folded, t, "mnn")),
             ("Edgesam", (folded, t, "mnn", "-fp16", "fp16")), ("Edgesam", (folded, t, "mnn", "-int8", "int8")),
             ("Edgesam", (folded, t, "mnn", "-int8-i8", "int8", "on")), ("Edgesam", (exact, t, "mnn", "-exact-gelu"))]
    if any(p.name.endswith(".xml") for p in folded.iterdir()):
        specs.insert(4, ("Edgesam", (folded, t, "openvino")))
    if a.with_reference:
        specs += [("Edgesam", (lowres, t, "ort", "-reference")), ("Edgesam", (lowres, t, "mnn", "-reference"))]
    workers = start_workers(_serve, specs)
    if json.loads((folded / "manifest.json").read_text()).get("untrained"):
        print("edgesam bundles: UNTRAINED (random) weights")
    times, rss_small, rss_peak, masks = interleave(workers, images, a.runs, a.settle)
    peak = matmul_peak(t)
    flops = json.loads((folded / "manifest.json").read_text())["flops"]["encoder"]
    print(f"\nmedian of {a.runs} interleaved runs, {t} threads, vit_t, one process per pipeline. Ratios: pipeline / "
          f"ort-samexporter (/ort) and / mnn-seed (/seed). Encoder alone: GFLOP/s of {flops / 1e9:.1f} GFLOP and its "
          f"share of numpy's matmul peak ({peak:.0f} GFLOP/s at {t} threads). RSS: the process's peak after loading "
          "and the 600x400 image (and after the 12 MP one). IoU: the first point's 3 masks against edgesam (MNN fp32)'s, "
          "the lowest of the 3.")
    print(f"{'image':<8} {'pipeline':<20} {'1st mask':>9} {'/ort':>6} {'/seed':>6} {'dec+post':>9} {'/ort':>6} "
          f"{'/seed':>6} {'encoder':>8} {'GF/s':>5} {'peak':>5} {'RSS MB':>11} {'IoU':>6}")
    for img in images:
        med = {k: statistics.median(v) for k, v in times.items() if k[1] == img}
        ref = masks[("edgesam", img)]
        for name, _, _ in workers:
            f, d, e = med[(name, img, "first")], med[(name, img, "decode")], med[(name, img, "enc")]
            iou = min(_iou(x, y) for x, y in zip(masks[(name, img)], ref))
            print(f"{img:<8} {name:<20} {f * 1e3:6.0f} ms {f / med[('ort-samexporter', img, 'first')]:6.3f} "
                  f"{f / med[('mnn-seed', img, 'first')]:6.3f} {d * 1e3:6.1f} ms "
                  f"{d / med[('ort-samexporter', img, 'decode')]:6.3f} {d / med[('mnn-seed', img, 'decode')]:6.3f} "
                  f"{e * 1e3:5.0f} ms {flops / e / 1e9:5.0f} {flops / e / 1e9 / peak:5.2f} "
                  f"{rss_small[name]:5.0f}/{rss_peak[name]:<5.0f} {iou:6.4f}")


if __name__ == "__main__":
    main()
