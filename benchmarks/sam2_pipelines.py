"""Side-by-side latency of SAM 2.1 pipelines on the same weights and images (the targets set for SAM 2).

  torch-official   sam2.SAM2ImagePredictor (torch; SAM2Transforms, torch encoder/decoder/postprocess)
  ort-samexporter  as samexporter's SAM 2 runtime does it: cv2.resize to 1024x1024 + numpy normalise,
                   ONNX Runtime sessions with default options (but --threads) on encoder.onnx and
                   decoder.onnx of a bundle with the official decoder graph (--decoder-graph reference,
                   what a samexporter-style export has), every multimask logit map cv2.resize'd
  edgesam          edgesam.runtime.SAM2ImagePredictor on MNN fp32 files (and -fp16, -int8, -ort,
                   -openvino rows: the same bundle on the other files and backends)

Every pipeline embeds the image from its file and decodes one foreground point with multimask output
at the original size (image -> first mask); then five more points, each timed alone (decode + post:
their median). One process per pipeline, one at a time, in a new random order each turn; medians
with ratios against ort-samexporter, the encoder alone, the peak RSS and the first masks' IoU against
edgesam MNN fp32's. Weights: seeded random sam2.1_hiera_t, or --checkpoint (an official sam2.1_hiera_tiny.pt).

  .venv/bin/python benchmarks/sam2_pipelines.py [--runs 5] [--threads 2] [--work /tmp/edgesam-bench]
                                                [--checkpoint sam2.1_hiera_tiny.pt]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipelines import MORE_PROMPTS, _iou, _timed, interleave, make_images, memory_mb, start_workers  # noqa: E402

MODEL = "sam2.1_hiera_t"


def build(work: Path, checkpoint: Path | None, graph: str = "folded") -> Path:
    """edgesam's bundle (the default, folded decoder graph; ONNX, MNN, OpenVINO), or with ``graph``
    "reference" an ONNX-only bundle with the official step-by-step decoder: the graph a
    samexporter-style export has, which the ort-samexporter baseline runs."""
    import hashlib

    from edgesam.convert import code_fingerprint
    from edgesam.convert.pipeline import ConvertOptions, convert

    weights = f"{checkpoint.stem}-{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]}" if checkpoint else "random0"
    out = work / f"{MODEL}-{weights}-{graph}-{code_fingerprint()}"
    formats = ("onnx", "mnn", "openvino") if graph == "folded" else ("onnx",)
    if not (out / "manifest.json").exists():
        convert(ConvertOptions(model=MODEL, out=out, checkpoint=checkpoint, random_init=None if checkpoint else 0,
                               formats=formats, decoder_graph=graph, force=True), log=lambda m: None)
    return out


class TorchOfficial:
    name = "torch-official"

    def __init__(self, threads: int, checkpoint: Path | None):
        import torch
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from edgesam.convert.sam2_family import Sam2Family

        torch.set_num_threads(threads)
        fam = Sam2Family()
        model = fam.build(MODEL, checkpoint=checkpoint) if checkpoint else fam.build(MODEL, seed=0)
        self.p = SAM2ImagePredictor(model)
        model.forward_image = _timed(self, model.forward_image)

    def embed(self, path: Path):
        import torch
        from PIL import Image

        with torch.no_grad():
            self.p.set_image(np.asarray(Image.open(path).convert("RGB")))
        return self.p._orig_hw[0]

    def decode(self, pt):
        import torch

        with torch.no_grad():
            m, _, _ = self.p.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
        return m > 0.5


class OrtSamexporter:
    name = "ort-samexporter"

    def __init__(self, bundle: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.enc = ort.InferenceSession(str(bundle / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.dec = ort.InferenceSession(str(bundle / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])

    def embed(self, path: Path):
        import cv2

        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        self.size = img.shape[:2]
        x = (cv2.resize(img, (1024, 1024)) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        t = time.perf_counter()
        f0, f1, emb = self.enc.run(None, {"image": x.transpose(2, 0, 1)[None].astype(np.float32)})
        self.enc_s = time.perf_counter() - t
        self.feats = {"image_embed": emb, "high_res_feats_0": f0, "high_res_feats_1": f1}
        return self.size

    def decode(self, pt):
        import cv2

        h, w = self.size
        coords = np.array([[[pt[0] / w * 1024, pt[1] / h * 1024]]], np.float32)
        masks, _ = self.dec.run(None, {**self.feats, "point_coords": coords, "point_labels": np.ones((1, 1), np.float32),
                                       "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                                       "has_mask_input": np.zeros((1,), np.float32)})
        return np.stack([cv2.resize(m, (w, h)) for m in masks[0, 1:]]) > 0


class Edgesam:
    name = "edgesam"

    def __init__(self, bundle: Path, threads: int, backend: str = "mnn", precision: str = "fp32"):
        from edgesam.runtime import SAM2ImagePredictor

        self.name = "edgesam" + ("" if precision == "fp32" else f"-{precision}") + \
            ("" if backend == "mnn" else f"-{backend}")
        self.p = SAM2ImagePredictor(bundle, backend=backend, precision=precision, threads=threads)
        self.p.encoder.run = _timed(self, self.p.encoder.run)

    def embed(self, path: Path):
        self.p.set_image_file(path)
        return self.p.original_size

    def decode(self, pt):
        m, _, _ = self.p.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
        return m > 0.5


def _serve(conn, cls_name: str, args: tuple) -> None:
    pipe = globals()[cls_name](*args)
    conn.send(pipe.name)
    for path, want_masks in iter(conn.recv, None):
        t0 = time.perf_counter()
        h, w = pipe.embed(path)
        masks = pipe.decode([w * 0.3, h * 0.6])
        first = time.perf_counter() - t0
        each = []
        for fx, fy in MORE_PROMPTS:
            t = time.perf_counter()
            pipe.decode([w * fx, h * fy])
            each.append(time.perf_counter() - t)
        conn.send((first, statistics.median(each), pipe.enc_s, memory_mb(),
                   (masks.shape, np.packbits(masks)) if want_masks else None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/edgesam-bench")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--settle", type=float, default=0.3)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle, official_graph = build(work, a.checkpoint), build(work, a.checkpoint, "reference")
    images = make_images(work)
    t = a.threads
    specs = [("TorchOfficial", (t, a.checkpoint)), ("OrtSamexporter", (official_graph, t)), ("Edgesam", (bundle, t)),
             ("Edgesam", (bundle, t, "mnn", "fp16")), ("Edgesam", (bundle, t, "mnn", "int8")),
             ("Edgesam", (bundle, t, "ort")), ("Edgesam", (bundle, t, "openvino"))]
    workers = start_workers(_serve, specs)
    times, _, rss, masks = interleave(workers, images, a.runs, a.settle)
    untrained = json.loads((bundle / "manifest.json").read_text()).get("untrained")
    print(f"\n{MODEL}{' (UNTRAINED random weights)' if untrained else ''}: median of {a.runs} interleaved runs, "
          f"{t} threads, one process per pipeline; ratios against ort-samexporter; IoU: the first point's 3 masks "
          "against edgesam (MNN fp32)'s, the lowest")
    print(f"{'image':<8} {'pipeline':<22} {'1st mask':>9} {'ratio':>6} {'dec+post':>9} {'ratio':>6} "
          f"{'encoder':>8} {'peak RSS':>9} {'IoU':>6}")
    for img in images:
        med = {k: statistics.median(v) for k, v in times.items() if k[1] == img}
        ref = masks[("edgesam", img)]
        for name, _, _ in workers:
            f, d, e = med[(name, img, "first")], med[(name, img, "decode")], med[(name, img, "enc")]
            iou = min(_iou(x, y) for x, y in zip(masks[(name, img)], ref))
            print(f"{img:<8} {name:<22} {f * 1e3:6.0f} ms {f / med[('ort-samexporter', img, 'first')]:6.3f} "
                  f"{d * 1e3:6.1f} ms {d / med[('ort-samexporter', img, 'decode')]:6.3f} {e * 1e3:5.0f} ms "
                  f"{rss[name]:6.0f} MB {iou:6.4f}")


if __name__ == "__main__":
    main()
