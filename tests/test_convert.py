"""Converter round trips on vit_t, bad checkpoints, atomicity, no telemetry."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import chunk_sums, one_line_error, run_cli

torch = pytest.importorskip("torch")


def test_bundle_manifest(vit_t_bundle):
    m = json.loads((vit_t_bundle / "manifest.json").read_text())
    assert m["format"] == "edgesam-bundle" and m["version"] == 3 and m["model"] == "vit_t"
    assert m["family"] == "mobilesam" and m["preprocess"]["resize"] == "longest_side"
    assert m["untrained"] is False and m["checkpoint"]["file"] == "demo_vit_t.pt"
    assert m["checkpoint"]["sha256"] == m["source"] and len(m["source"]) == 64
    kinds = {(f["role"], f["format"], f["precision"]) for f in m["files"]}
    for role in ("encoder", "decoder"):
        assert (role, "onnx", "fp32") in kinds
        for p in ("fp32", "fp16", "int8"):
            assert (role, "mnn", p) in kinds
    # Every way the runtime runs a file is gated: ONNX Runtime; each MNN precision in fp32 arithmetic
    # and at runtime precision low; int8 files also in int8 arithmetic (memory mode low). 4 cells each.
    cands = [c["candidate"] for c in m["parity"]["cells"]]
    assert len(cands) == 32  # that the files are right is checked independently: test_files_match_torch
    assert sorted(set(cands)) == ["mnn fp16", "mnn fp16 low", "mnn fp32", "mnn fp32 low", "mnn int8", "mnn int8 i8",
                                  "mnn int8 low", "onnx fp32"]
    # The demo model passes the gate with MNN's fused GELU in every file (nothing fell back to exact).
    assert {f["path"]: f["gelu"] for f in m["files"] if f["format"] == "mnn"} == {
        f"{r}.{p}.mnn": "fused" for r in ("encoder", "decoder") for p in ("fp32", "fp16", "int8")}
    # FLOPs as counted by torch: vit_t encoder ~77.5 GFLOP; decoder ~2.0 GFLOP a prompt in the default
    # folded graph (3.7 in the reference graph, test_folded_decoder.py)
    assert m["decoder"]["graph"] == "folded"
    assert 70e9 < m["flops"]["encoder"] < 85e9
    assert 1.7e9 < m["flops"]["decoder_per_prompt"] < 2.3e9
    enc = next(f for f in m["files"] if f["role"] == "encoder" and f["format"] == "onnx")
    assert enc["inputs"] == {"image": [1, 3, 1024, 1024]} and enc["outputs"] == {"image_embeddings": [1, 256, 64, 64]}
    sizes = {f["path"]: f["bytes"] for f in m["files"]}
    assert sizes["encoder.fp16.mnn"] < 0.6 * sizes["encoder.fp32.mnn"]
    # int8 quantises the encoder's matmul/conv weights (per channel, asymmetric); an int8 bundle stores
    # its decoder in fp16 (convert/mnn.py: weight_storage), which the manifest says
    assert sizes["encoder.int8.mnn"] < 0.3 * sizes["encoder.fp32.mnn"]
    assert sizes["decoder.int8.mnn"] < 0.6 * sizes["decoder.fp32.mnn"]
    weights = {f["path"]: f["weights"] for f in m["files"] if f["format"] == "mnn"}
    assert weights == {"encoder.fp32.mnn": "fp32", "encoder.fp16.mnn": "fp16", "encoder.int8.mnn": "int8",
                       "decoder.fp32.mnn": "fp32", "decoder.fp16.mnn": "fp16", "decoder.int8.mnn": "fp16"}
    # ... and its encoder keeps the patch embedding float (convert/mnn.py: int8_float_layers)
    kept = {f["path"]: f.get("float_layers") for f in m["files"] if f["format"] == "mnn"}
    float_layers = kept.pop("encoder.int8.mnn")  # the two convolutions that read the image
    assert len(float_layers) == 2 and all("patch_embed" in name for name in float_layers), float_layers
    assert set(kept.values()) == {None}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_files_match_torch(vit_t_bundle, vit_t_model, precision):
    """Independent of the gate's own report: each MNN encoder file of the bundle, run here on an image
    the gate never saw (a portrait), against the official torch encoder on the same input, held to
    the precision's tolerance."""
    from edgesam.measure.parity import TOLERANCES
    from edgesam.runtime.backends import MNNBackend
    from edgesam.runtime.preprocess import SAM_PREPROCESS, preprocess
    from edgesam.synthetic.scenes import make_scene

    x, _ = preprocess(make_scene(5, (900, 500), style="sky").image, SAM_PREPROCESS)
    with torch.no_grad():
        want = vit_t_model.image_encoder(torch.from_numpy(x)).numpy()
    got = MNNBackend(vit_t_bundle / f"encoder.{precision}.mnn", ["image"], ["image_embeddings"], arithmetic="high",
                     threads=2).run({"image": x})["image_embeddings"]
    tol = TOLERANCES[precision]
    cos = float((got * want).sum() / np.sqrt((got * got).sum() * (want * want).sum()))
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    assert cos >= tol.cosine and rel <= tol.rel_max, (precision, cos, rel)


def test_info_verifies_bundle(vit_t_bundle):
    p = run_cli("info", vit_t_bundle)
    assert p.returncode == 0, p.stderr
    assert "UNTRAINED" not in p.stdout and "all 8 files verified" in p.stdout


def test_onnx_provenance_and_checker(vit_t_bundle):
    import onnx

    m = onnx.load(str(vit_t_bundle / "decoder.onnx"))
    onnx.checker.check_model(m)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["model"] == "vit_t" and meta["untrained"] == "False"


def test_mnn_decoder_sums_image_keys_in_chunks(vit_t_bundle, vit_t_model, tmp_path):
    """The graph MNN's decoder is converted from adds its token->image attention over the 4096 keys
    in 64 partial sums (MNN's ARM fp16 kernels accumulate in fp16: one long sum moved masks, see
    ChunkedKeyAttention); decoder.onnx, which the other runtimes run, adds them in one product.
    Same function as the official decoder, and the caller's model is not modified."""
    import onnx

    from edgesam.convert.sam_export import AV_CHUNK, DecoderWrapper, dummy_decoder_inputs, export_decoder

    def sums(path):
        return len(chunk_sums(onnx.load(str(path)).graph))

    manifest = json.loads((vit_t_bundle / "manifest.json").read_text())
    assert f"chunks of {AV_CHUNK}" in manifest["decoder"]["mnn_graph"]
    assert sums(vit_t_bundle / "decoder.onnx") == 0
    export_decoder(vit_t_model, tmp_path / "mnn-source.onnx", 17, manifest["decoder"]["graph"], mnn=True)
    assert sums(tmp_path / "mnn-source.onnx") == 3  # two layers' and the final token->image attention
    feeds = [torch.from_numpy(v) for v in dummy_decoder_inputs(3, 4, 1).values()]
    with torch.no_grad():
        chunked, plain = DecoderWrapper(vit_t_model)(*feeds), DecoderWrapper(vit_t_model, av_chunk=0)(*feeds)
    assert type(vit_t_model.mask_decoder.transformer.layers[0].cross_attn_token_to_image).__name__ == "Attention"
    for a, b in zip(chunked, plain):
        assert torch.allclose(a, b, rtol=0, atol=1e-4 * float(b.abs().max()))


def test_random_init_is_marked_untrained_and_matches_torch(vit_t_random_fp32):
    """--random-init builds the seeded random model, says UNTRAINED everywhere, and its ONNX
    encoder computes what torch's random_model does on the same input."""
    from edgesam.convert.sam_models import random_model

    b_dir, p = vit_t_random_fp32
    assert p.returncode == 0, p.stderr[-3000:]
    assert "untrained" in p.stderr.lower()
    m = json.loads((b_dir / "manifest.json").read_text())
    assert m["untrained"] is True and m["checkpoint"]["random_init_seed"] == 0
    assert m["source"] == "random-init:vit_t:0"
    info = run_cli("info", b_dir)
    assert info.returncode == 0 and "UNTRAINED" in info.stdout
    import onnx

    meta = {q.key: q.value for q in onnx.load(str(b_dir / "decoder.onnx")).metadata_props}
    assert meta["untrained"] == "True"
    from edgesam.runtime.backends import ORTBackend

    from edgesam.convert.gate import gate_encoder_input
    from edgesam.synthetic.scenes import make_scene

    # a normalised, padded image, as the runtime feeds
    x = gate_encoder_input(make_scene(3, (500, 700), style="gate").image)
    a = ORTBackend(b_dir / "encoder.onnx").run({"image": x})["image_embeddings"]
    with torch.no_grad():
        b = random_model("vit_t", 0).image_encoder(torch.from_numpy(x)).numpy()
    # fp32 reassociation only (a gap of 1.5e-3 of the range was TinyViT's attention-bias cache left
    # stale by the perturbation: random_model now re-enters eval mode)
    cos = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    assert cos > 0.999999 and np.abs(a - b).max() < 1e-4 * np.abs(b).max()


def test_full_decoder_variant_every_aspect_ratio(vit_t_full_bundle):
    """The full variant's masks match torch's postprocess at sizes unlike the export dummy's."""
    from edgesam.measure.parity import TOLERANCES

    _, m = vit_t_full_bundle
    full = [c for c in m["parity"]["cells"] if c["stage"] == "full_post"]
    assert {c["output"] for c in full} >= {"masks 1500x400", "masks 37x300", "masks 300x2200"}
    assert {c["candidate"] for c in full} == {"onnx fp32", "mnn fp32", "mnn fp32 low", "mnn fp16", "mnn fp16 low",
                                              "mnn int8", "mnn int8 low", "mnn int8 i8"}
    assert all(c["ok"] for c in full)
    assert all(c["mask_iou"] > 0.99 for c in full if c["precision"] == "fp32")
    assert all(c["mask_iou"] >= TOLERANCES[c["precision"]].mask_iou for c in full)
    assert m["decoder"]["variant"] == "full"


def _bad(tmp_path, name, payload):
    p = tmp_path / name
    if isinstance(payload, bytes):
        p.write_bytes(payload)
    else:
        torch.save(payload, p)
    return p


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case,match", [
    ("empty", "empty"),
    ("garbage", "not a readable torch checkpoint"),
    ("truncated", "not a readable torch checkpoint"),
    ("code", "refused by weights_only"),
    ("list", "not a state_dict"),
    ("wrong_family", "looks like vit_t, not vit_b"),
    ("missing_keys", "missing keys"),
    ("unknown", "look like no SAM"),
])
def test_bad_checkpoints_exit_2_and_leave_nothing(tmp_path, vit_t_model, case, match):
    sd = vit_t_model.state_dict()
    if case == "empty":
        ck = _bad(tmp_path, "c.pt", b"")
    elif case == "garbage":
        ck = _bad(tmp_path, "c.pt", b"this is not a checkpoint" * 10)
    elif case == "truncated":
        full = tmp_path / "full.pt"
        torch.save(sd, full)
        ck = _bad(tmp_path, "c.pt", full.read_bytes()[: full.stat().st_size // 2])
    elif case == "code":
        ck = tmp_path / "c.pt"
        ck.write_bytes(pickle.dumps({"w": _Evil()}))
    elif case == "list":
        ck = _bad(tmp_path, "c.pt", [torch.zeros(2)])
    elif case == "missing_keys":
        ck = _bad(tmp_path, "c.pt", {k: v for i, (k, v) in enumerate(sd.items()) if i % 7})
    elif case == "unknown":
        ck = _bad(tmp_path, "c.pt", {"foo.weight": torch.zeros(3)})
    else:
        ck = _bad(tmp_path, "c.pt", sd)
    model = "vit_b" if case == "wrong_family" else "vit_t"
    out = tmp_path / "out"
    p = run_cli("convert", "--model", model, "--checkpoint", ck, "--out", out, "--precision", "fp32")
    line = one_line_error(p)
    assert match in line
    assert "pwned" not in p.stdout + p.stderr
    assert not out.exists()
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".out.tmp")]


STAGES = ["build random", "count FLOPs", "export encoder", "export decoder", "finalise encoder onnx",
          "mnn encoder fp32", "mnn decoder fp32", "parity"]


# The default tier fails the first stage, one MNN stage and the last; the slow tier fails every one.
DEFAULT_TIER_STAGES = {"build random", "mnn decoder fp32", "parity"}


@pytest.mark.parametrize("stage", [s if s in DEFAULT_TIER_STAGES else pytest.param(s, marks=pytest.mark.slow)
                                   for s in STAGES])
def test_failure_in_any_convert_stage_leaves_nothing(tmp_path, monkeypatch, stage):
    """A failure injected at each stage (the earlier stages run for real) leaves no bundle and
    no temporary folder, and surfaces as the typed error."""
    from edgesam.convert import pipeline
    from edgesam.errors import ConversionError

    seen = []
    real_stage = pipeline.Progress.stage

    def stage_or_fail(self, name, fn, *args, **kwargs):
        seen.append(name)
        if name.startswith(stage):
            raise ConversionError(f"injected failure in {name}")
        return real_stage(self, name, fn, *args, **kwargs)

    monkeypatch.setattr(pipeline.Progress, "stage", stage_or_fail)
    with pytest.raises(ConversionError, match="injected"):
        pipeline.convert(pipeline.ConvertOptions(model="vit_t", out=tmp_path / "b", random_init=0,
                                                 precisions=("fp32",)), log=lambda s: None)
    assert any(n.startswith(stage) for n in seen), seen  # the stage exists under that name
    assert list(tmp_path.iterdir()) == []


def _default_sigint() -> None:  # runs in the child before exec
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_mid_convert_leaves_nothing(tmp_path):
    import signal
    import time

    # The child gets SIGINT's default disposition, as from an interactive shell. A suite started
    # in the background by a non-interactive shell (`make test &`) has SIGINT ignored, exec keeps
    # it ignored, and Python then installs no KeyboardInterrupt handler: the child converted to the
    # end and exited 0.
    proc = subprocess.Popen([sys.executable, "-m", "edgesam.cli", "convert", "--model", "vit_t", "--random-init",
                             "0", "--out", str(tmp_path / "b"), "--precision", "fp32"],
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    seen = ""
    deadline = time.time() + 120
    while "[export encoder] done" not in seen and time.time() < deadline:
        seen += proc.stderr.readline()
    for _ in range(5):  # a user presses Ctrl-C again if the first one seems lost
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, (seen + rest)[-1500:]
    assert list(tmp_path.iterdir()) == []


def test_convert_never_imports_mnn_telemetry(tmp_path):
    code = ("import sys; from edgesam.convert.pipeline import ConvertOptions, convert; "
            f"convert(ConvertOptions(model='vit_t', out=r'{tmp_path / 'b'}', random_init=1, precisions=('int8',)), "
            "log=lambda s: None); "
            "print(sorted(m for m in sys.modules if m.startswith('MNN.tools')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_usage_errors(tmp_path):
    one_line_error(run_cli("convert", "--model", "vit_t", "--out", tmp_path / "x"))
    one_line_error(run_cli("convert", "--model", "vit_z", "--random-init", "0", "--out", tmp_path / "x"))
    line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", tmp_path / "x",
                                  "--precision", "fp8"))
    assert "fp8" in line
    assert not (tmp_path / "x").exists()


def test_gelu_is_exact_in_mnn_and_fused_in_ort(tmp_path):
    """MNN's converter fuses torch's exported erf-GELU pattern into an approximate kernel (max abs
    error 4.7e-4 near x = -2.7 on MNN 3.6.1; the trained demo encoder's MNN embedding was 5 % off at
    a few positions because of it). ``onnx_to_mnn`` converts a rewritten copy that MNN keeps exact;
    the ONNX file itself keeps torch's pattern, which ONNX Runtime fuses into one exact Gelu node."""
    import onnx
    import onnxruntime as ort

    from edgesam.convert.sam_export import _export
    from edgesam.convert.mnn import onnx_to_mnn, unfused_gelu
    from edgesam.runtime.backends import MNNBackend

    model = torch.nn.Sequential(torch.nn.GELU(), torch.nn.Sequential(torch.nn.GELU()))
    x = torch.linspace(-8, 8, 4096).reshape(1, 4096)
    want = torch.nn.functional.gelu(torch.nn.functional.gelu(x)).numpy()
    _export(model, (x,), tmp_path / "g.onnx", ["x"], ["y"], None, 17)
    before = (tmp_path / "g.onnx").read_bytes()
    assert unfused_gelu(tmp_path / "g.onnx", tmp_path / "copy.onnx") == 2
    onnx_to_mnn(tmp_path / "g.onnx", tmp_path / "g.mnn", "fp32")
    assert (tmp_path / "g.onnx").read_bytes() == before  # the bundle's ONNX is left as exported
    got = MNNBackend(tmp_path / "g.mnn", ["x"], ["y"], "high", 1).run({"x": x.numpy()})["y"]
    assert np.abs(got - want).max() < 1e-5
    # Without the rewrite MNN would approximate: the check above can fail.
    import shutil

    from edgesam.convert import mnn as mnn_mod

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(tmp_path / "g.onnx", raw / "g.onnx")
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", str(raw / "g.onnx"), "--MNNModel", str(raw / "g.mnn"),
            "--bizCode", "t", "--keepInputFormat"]
    cwd = os.getcwd()
    os.chdir(raw)
    try:
        mnn_mod._run_quiet(argv)
    finally:
        os.chdir(cwd)
    approx = MNNBackend(raw / "g.mnn", ["x"], ["y"], "high", 1).run({"x": x.numpy()})["y"]
    assert np.abs(approx - want).max() > 1e-4
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "Erf" not in ops and ops.count("Gelu") == 2, ops
    assert np.abs(sess.run(None, {"x": x.numpy()})[0] - want).max() < 1e-5


def test_gelu_rewrite_keeps_external_data(tmp_path):
    """vit_h's encoder ONNX is over 2 GiB, so its weights sit in a .data file beside it; the GELU
    rewrite must read them and write its copy the same way (one protobuf cannot hold them)."""
    import onnx

    from edgesam.convert.sam_export import _export
    from edgesam.convert.mnn import onnx_to_mnn, unfused_gelu
    from edgesam.runtime.backends import MNNBackend

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
    x = torch.linspace(-4, 4, 64 * 8).reshape(8, 64)
    _export(model, (x,), tmp_path / "s.onnx", ["x"], ["y"], None, 17)
    m = onnx.load(str(tmp_path / "s.onnx"))
    onnx.save(m, str(tmp_path / "g.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="g.onnx.data", size_threshold=0)
    assert (tmp_path / "g.onnx.data").exists()
    out = tmp_path / "copy" / "c.onnx"
    out.parent.mkdir()
    assert unfused_gelu(tmp_path / "g.onnx", out) == 1
    assert (out.parent / "c.onnx.data").exists()
    onnx_to_mnn(tmp_path / "g.onnx", tmp_path / "g.mnn", "fp32")
    got = MNNBackend(tmp_path / "g.mnn", ["x"], ["y"], "high", 1).run({"x": x.numpy()})["y"]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_gelu_rewrite_once_per_role_and_stray_erf_refused(tmp_path):
    """The pipeline rewrites each role's ONNX once (exact_gelu_source) and converts that copy for every
    precision; the scratch copy is gone afterwards. An Erf outside torch's GELU pattern is refused
    rather than left to MNN's fusion."""
    from edgesam.convert.sam_export import _export
    from edgesam.convert.mnn import exact_gelu_source, onnx_to_mnn, unfused_gelu
    from edgesam.errors import ConversionError
    from edgesam.runtime.backends import MNNBackend

    x = torch.linspace(-8, 8, 1024).reshape(1, 1024)
    _export(torch.nn.GELU(), (x,), tmp_path / "g.onnx", ["x"], ["y"], None, 17)
    with exact_gelu_source(tmp_path / "g.onnx") as src:
        assert src != tmp_path / "g.onnx" and src.exists()
        for prec in ("fp32", "fp16"):
            onnx_to_mnn(src, tmp_path / f"g.{prec}.mnn", prec, rewrite_gelu=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.fp16.mnn", "g.fp32.mnn", "g.onnx"]
    want = torch.nn.functional.gelu(x).numpy()
    got = MNNBackend(tmp_path / "g.fp32.mnn", ["x"], ["y"], "high", 1).run({"x": x.numpy()})["y"]
    assert np.abs(got - want).max() < 1e-5

    class ErfGelu(torch.nn.Module):  # the same function in a form the rewrite does not recognise
        def forward(self, t):
            return t * 0.5 * (1.0 + torch.erf(t * 0.7071067811865476))

    _export(ErfGelu(), (x,), tmp_path / "e.onnx", ["x"], ["y"], None, 17)
    with pytest.raises(ConversionError, match="1 of 1 Erf nodes are not in torch's exact-GELU pattern"):
        unfused_gelu(tmp_path / "e.onnx", tmp_path / "e2.onnx")
    assert not (tmp_path / "e2.onnx").exists()
