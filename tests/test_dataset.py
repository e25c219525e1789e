"""Whole datasets through the CLI: `everything` over a folder with a
corrupt image, per-image outputs equal to the single-image command's, COCO read back by pycocotools,
resuming (after a deleted output and after a killed run), and a COCO file's boxes turned into masks.

The demo model's bundle; generator settings loose enough that it keeps masks on the samples.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, one_line_error, run_cli

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

AMG = ["--points-per-side", "6", "--pred-iou-thresh", "0.2", "--stability-score-thresh", "0.7", "--threads", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    (d / "sub").mkdir()
    shutil.copy(REPO / "assets" / "landscape.png", d / "landscape.png")
    shutil.copy(REPO / "assets" / "portrait.png", d / "sub" / "portrait.png")
    shutil.copy(REPO / "assets" / "panorama.png", d / "sub" / "panorama.png")
    (d / "broken.png").write_bytes((REPO / "assets" / "landscape.png").read_bytes()[:3000])  # truncated
    (d / "notes.txt.bak").write_text("not an image")  # not an image suffix: not an input
    return d


GOOD = ["landscape.png", "sub/panorama.png", "sub/portrait.png"]


def test_coco_file_inside_the_out_folder_it_creates(vit_t_bundle, tmp_path):
    """`--out masks --coco masks/instances.json`: the folder does not exist yet, the run creates it
    and writes the COCO file there (it was refused: "folder masks does not exist")."""
    d = tmp_path / "one"
    d.mkdir()
    shutil.copy(REPO / "assets" / "portrait.png", d / "portrait.png")
    masks = tmp_path / "masks"
    proc = run_cli("everything", vit_t_bundle, d, "--out", masks, "--coco", masks / "instances.json", "--quiet",
                   "--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    coco = COCO(str(masks / "instances.json"))
    assert [im["file_name"] for im in coco.dataset["images"]] == ["portrait.png"]
    assert (masks / "portrait.png.json").is_file()
    # a --coco folder that nothing creates is still refused in one line, before any work
    proc = run_cli("everything", vit_t_bundle, d, "--out", tmp_path / "m2", "--coco", tmp_path / "nowhere" / "c.json")
    assert proc.returncode == 2 and "nowhere" in proc.stderr and not (tmp_path / "m2").exists(), proc.stderr


@pytest.fixture(scope="module")
def first_run(vit_t_bundle, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("everything", vit_t_bundle, folder, "--out", out / "masks", "--coco", out / "coco.json",
                   "--workers", "2", "--quiet", *AMG)
    return out, proc


def test_folder_with_a_corrupt_image(first_run, vit_t_bundle, folder, tmp_path):
    """Exit 1; the good images done, each file exactly the single-image command's records; the
    corrupt one in errors.json and the summary; the COCO file loads in pycocotools, its RLEs decode
    to their areas, its ids are unique."""
    out, proc = first_run
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "3 done now" in proc.stdout and "1 failed" in proc.stdout and "broken.png" in proc.stdout
    errors = json.loads((out / "masks" / "errors.json").read_text())
    assert [e["image"] for e in errors] == ["broken.png"] and "truncated PNG" in errors[0]["error"]
    made = sorted(p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png.json"))
    assert made == [f"{n}.json" for n in GOOD]
    # the same records as `edgesam everything IMAGE --out FILE.json`, image by image
    name = "sub/portrait.png"
    single = run_cli("everything", vit_t_bundle, folder / name, "--out", tmp_path / "one.json", "--quiet", *AMG)
    assert single.returncode == 0, single.stderr[-2000:]
    assert json.loads((out / "masks" / f"{name}.json").read_text()) == json.loads((tmp_path / "one.json").read_text())

    coco = COCO(str(out / "coco.json"))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == GOOD
    anns = coco.dataset["annotations"]
    assert len(anns) == sum(len(json.loads((out / "masks" / f"{n}.json").read_text())) for n in GOOD) > 0
    assert len({a["id"] for a in anns}) == len(anns) and len({im["id"] for im in coco.dataset["images"]}) == 3
    for a in anns:
        im = coco.imgs[a["image_id"]]
        m = mask_utils.decode(a["segmentation"])
        assert m.shape == (im["height"], im["width"]) and int(m.sum()) == a["area"]
        assert {"bbox", "score", "predicted_iou", "stability_score"} <= set(a)
    assert coco.loadRes(anns)  # usable as detection results too


def test_ray_engine_gives_the_same_outputs(first_run, vit_t_bundle, folder, tmp_path):
    """--engine ray (a local Ray, 2 actors each holding the bundle): the same per-image files, errors and
    COCO file as the local engine's 2 processes, and exit 1 for the corrupt image."""
    if not os.environ.get("CI"):  # `make setup` installs the ray extra: in CI a missing Ray fails
        pytest.importorskip("ray.data")
    out, _ = first_run
    proc = run_cli("everything", vit_t_bundle, folder, "--out", tmp_path / "masks", "--coco", tmp_path / "coco.json",
                   "--engine", "ray", "--workers", "2", "--quiet", *AMG)
    assert proc.returncode == 1 and "3 done now" in proc.stdout, proc.stderr[-3000:]
    for n in GOOD:
        assert json.loads((tmp_path / "masks" / f"{n}.json").read_text()) == \
            json.loads((out / "masks" / f"{n}.json").read_text())
    assert json.loads((tmp_path / "masks" / "errors.json").read_text()) == \
        json.loads((out / "masks" / "errors.json").read_text())
    assert json.loads((tmp_path / "coco.json").read_text()) == json.loads((out / "coco.json").read_text())


def test_rerun_recomputes_only_what_is_missing(first_run, vit_t_bundle, folder):
    """Delete one image's output: a rerun makes that one again, leaves the others' files untouched,
    and rebuilds the COCO file without duplicates (the same file as before)."""
    out, _ = first_run
    masks = out / "masks"
    before = {n: (masks / f"{n}.json").stat().st_mtime_ns for n in GOOD}
    coco_before = json.loads((out / "coco.json").read_text())
    gone = masks / "sub" / "panorama.png.json"
    kept = gone.read_text()
    gone.unlink()
    proc = run_cli("everything", vit_t_bundle, folder, "--out", masks, "--coco", out / "coco.json", "--quiet", *AMG)
    assert proc.returncode == 1 and "1 done now, 2 already done, 1 failed" in proc.stdout, proc.stdout
    assert gone.read_text() == kept
    for n in GOOD:
        if n != "sub/panorama.png":
            assert (masks / f"{n}.json").stat().st_mtime_ns == before[n]
    assert json.loads((out / "coco.json").read_text()) == coco_before


def test_killed_run_resumes_to_the_same_outputs(first_run, vit_t_bundle, folder, tmp_path):
    """SIGKILL the run once an image is written; the rerun finishes the rest, and every output equals
    the uninterrupted run's."""
    out, _ = first_run
    dest = tmp_path / "masks"
    cmd = [sys.executable, "-m", "edgesam.cli", "everything", str(vit_t_bundle), str(folder), "--out", str(dest),
           "--quiet", *AMG]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(dest.rglob("*.png.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(dest.rglob("*.png.json"))) < 3  # killed part-way
    again = run_cli("everything", vit_t_bundle, folder, "--out", dest, "--quiet", *AMG)
    assert again.returncode == 1, again.stderr[-2000:]
    for n in GOOD:
        assert json.loads((dest / f"{n}.json").read_text()) == json.loads((out / "masks" / f"{n}.json").read_text())
    leftovers = [p.name for p in dest.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    assert all(p.startswith(".") for p in leftovers), leftovers  # at most a temp file of the killed write


def _workers_of(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and "spawn_main" in cmd and "resource_tracker" not in cmd:
            found.append(int(d.name))
    return found


def test_a_killed_worker_costs_only_its_images(first_run, vit_t_bundle, folder, tmp_path):
    """SIGKILL one of two worker processes while it works: the run still ends (a new pool takes the
    rest), the images that worker held are reported as failed, and a rerun completes every output as
    the uninterrupted run made it."""
    out, _ = first_run
    dest = tmp_path / "masks"
    cmd = [sys.executable, "-m", "edgesam.cli", "everything", str(vit_t_bundle), str(folder), "--out", str(dest),
           "--workers", "2", "--quiet", *AMG]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(dest.rglob("*.png.json")):
        time.sleep(0.05)
    workers = _workers_of(proc.pid)
    assert workers, "no worker processes found"
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)  # the old multiprocessing.Pool waited here forever
    assert proc.returncode == 1, stderr[-2000:]
    errors = json.loads((dest / "errors.json").read_text())
    lost = [e for e in errors if e["image"] != "broken.png"]
    assert all("worker process died" in e["error"] for e in lost), errors
    assert len(lost) <= 2  # at most the two images queued to the killed worker
    again = run_cli("everything", vit_t_bundle, folder, "--out", dest, "--workers", "2", "--quiet", *AMG)
    assert again.returncode == 1 and f"{len(lost)} done now" in again.stdout, again.stdout
    for n in GOOD:
        assert json.loads((dest / f"{n}.json").read_text()) == json.loads((out / "masks" / f"{n}.json").read_text())


def test_other_settings_and_bad_engine_are_refused(first_run, vit_t_bundle, folder, tmp_path):
    out, _ = first_run
    line = one_line_error(run_cli("everything", vit_t_bundle, folder, "--out", out / "masks", "--points-per-side",
                                  "4"))
    assert "other settings" in line
    line = one_line_error(run_cli("everything", vit_t_bundle, folder, "--out", tmp_path / "r", "--ray-address",
                                  "127.0.0.1:1"))
    assert "--ray-address is for --engine ray" in line and not (tmp_path / "r").exists()
    line = one_line_error(run_cli("everything", vit_t_bundle, folder))
    assert "--out DIR" in line
    line = one_line_error(run_cli("everything", vit_t_bundle, folder, "--out", tmp_path / "m.json"))
    assert "need a folder" in line and not (tmp_path / "m.json").exists()


def test_image_list_and_name_clash(vit_t_bundle, folder, tmp_path):
    from edgesam.dataset.inputs import collect

    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n{folder / 'landscape.png'}\n\n")
    assert [(i.name, i.path) for i in collect([str(lst)])] == [("landscape.png", folder / "landscape.png")]
    other = tmp_path / "x"
    other.mkdir()
    shutil.copy(folder / "landscape.png", other / "landscape.png")
    line = one_line_error(run_cli("everything", vit_t_bundle, folder / "landscape.png", other / "landscape.png",
                                  "--out", tmp_path / "o"))
    assert "would both be written as landscape.png.json" in line and not (tmp_path / "o").exists()


DETECTIONS = {
    "images": [{"id": 1, "file_name": "landscape.png"}, {"id": 2, "file_name": "sub/portrait.png"},
               {"id": 3, "file_name": "missing.png"}, {"id": 4, "file_name": "sub/panorama.png"}],
    "annotations": [{"id": 10, "image_id": 1, "bbox": [250, 230, 150, 120], "score": 0.9, "category_id": 3},
                    {"id": 11, "image_id": 1, "bbox": [20, 20, 100, 100], "score": 0.5, "category_id": 3},
                    {"id": 12, "image_id": 2, "bbox": [200, 60, 120, 120], "score": 0.7, "category_id": 1},
                    {"id": 13, "image_id": 3, "bbox": [0, 0, 10, 10], "score": 0.7, "category_id": 1},
                    {"id": 14, "image_id": 99, "bbox": [0, 0, 10, 10], "score": 0.7, "category_id": 1}],
    "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]}


@pytest.fixture(scope="module")
def boxes_run(vit_t_bundle, folder, tmp_path_factory):
    """``segment --boxes`` on the local engine: (the detection file, the output, the process)."""
    d = tmp_path_factory.mktemp("boxes")
    (d / "det.json").write_text(json.dumps(DETECTIONS))
    proc = run_cli("segment", vit_t_bundle, "--images", folder, "--boxes", d / "det.json", "--coco", d / "segm.json",
                   "--threads", "1")
    return d / "det.json", d / "segm.json", proc


def test_boxes_to_masks(vit_t_bundle, folder, boxes_run):
    """A COCO detection file's boxes -> one mask per box (the single-mask output the official predictor
    gives for a box: edgesam's predictor on the same box, mask for mask), written back as the same
    annotations with segmentation, area and predicted_iou. A detection whose image is not listed and
    an image missing on disk are reported, the rest done (exit 1). Only images with boxes are read.
    (That each mask lies inside its box: test_each_box_gets_a_mask_inside_it, on true objects' boxes.)"""
    from edgesam.runtime import SamPredictor
    from edgesam.runtime.imageio import read_image

    det = DETECTIONS
    _, out, proc = boxes_run
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "missing.png" in proc.stdout and "1 detection(s) name no image" in proc.stdout
    got = json.loads(out.read_text())
    assert got["images"] == det["images"] and got["categories"] == det["categories"]
    assert [a["id"] for a in got["annotations"]] == [10, 11, 12]
    assert {e["image"] for e in got["edgesam_errors"]} == {"missing.png", None}
    assert not (Path(f"{out}.parts") / "sub" / "panorama.png.json").exists()  # no boxes: never read
    COCO(str(out))
    by_image = {1: folder / "landscape.png", 2: folder / "sub" / "portrait.png"}
    p = SamPredictor(vit_t_bundle, threads=1)
    for a in got["annotations"]:
        src = next(d for d in det["annotations"] if d["id"] == a["id"])
        assert {k: a[k] for k in src if k != "area"} == src  # the detection, unchanged
        p.set_image(read_image(by_image[a["image_id"]]))
        x, y, w, h = a["bbox"]
        want, score, _ = p.predict(box=np.array([x, y, x + w, y + h]), multimask_output=False)
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        assert np.array_equal(m, want[0]) and a["area"] == int(want[0].sum()) > 0
        assert abs(a["predicted_iou"] - float(score[0])) < 1e-6


@pytest.mark.xfail(strict=True, reason="the shipped demo model does not segment boxes yet (held-out box mIoU 0.25): "
                                       "its masks spill out of their boxes; a model that does makes this pass")
def test_each_box_gets_a_mask_inside_it(vit_t_bundle, tmp_path):
    """segment --boxes with the tight boxes of the sample images' true objects (the samples are
    generated, so their masks are known): every mask's bounding box lies inside its box, within 2 px."""
    from edgesam.synthetic.samples import SAMPLES, sample
    from edgesam.synthetic.scenes import mask_box

    images, anns = [], []
    for i, name in enumerate(sorted(SAMPLES)):
        shutil.copy(REPO / "assets" / name, tmp_path / name)
        images.append({"id": i + 1, "file_name": name})
        sc = sample(name)
        for m in sc.masks:
            if m.sum() >= 400:  # objects a box can be drawn around: at least 20 x 20 pixels
                x0, y0, x1, y1 = (float(v) for v in mask_box(m))
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "score": 1.0, "category_id": 1})
    assert len(anns) >= 10
    (tmp_path / "det.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                    "categories": [{"id": 1, "name": "shape"}]}))
    proc = run_cli("segment", vit_t_bundle, "--images", tmp_path, "--boxes", tmp_path / "det.json",
                   "--coco", tmp_path / "segm.json", "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    outside = []
    for a in json.loads((tmp_path / "segm.json").read_text())["annotations"]:
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        x, y, w, h = a["bbox"]
        ys, xs = np.nonzero(m)
        assert len(ys), a["id"]
        if xs.min() < x - 2 or ys.min() < y - 2 or xs.max() + 1 > x + w + 2 or ys.max() + 1 > y + h + 2:
            outside.append((a["id"], [x, y, x + w, y + h], [int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                                           int(ys.max()) + 1]))
    assert outside == [], outside


def test_boxes_to_masks_on_ray_gives_the_same_file(vit_t_bundle, folder, boxes_run, tmp_path):
    """``segment --boxes --engine ray`` (a local Ray, 2 actors): the same COCO file, errors included, as
    the local engine's, and the same exit code."""
    if not os.environ.get("CI"):  # `make setup` installs the ray extra: in CI a missing Ray fails
        pytest.importorskip("ray.data")
    det, local, local_proc = boxes_run
    proc = run_cli("segment", vit_t_bundle, "--images", folder, "--boxes", det, "--coco", tmp_path / "segm.json",
                   "--threads", "1", "--engine", "ray", "--workers", "2")
    assert proc.returncode == local_proc.returncode == 1, proc.stderr[-3000:]
    got, want = json.loads((tmp_path / "segm.json").read_text()), json.loads(local.read_text())
    assert [a["id"] for a in got["annotations"]] == [10, 11, 12]
    assert got == want
