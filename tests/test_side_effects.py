"""Library code leaves process state alone; bad destinations are input errors; leftovers are cleaned."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

# Another process watches this one's working directory and descriptors 1 and 2 through /proc while
# a conversion runs: unlike a check before and after, it sees a change that is undone at the end,
# and unlike a thread it needs no GIL while the converter's C code runs.
WATCHER = """
import json, os, sys
pid, out = sys.argv[1], sys.argv[2]
seen = set()
while not os.path.exists(out + ".stop"):
    for what in ("cwd", "fd/1", "fd/2"):
        try:
            seen.add((what, os.readlink(f"/proc/{pid}/{what}")))
        except OSError:
            pass
    if not os.path.exists(out + ".ready"):
        open(out + ".ready", "w").close()
with open(out, "w") as f:
    json.dump(sorted(seen), f)
"""


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_ino, st.st_dev


def _matmul_chain(path: Path, layers: int = 40, width: int = 256) -> None:
    """A small ONNX model (MatMul + Relu chain) whose conversion takes some tens of milliseconds."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.05, (width, width)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"layer{i}.matmul"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc")
def test_conversion_leaves_cwd_and_descriptors_alone(tmp_path, monkeypatch):
    from edgesam.convert.mnn import onnx_to_mnn

    _matmul_chain(tmp_path / "m.onnx")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    cwd, fd1, fd2 = os.getcwd(), _identity(1), _identity(2)
    links = {w: os.readlink(f"/proc/self/{w}") for w in ("cwd", "fd/1", "fd/2")}
    report = tmp_path / "watch.json"
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(os.getpid()), str(report)])
    try:
        deadline = time.time() + 30
        while not Path(f"{report}.ready").exists() and time.time() < deadline:
            time.sleep(0.01)
        for prec in ("fp32", "int8"):
            onnx_to_mnn(tmp_path / "m.onnx", tmp_path / f"m.{prec}.mnn", prec)
    finally:
        Path(f"{report}.stop").touch()
        watcher.wait(timeout=30)
    assert (os.getcwd(), _identity(1), _identity(2)) == (cwd, fd1, fd2)
    seen = json.loads(report.read_text())
    assert seen and all(target == links[what] for what, target in seen), seen
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("watch")) == [
        "here", "m.fp32.mnn", "m.int8.mnn", "m.onnx"]
    assert list((tmp_path / "here").iterdir()) == []


def test_converter_child_runs_in_a_private_folder(tmp_path, monkeypatch):
    """The converter spills weights to ./.__convert_external_data.bin: its child process runs in a
    scratch folder beside the output (removed after), never in the caller's working directory."""
    from edgesam.convert import mnn

    seen = tmp_path / "child-cwd.txt"
    fake = ("import os, sys\n"
            "argv = sys.argv[2:]\n"
            f"open({str(seen)!r}, 'w').write(os.getcwd())\n"
            "open('.__convert_external_data.bin', 'wb').write(b'spill')\n"
            "open(argv[argv.index('--MNNModel') + 1], 'wb').write(b'model')\n"
            "print('Converted Success!')\n")
    monkeypatch.setattr(mnn, "_CORE", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"x")
    mnn.onnx_to_mnn(Path("m.onnx"), Path("out/m.mnn"), "fp32")
    child_cwd = Path(seen.read_text())
    assert os.getcwd() == str(tmp_path) and child_cwd.parent == tmp_path / "out"
    assert child_cwd.name.startswith(".mnnconvert-") and not child_cwd.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.mnn"]
    assert not (tmp_path / ".__convert_external_data.bin").exists()


def test_converter_failures_keep_status_and_log(tmp_path, monkeypatch):
    from edgesam.convert import mnn
    from edgesam.errors import ConversionError

    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ConversionError, match=r"MNN conversion of bad.onnx to fp32 failed \(True\): .+"):
        mnn.onnx_to_mnn(tmp_path / "bad.onnx", tmp_path / "bad.mnn", "fp32")
    monkeypatch.setattr(mnn, "_CORE", "raise SystemExit(5)")
    rc, _ = mnn._run_quiet(["mnnconvert"], cwd=tmp_path)
    assert rc == "converter exited with status 5"
    monkeypatch.setattr(mnn, "_CORE", "import os; os.kill(os.getpid(), 9)")
    assert mnn._run_quiet(["mnnconvert"], cwd=tmp_path)[0] == "converter killed by signal 9"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_core_exceptions_and_false_are_reported(tmp_path):
    """What the core raises or returns other than True comes back as the status. (A stand-in
    ``_tools`` in the child's working directory, which comes first on its sys.path.)"""
    from edgesam.convert import mnn

    (tmp_path / "_tools.py").write_text("def mnnconvert(argv):\n"
                                         "    if argv[1] == 'raise':\n"
                                         "        raise ValueError('boom ' + argv[0])\n"
                                         "    return False\n")
    assert mnn._run_quiet(["mnnconvert", "raise"], cwd=tmp_path)[0] == "ValueError: boom mnnconvert"
    assert mnn._run_quiet(["mnnconvert", "no"], cwd=tmp_path)[0] == "converter core returned False"


FEATURES = sorted(["fp16", "i8mm", "i8sdot", "sme2", "sve2"])


def test_mnn_import_banner_stays_off_stdout_when_the_program_asks():
    """The CLI's way (QUIET): MNN's import line is captured, off stdout, fd 1 unchanged after."""
    code = ("import os; a = os.fstat(1)\n"
            "from edgesam.runtime import _mnn\n"
            "_mnn.QUIET = True\n"
            "_mnn.import_mnn(); b = os.fstat(1)\n"
            "print(sorted(_mnn.cpu_features()), (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.splitlines() == [f"{FEATURES} True"], p.stdout


def test_library_import_leaves_the_callers_descriptors_alone():
    """A library caller's process: MNN is imported as it is (its line goes where MNN sends it), fd 1 is
    never redirected, and the CPU report still comes (from a child interpreter)."""
    code = ("import os, edgesam.runtime._mnn as m\n"
            "real = os.dup2\n"
            "os.dup2 = lambda *a: (_ for _ in ()).throw(AssertionError('fd redirected'))\n"
            "m.import_mnn()\n"
            "os.dup2 = real\n"
            "print('features', sorted(m.cpu_features()))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"features {FEATURES}" in p.stdout.splitlines() and "The device supports" in p.stdout, p.stdout


# --- destinations that cannot be written: exit 2, one line naming the path, nothing written ---------

UNWRITABLE = Path("/proc")  # refuses new files even to root (a read-only chmod would not stop root)
needs_proc = pytest.mark.skipif(not (UNWRITABLE / "self").exists(), reason="needs Linux /proc")


@needs_proc
def test_convert_to_an_unwritable_out_fails_at_once(tmp_path):
    from conftest import one_line_error, run_cli

    t = time.perf_counter()
    line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", UNWRITABLE / "b"))
    assert str(UNWRITABLE / "b") in line and time.perf_counter() - t < 30  # checked before building the model
    (tmp_path / "file").write_text("x")  # an --out under a file
    line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out",
                                  tmp_path / "file" / "b"))
    assert str(tmp_path / "file" / "b") in line
    # an unwritable --json fails before the conversion too, with no bundle written
    t = time.perf_counter()
    line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", tmp_path / "b",
                                  "--json", UNWRITABLE / "c.json"))
    assert str(UNWRITABLE / "c.json") in line and time.perf_counter() - t < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@needs_proc
def test_segment_and_everything_to_unwritable_outputs(vit_t_random_fp32, tmp_path):
    from conftest import REPO, one_line_error, run_cli

    bundle, made = vit_t_random_fp32
    assert made.returncode == 0, made.stderr[-2000:]
    img = REPO / "assets" / "landscape.png"
    cases = [("segment", "--point", "100,100", "--out", UNWRITABLE / "x.png"),
             ("segment", "--point", "100,100", "--json", UNWRITABLE / "x.json"),
             ("segment", "--point", "100,100", "--npz", UNWRITABLE / "x.npz"),
             ("segment", "--point", "100,100", "--npz", tmp_path / "no" / "x.npz"),
             ("segment", "--point", "100,100", "--json", tmp_path),  # a folder
             # one good and one bad destination: refused before either is written
             ("segment", "--point", "100,100", "--out", tmp_path / "ok.png", "--overlay", UNWRITABLE / "o.png"),
             ("everything", "--points-per-side", "2", "--quiet", "--out", tmp_path / "ok.json", "--overlay",
              UNWRITABLE / "o.png"),
             ("everything", "--points-per-side", "2", "--quiet", "--out", UNWRITABLE / "m.json"),
             ("everything", "--points-per-side", "2", "--quiet", "--json", UNWRITABLE / "s.json")]
    for command, *args in cases:
        line = one_line_error(run_cli(command, bundle, img, *args, cwd=tmp_path))
        assert str(args[-1]) in line, (args, line)
    assert list(tmp_path.iterdir()) == []


def test_write_helpers_raise_output_error(tmp_path):
    from edgesam.bundle import atomic_dir, atomic_write_bytes, check_out_dir
    from edgesam.errors import OutputError

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a folder"):
        atomic_write_bytes(tmp_path, b"{}")
    with pytest.raises(OutputError, match="does not exist"):
        atomic_write_bytes(tmp_path / "no" / "r.json", b"{}")
    for target in (tmp_path / "file" / "b", tmp_path / "file" / "deeper" / "b"):  # under a file
        with pytest.raises(OutputError, match=str(target)):
            check_out_dir(target)
        with pytest.raises(OutputError, match=str(target)):
            with atomic_dir(target):
                pytest.fail("atomic_dir yielded a folder it cannot make")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    check_out_dir(tmp_path / "new" / "b")  # missing parents are fine (atomic_dir makes them); none made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# --- temporary folders of writes killed outright ------------------------------------------------------

def _temp_named(parent: Path, out_name: str, pid: int, start: int | None) -> Path:
    from edgesam.bundle import _host_tag

    p = parent / f".{out_name}.tmp-{_host_tag()}-{pid}-{start or 0}-abcd_123"
    p.mkdir()
    (p / "encoder.onnx").write_bytes(b"partial")
    return p


def test_later_write_removes_leftovers_of_dead_owners_only(tmp_path):
    from edgesam.bundle import _start_time, atomic_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = _temp_named(tmp_path, "b", dead.pid, _start_time(os.getpid()))
        alive = _temp_named(tmp_path, "b", live.pid, _start_time(live.pid))
        other = _temp_named(tmp_path, "c", dead.pid, None)  # another --out's: not this write's business
        older = tmp_path / ".b.tmp-k3j_x9a1"  # made before owners were named: unknown, kept
        older.mkdir()
        with atomic_dir(tmp_path / "b") as t:
            (t / "manifest.json").write_text("{}")
        assert not stale.exists()
        assert alive.exists() and other.exists() and older.exists()
        assert (tmp_path / "b" / "manifest.json").is_file()
    finally:
        live.kill()
        live.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times come from /proc")
def test_a_reused_pid_does_not_keep_a_leftover(tmp_path):
    """The pid is alive but started at another time than the folder's owner: it is not the owner."""
    from edgesam.bundle import _start_time, atomic_dir

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reused = _temp_named(tmp_path, "b", live.pid, _start_time(live.pid) - 1)
        with atomic_dir(tmp_path / "b") as t:
            (t / "x").write_text("x")
        assert not reused.exists()
    finally:
        live.kill()
        live.wait()


def test_sigkilled_convert_leftover_is_removed_by_the_next_write(tmp_path):
    """A real writer killed with SIGKILL leaves its folder; the next write to the same out removes it."""
    from edgesam.bundle import atomic_dir

    code = ("import sys, time; from edgesam.bundle import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as t:\n"
            "    (t / 'half').write_text('x'); print(t.name, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "b")], stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    with atomic_dir(tmp_path / "b2") as t:  # another out: the live writer's folder is untouched either way
        pass
    assert (tmp_path / name).is_dir()
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert (tmp_path / name).is_dir() and not (tmp_path / "b").exists()
    with atomic_dir(tmp_path / "b") as t:
        (t / "whole").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b2"]


def test_umask_is_read_without_setting_it(monkeypatch):
    from edgesam import bundle

    if not Path("/proc/self/status").exists() or "Umask:" not in Path("/proc/self/status").read_text():
        pytest.skip("no Umask line in /proc/self/status")
    old = os.umask(0o027)
    try:
        def refuse(mask):
            raise AssertionError("os.umask called: it changes the process's umask, if briefly")

        monkeypatch.setattr(bundle.os, "umask", refuse)
        assert bundle._umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_progress_stage_takes_a_zero_argument_callable():
    from functools import partial

    from edgesam.convert.pipeline import Progress

    lines = []
    prog = Progress(lines.append)
    assert prog.stage("add", partial(int, "11", base=2)) == 3
    assert prog.stage("quiet", lambda: "x", announce=False) == "x"
    with pytest.raises(TypeError):
        prog.stage("flag", int, "11", 2)  # positional arguments for fn are refused, not forwarded
    with pytest.raises(TypeError):
        prog.stage("flag", lambda: None, False)  # so is a positional announce
    assert lines[0] == "[add] ..." and lines[1].startswith("[add] done in ") and lines[2].startswith("[quiet] done")
    assert len(lines) == 3 and set(prog.times) == {"add", "quiet"}


def test_failed_swap_keeps_the_previous_out(tmp_path, monkeypatch):
    """With --force, the old out is moved aside before the new one takes its name: if that rename
    fails, the old one is put back (not left under a hidden name with no out at all)."""
    import errno

    from edgesam import bundle
    from edgesam.errors import OutputError

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("old")
    real_rename = Path.rename

    def rename(self, target):
        if self.name.startswith(".b.tmp-"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(self, target)

    monkeypatch.setattr(bundle.Path, "rename", rename)
    with pytest.raises(OutputError, match="cannot write there"):
        with bundle.atomic_dir(tmp_path / "b", force=True) as t:
            (t / "manifest.json").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert (tmp_path / "b" / "manifest.json").read_text() == "old"
