"""Side-by-side latency of four SAM pipelines on the same weights and images (issue 3's targets).

  torch-official  mobile_sam.SamPredictor (PIL resize, torch encoder/decoder/postprocess)
  ort-samexporter PIL resize + numpy normalise, ONNX Runtime encoder, *full* decoder (orig_im_size -> masks),
                  sessions with ONNX Runtime's default options (as samexporter opens them) but --threads
  mnn-sample      MNN.cv resize with mean/norm folded in, MNN modules, *full* decoder (orig_im_size -> masks)
                  (both on the reference decoder graph, as samexporter-style exports have it)
  edgesam         edgesam.runtime.SamPredictor on MNN, default bundle (folded decoder graph, lowres
                  decoder + the runtime's exact upscale)
  edgesam-ort     the same bundle on ONNX Runtime
  edgesam-openvino  the same on OpenVINO (fp32 IR; x86 hosts; only if openvino is installed)
  edgesam-reference, edgesam-reference-ort  a bundle with the official step-by-step decoder graph
                  (--decoder-graph reference)
Every pipeline embeds the image from its file, then decodes one foreground point with
multimask output and thresholds at the original size (image -> first mask); then five more points,
each timed alone (decode + post: their median). Each pipeline lives in its own process,
and only one works at a time. Runs are interleaved (rep by rep, pipeline by pipeline, in a new
random order each turn) so machine drift hits all alike; medians are reported with ratios
against the ONNX Runtime pipeline written as samexporter's is (issue 3's baseline). The weights are the trained demo model by default, so that masks have the
shape of real ones (the thresholded upscale's cost depends on the mask's boundary). Needs the
convert extra (torch, onnxruntime; openvino for its row). Usage:

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


def build(work: Path, checkpoint: Path | None) -> tuple[Path, Path, Path]:
    """edgesam's lowres bundles (reference and folded decoder graph) and the baselines' full bundle. The
    baselines get the reference graph, the one samexporter-style exports produce."""
    import importlib.util

    from edgesam.convert import code_fingerprint
    from edgesam.convert.pipeline import ConvertOptions, convert

    bundles = []
    import hashlib

    weights = f"{checkpoint.stem}-{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]}" if checkpoint else "random0"
    for variant, graph in (("lowres", "reference"), ("lowres", "folded"), ("full", "reference")):
        out = work / f"vit_t-{weights}-{variant}-{graph}-{code_fingerprint()}"
        manifest = out / "manifest.json"
        formats = ("onnx", "mnn")
        if graph == "folded" and importlib.util.find_spec("openvino"):
            formats += ("openvino",)
        if not manifest.exists() or json.loads(manifest.read_text())["decoder"].get("graph") != graph:
            convert(ConvertOptions(model="vit_t", out=out, random_init=None if checkpoint else 0,
                                   checkpoint=checkpoint, precisions=("fp32",), decoder=variant,
                                   decoder_graph=graph, formats=formats, force=True), log=lambda m: None)
        bundles.append(out)
    return bundles[0], bundles[1], bundles[2]


def make_images(work: Path) -> dict[str, Path]:
    from PIL import Image

    from edgesam.runtime.synthetic import scene

    imgs = {}
    for name, (w, h) in {"600x400": (600, 400), "12MP": (4000, 3000)}.items():
        p = work / f"{name}.jpg"
        if not p.exists():
            base = Image.fromarray(scene(683, 1024, seed=3)).resize((w, h), Image.BICUBIC)
            noise = np.random.default_rng(0).normal(0, 4, (h, w, 3))
            Image.fromarray(np.clip(np.asarray(base) + noise, 0, 255).astype(np.uint8)).save(p, quality=92)
        imgs[name] = p
    return imgs


class TorchOfficial:
    name = "torch-official"

    def __init__(self, threads: int, checkpoint: Path | None):
        import torch
        from mobile_sam import SamPredictor

        from edgesam.convert.models import model_from_checkpoint, random_model

        torch.set_num_threads(threads)
        self.p = SamPredictor(model_from_checkpoint("vit_t", checkpoint) if checkpoint else random_model("vit_t", 0))

    def embed(self, path: Path):
        from PIL import Image

        self.p.set_image(np.asarray(Image.open(path).convert("RGB")))
        return self.p.original_size

    def decode(self, pt):
        m, s, _ = self.p.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
        return m


def _full_decoder_feeds(emb, pt, size):
    from edgesam.runtime.prompts import apply_coords

    c = apply_coords(np.array([[pt, [0.0, 0.0]]]), size).astype(np.float32)
    c[0, 1] = 0
    return {"image_embeddings": emb, "point_coords": c, "point_labels": np.array([[1, -1]], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(size, np.int32)}


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

    def embed(self, path: Path):
        from PIL import Image

        from edgesam.runtime.prompts import preprocess_shape
        from edgesam.specs import PIXEL_MEAN, PIXEL_STD

        img = Image.open(path).convert("RGB")
        w, h = img.size
        nh, nw = preprocess_shape(h, w)
        x = (np.asarray(img.resize((nw, nh), Image.BILINEAR), np.float32) - PIXEL_MEAN) / PIXEL_STD
        inp = np.zeros((1, 3, 1024, 1024), np.float32)
        inp[0, :, :nh, :nw] = x.transpose(2, 0, 1)
        self.emb, self.size = self.enc.run(None, {"image": inp})[0], (h, w)
        return self.size

    def decode(self, pt):
        _, masks = self.dec.run(["iou_predictions", "masks"], _full_decoder_feeds(self.emb, pt, self.size))
        return masks[0, 1:] > 0


class MnnSample:
    name = "mnn-sample"

    def __init__(self, full: Path, threads: int):
        from edgesam.runtime.backends import MNNBackend
        from edgesam.specs import DECODER_INPUTS

        self.enc = MNNBackend(full / "encoder.fp32.mnn", ["image"], ["image_embeddings"], "high", threads)
        self.dec = MNNBackend(full / "decoder.fp32.mnn", [*DECODER_INPUTS, "orig_im_size"],
                              ["iou_predictions", "masks"], "high", threads)

    def embed(self, path: Path):
        import MNN.cv as cv

        from edgesam.runtime.prompts import preprocess_shape
        from edgesam.specs import PIXEL_MEAN, PIXEL_STD

        img = cv.imread(str(path))
        h, w = img.shape[:2]
        nh, nw = preprocess_shape(h, w)
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

    def __init__(self, lowres: Path, threads: int, backend: str = "mnn", tag: str = ""):
        from edgesam.runtime import SamPredictor

        self.name = "edgesam" + tag + ("" if backend == "mnn" else f"-{backend}")
        self.p = SamPredictor(lowres, backend=backend, precision="fp32", threads=threads)

    def embed(self, path: Path):
        self.p.set_image_file(path)
        return self.p.original_size

    def decode(self, pt):
        m, s, _ = self.p.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
        return m


# Further prompts after the first mask, as fractions of (width, height); each is timed on its own.
MORE_PROMPTS = ((0.6, 0.3), (0.45, 0.45), (0.2, 0.25), (0.75, 0.7), (0.5, 0.85))


def _time_once(p, path: Path) -> tuple[float, float]:
    """Image -> first mask, then the median decode + postprocess of the further prompts (seconds).
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
    return t1 - t0, statistics.median(each)


def _serve(conn, cls_name: str, args: tuple) -> None:
    """Worker process: build one pipeline, then time it on each image path the parent sends."""
    pipe = globals()[cls_name](*args)
    conn.send(pipe.name)
    for path in iter(conn.recv, None):
        conn.send(_time_once(pipe, path))


def main() -> None:
    import multiprocessing as mp
    import random

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/edgesam-bench")
    ap.add_argument("--checkpoint", type=Path, default=Path(__file__).resolve().parent.parent / "assets" / "demo_vit_t.pt")
    ap.add_argument("--random", action="store_true", help="seeded random weights instead of --checkpoint")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds of idle between two pipelines' turns (lets spinning thread pools park)")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = None if a.random else a.checkpoint
    lowres, folded, full = build(work, checkpoint)
    images = make_images(work)
    specs = [("TorchOfficial", (a.threads, checkpoint)), ("OrtSamexporter", (full, a.threads)),
             ("MnnSample", (full, a.threads)), ("Edgesam", (folded, a.threads, "ort")),
             ("Edgesam", (folded, a.threads, "mnn")), ("Edgesam", (lowres, a.threads, "ort", "-reference")),
             ("Edgesam", (lowres, a.threads, "mnn", "-reference"))]
    if any(p.name.endswith(".xml") for p in folded.iterdir()):
        specs.insert(5, ("Edgesam", (folded, a.threads, "openvino")))
    # One process per pipeline, and only one works at a time after a short idle: no framework's
    # thread pool or allocator state can carry over into another pipeline's turn (torch's OpenMP
    # threads keep spinning for a few ms after each call).
    ctx = mp.get_context("spawn")
    workers = []
    for cls_name, args in specs:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child, cls_name, args), daemon=True)
        proc.start()
        workers.append((parent.recv(), parent, proc))
    if json.loads((folded / "manifest.json").read_text()).get("untrained"):
        print("edgesam bundles: UNTRAINED (random) weights")
    order = random.Random(0)
    times = {(name, img, stage): [] for name, _, _ in workers for img in images for stage in ("first", "decode")}
    for rep in range(a.runs + 1):  # rep 0 is warm-up
        for img, path in images.items():
            for name, conn, _ in order.sample(workers, len(workers)):  # a new order each turn
                time.sleep(a.settle)
                conn.send(path)
                first, dec = conn.recv()
                if rep:
                    times[(name, img, "first")].append(first)
                    times[(name, img, "decode")].append(dec)
        print(f"rep {rep}/{a.runs} done", flush=True)
    for _, conn, proc in workers:
        conn.send(None)
        proc.join()
    print(f"\nmedian of {a.runs} interleaved runs, {a.threads} threads, vit_t fp32, one process per pipeline "
          "(ratios: pipeline / ort-samexporter)")
    print(f"{'image':<8} {'pipeline':<20} {'image->1st mask':>16} {'ratio':>6} {'decode+post':>12} {'ratio':>6}")
    for img in images:
        ref_first = statistics.median(times[("ort-samexporter", img, "first")])
        ref_dec = statistics.median(times[("ort-samexporter", img, "decode")])
        for name, _, _ in workers:
            f = statistics.median(times[(name, img, "first")])
            d = statistics.median(times[(name, img, "decode")])
            print(f"{img:<8} {name:<20} {f * 1e3:13.0f} ms {f / ref_first:6.3f} {d * 1e3:9.0f} ms {d / ref_dec:6.3f}")


if __name__ == "__main__":
    main()
