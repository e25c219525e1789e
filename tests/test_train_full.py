"""training/train_full.py, the end-to-end trainer (CPU or GPU), on the CPU:
it trains every parameter, writes what the official loader reads, resumes, and refuses bad flags."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "training" / "train_full.py"
TINY = ["--device", "cpu", "--steps", "1", "--batch", "1", "--prompts", "2", "--workers", "0", "--log-every", "1"]


def _run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_one_step_trains_every_part_and_resumes(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("mobile_sam")
    out = tmp_path / "m.pt"
    p = _run(*TINY, "--out", out, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    shipped = torch.load(REPO / "assets" / "demo_vit_t.pt", weights_only=True)
    sd = torch.load(out, weights_only=True)  # a plain fp16 state_dict
    assert set(sd) == set(shipped) and all(v.dtype == torch.float16 for v in sd.values())
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in sd.items()
               if v.is_floating_point() and not torch.equal(v, shipped[k])}
    # the trunk moved too, not only the neck and the decoder
    assert {"image_encoder.patch_embed", "image_encoder.layers", "image_encoder.neck",
            "mask_decoder.transformer", "prompt_encoder.point_embeddings"} <= changed, changed
    from edgesam.convert.sam_models import build_model

    build_model("vit_t").load_state_dict({k: v.float() for k, v in sd.items()})  # the official modules load it
    log = (tmp_path / "m.pt.log").read_text()
    assert log.startswith("$ ") and "--steps 1" in log.splitlines()[0] and "step 1 " in log

    p = _run(*TINY, "--resume", tmp_path / "m.pt.state", "--out", out, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from" in p.stdout and "step 2 " in p.stdout
    assert torch.load(tmp_path / "m.pt.state", weights_only=True)["step"] == 2


def test_crop_step_trains_the_trunk_at_crop_scale(tmp_path):
    """--crop: the trunk, neck and decoder run on a 448-px window-aligned crop, and all of them learn."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("mobile_sam")
    out = tmp_path / "c.pt"
    p = _run(*TINY, "--crop", "448", "--full-frac", "0", "--out", out, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "grid 28 " in p.stdout  # 448 px = 28 tokens, not the full 64
    shipped = torch.load(REPO / "assets" / "demo_vit_t.pt", weights_only=True)
    sd = torch.load(out, weights_only=True)
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in sd.items()
               if v.is_floating_point() and not torch.equal(v, shipped[k])}
    assert {"image_encoder.patch_embed", "image_encoder.layers", "image_encoder.neck",
            "mask_decoder.transformer"} <= changed, changed


def test_crop_window_keeps_the_objects_the_crop_sees():
    import numpy as np

    sys.path.insert(0, str(REPO))
    from training.train_full import crop_window

    t = np.zeros((3, 256, 256), bool)
    t[0, 10:20, 10:20] = True      # inside a 28-token crop at the origin (0..112 low-res px)
    t[1, 200:220, 200:220] = True  # outside it
    t[2, 110:130, 50:60] = True    # 2 rows of it inside: 20 pixels
    w = crop_window(t, (0, 0), 28, 8)
    assert w.shape == (2, 112, 112) and w[0].sum() == 100 and w[1].sum() == 20
    assert crop_window(t, (0, 0), 28, 1).shape[0] == 1
    assert crop_window(t, (0, 0), 28, 8, min_pixels=21).shape[0] == 1


def test_dithered_resize_is_the_official_resize_within_one_grey_level():
    """The dither moves pixels by at most one grey level from the official resize, and moves some (the
    difference another resize's rounding makes), at the official output size; its share of scenes is
    what --dither asks for."""
    import numpy as np

    pytest.importorskip("mobile_sam")
    sys.path.insert(0, str(REPO))
    from mobile_sam.utils.transforms import ResizeLongestSide

    from edgesam.synthetic.scenes import make_scene
    from training.train_full import dithered_resize, scene_item

    image = make_scene(3).image
    ref = ResizeLongestSide(1024).apply_image(image)
    got = dithered_resize(image, np.random.default_rng(0))
    diff = np.abs(got.astype(int) - ref)
    assert got.shape == ref.shape and got.dtype == np.uint8
    assert diff.max() == 1 and 0.05 < (diff > 0).mean() < 0.6
    assert (dithered_resize(image, np.random.default_rng(1)) != got).mean() > 0.05  # random, not a fixed rounding
    assert all((scene_item(s, 2)["image"] == ResizeLongestSide(1024).apply_image(make_scene(s).image)).all()
               for s in range(3))
    assert sum((scene_item(s, 2, 1.0)["image"] != ResizeLongestSide(1024).apply_image(make_scene(s).image)).any()
               for s in range(3)) == 3
    # --noise: grain before the resize, so the image moves by more than the dither's one level; the
    # twin (--consistency) is a second rendering of the same grainy scene
    grainy = scene_item(0, 2, 0.0, "dither", 8.0)
    plain = ResizeLongestSide(1024).apply_image(make_scene(0).image).astype(int)
    assert np.abs(grainy["image"].astype(int) - plain).max() > 1
    assert np.abs(grainy["twin"].astype(int) - grainy["image"]).max() == 1


def test_runtime_twin_and_blocky_scenes():
    """--twin runtime is the runtime's own resize of the same source (what edgesam's predictor feeds the
    encoder, before the normalisation): the official size, within a grey level or two of PIL's and not
    equal to it. --blocky scenes are enlarged from a smaller drawing: image and targets both blocky."""
    import numpy as np

    pytest.importorskip("mobile_sam")
    sys.path.insert(0, str(REPO))
    from edgesam.runtime.preprocess import SAM_PREPROCESS, preprocess
    from edgesam.synthetic.scenes import make_scene
    from training.train_full import blocky_scene, runtime_resize, scene_item

    item = scene_item(5, 2, 0.0, "runtime")
    assert item["twin"].shape == item["image"].shape and item["twin"].dtype == np.float32
    diff = np.abs(item["twin"] - item["image"])
    assert diff.max() < 2.5 and (diff > 0.5).mean() > 0.01
    # the same pixels the runtime normalises: its encoder input, undone
    source = make_scene(5).image
    x = preprocess(source, SAM_PREPROCESS)[0][0].transpose(1, 2, 0)
    h, w = item["image"].shape[:2]
    undone = x[:h, :w] * np.array(SAM_PREPROCESS.pixel_std) + np.array(SAM_PREPROCESS.pixel_mean)
    assert np.abs(undone - runtime_resize(source)).max() < 1e-3

    sc, plain = blocky_scene(7), make_scene(7)
    assert sc.image.shape == plain.image.shape and sc.masks.shape[1:] == plain.image.shape[:2]
    rows = sc.image[1:] != sc.image[:-1]  # an enlarged image changes between rows only at block edges
    assert rows.any(axis=(1, 2)).mean() < 0.55
    assert len(sc.masks) > 0 and all((m[1:] != m[:-1]).any(1).mean() < 0.55 for m in sc.masks)
    blocky = scene_item(7, 2, blocky=1.0)
    assert (blocky["targets"].shape[1:] == (256, 256)) and not np.array_equal(blocky["image"], scene_item(7, 2)["image"])


def test_input_noise_gap_measures_the_inference_embedding_and_trains_it():
    """Nothing (up to 1e-6) for the same input; for a changed input, the mean of the worst positions' RMS change over
    the largest clean value, measured in eval mode (a BatchNorm on its running statistics, as
    exported), with a gradient to the weights; the encoder's mode is restored."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(REPO))
    from training.common import input_noise_gap

    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)).train()
    enc[1].running_var.fill_(1e-4)  # a tiny running spread: eval mode amplifies, train mode would not
    x = torch.randn(1, 3, 16, 16)
    x2 = x.clone()
    x2[0, 0, 5, 5] += 0.01
    assert float(input_noise_gap(enc, x, x).detach()) < 1e-5 and enc.training
    gap = input_noise_gap(enc, x, x2, top=1 / 256)
    with torch.no_grad():
        enc.eval()
        a, b = enc(x), enc(x2)
        enc.train()
    want = ((b - a).pow(2).mean(1).flatten().max().sqrt() / a.abs().max())
    assert abs(float(gap.detach()) - float(want)) < 1e-6 * max(1.0, float(want)) and float(gap.detach()) > 0
    gap.backward()
    assert enc[0].weight.grad is not None and float(enc[0].weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("args,msg", [
    (["--device", "tpu"], "--device tpu"),
    (["--batch", "0"], "--batch must be positive"),
    (["--init", "imagenet"], "--init imagenet"),
    (["--resume", "missing.state"], "no such file"),
    (["--crop", "500"], "--crop 500"),
    (["--amp", "fp8"], "--amp fp8"),
    (["--full-frac", "2"], "--full-frac 2"),
    (["--dither", "-0.5"], "--dither -0.5"),
    (["--noise", "100"], "--noise 100"),
    (["--twin", "mirror"], "--twin mirror"),
    (["--blocky", "1.5"], "--blocky 1.5"),
    (["--consistency", "1", "--consistency-every", "0"], "--consistency must be >= 0"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, msg):
    pytest.importorskip("torch")
    p = _run(*args, "--out", tmp_path / "m.pt", cwd=tmp_path)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the log


def test_cuda_asked_for_where_there_is_none(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    p = _run("--device", "cuda", "--out", tmp_path / "m.pt", cwd=tmp_path)
    assert p.returncode == 2 and "no CUDA device" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
