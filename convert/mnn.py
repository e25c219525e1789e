"""ONNX -> MNN through the converter core ``_tools.mnnconvert``.

Never through ``MNN.tools.mnnconvert`` or the ``mnnconvert`` script: those send
telemetry and pip-install packages. The core's return value is not trusted
either: success means the output file exists and loads. The core runs in a child
interpreter (``_run_quiet``), so a conversion changes neither this process's working
directory nor its file descriptors.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from edgesam.errors import ConversionError

# Weight storage per bundle precision. Compute precision is a runtime choice.
PRECISION_FLAGS = {
    "fp32": [],
    "fp16": ["--fp16"],  # half weights on disk; arithmetic is fp16 only with precision="low"
    # int8 weights, per output channel, asymmetric (a scale and an offset each): the most accurate of
    # the schemes measured (docs/converting.md, "int8")
    "int8": ["--weightQuantBits", "8", "--weightQuantAsymmetric"],
}


def weight_storage(role: str, precision: str) -> str:
    """How a bundle precision stores a role's MNN weights (a key of PRECISION_FLAGS).

    An int8 bundle keeps its decoder's weights in fp16: int8 decoder weights flip the masks of
    undecided prompts, and the fp16 file is smaller anyway (figures: docs/converting.md, "int8").
    SAM 2's video graphs (decoder, memory attention, memory encoder) are kept in fp16 the same way."""
    return "fp16" if precision == "int8" and role != "encoder" else precision


def int8_float_layers(role: str, precision: str) -> tuple[str, ...]:
    """Name patterns of the layers an int8 file keeps float (``onnx_to_mnn(keep_float=...)``).

    The encoder's patch embedding (the convolutions that read the image; one 16x16 convolution in
    SAM's ViTs): quantised, it moved undecided masks most of any layer, and it is small (figures:
    docs/converting.md, "int8")."""
    return ("patch_embed",) if (role, precision) == ("encoder", "int8") else ()


# The converter core runs in a child interpreter: it prints a lot at C level (only a process of its
# own can have its descriptors 1 and 2 pointed at a log without touching the caller's), and it
# spills weights into its working directory (a child can have a private one without os.chdir in
# the caller). The child exits 0 only when the core returned True; anything else is reported on
# its stderr, which is the log, and as its exit status.
_CORE = """\
import sys
MARK = sys.argv.pop(1)
try:
    import _tools  # MNN's converter core; never MNN.tools, whose wrapper sends telemetry
    rc = _tools.mnnconvert(sys.argv[1:])
except Exception as e:  # the core raises on some malformed graphs
    sys.stderr.write(f"\\n{MARK}{type(e).__name__}: {e}\\n")
    sys.exit(3)
if rc is not True:
    sys.stderr.write(f"\\n{MARK}converter core returned {rc!r}\\n")
sys.exit(0 if rc is True else 4)
"""
_MARK = "edgesam-mnnconvert: "  # the child's own lines in the log (the core's C output may follow them)


def _run_quiet(argv: list[str], cwd: str | os.PathLike | None = None) -> tuple[bool | str, str]:
    """Run the converter core on ``argv`` (``argv[0]`` is the program name) in a child interpreter,
    in ``cwd`` (default: this process's), with its stdout and stderr captured. Returns (True or
    what went wrong, the log). This process's working directory and descriptors are left alone."""
    if not sys.executable:
        raise ConversionError("MNN conversion needs a Python interpreter to run its converter in "
                              "(sys.executable is empty in this embedded Python)")
    with tempfile.TemporaryFile(mode="w+b") as log:
        proc = subprocess.run([sys.executable, "-c", _CORE, _MARK, *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, check=False)
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    if proc.returncode == 0:
        return True, text
    if proc.returncode < 0:
        return f"converter killed by signal {-proc.returncode}", text
    said = [line[len(_MARK):] for line in text.splitlines() if line.startswith(_MARK)]
    return (said[-1] if said else f"converter exited with status {proc.returncode}"), text


SQRT2 = math.sqrt(2.0)


def _constant_value(name: str, inits: dict, consts: dict):
    import numpy as np
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    if name in consts:
        return numpy_helper.to_array(consts[name])
    return np.array([])


def unfused_gelu(onnx_path: Path, out_path: Path) -> int:
    """Write ``onnx_path`` to ``out_path`` with every exact GELU in a form MNN's converter leaves alone.

    torch exports ``nn.GELU()`` as ((x / sqrt(2) -> Erf -> + 1) * x) * 0.5. MNN's converter fuses
    that pattern into its own GELU kernel, which approximates: max abs error 4.7e-4 (near
    x = -2.69, MNN 3.6.1), where MNN's Erf alone is exact to 6e-8. Random weights never show it;
    a trained encoder did, through its LayerNorm'd neck (5 % embedding error at a few positions).
    Here each one is rewritten as (x * 0.5) * (erf(x * 1/sqrt(2)) + 1), the same function, which
    the fusion does not match (measured: a Mul by 1/sqrt(2) alone is still fused; the reordered
    products are not), so MNN computes it exactly. The bundle's ONNX keeps torch's pattern:
    ONNX Runtime fuses it into its exact Gelu kernel, one pass instead of five.
    Returns the number of GELUs rewritten (0: nothing written). Raises ConversionError when an Erf
    is left outside that pattern: a future exporter's GELU in another form could then reach MNN's
    approximate fusion unnoticed (random-weight parity would not show it)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    external = any(uses_external_data(t) for t in model.graph.initializer)  # vit_h: over 2 GiB
    if external:
        load_external_data_for_model(model, str(Path(onnx_path).parent))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in g.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def const(name: str) -> float | None:
        v = _constant_value(name, inits, consts)
        return float(v.ravel()[0]) if v.size == 1 else None

    def only_user(name: str, op: str):
        u = users.get(name, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    inv, half = "edgesam_gelu_inv_sqrt2", "edgesam_gelu_half"
    count = 0
    for div in list(g.node):
        c = const(div.input[1]) if div.op_type == "Div" else None
        if c is None or abs(c - SQRT2) > 1e-6:
            continue
        x = div.input[0]
        erf = only_user(div.output[0], "Erf")
        add = erf and only_user(erf.output[0], "Add")
        mul1 = add and only_user(add.output[0], "Mul")
        mul2 = mul1 and only_user(mul1.output[0], "Mul")
        if not mul2:
            continue
        one = [i for i in add.input if i != erf.output[0]]
        other = [i for i in mul1.input if i != add.output[0]]
        scale = [i for i in mul2.input if i != mul1.output[0]]
        if not (len(one) == 1 and const(one[0]) == 1.0 and other == [x]
                and len(scale) == 1 and const(scale[0]) == 0.5):
            continue
        div.op_type, div.input[1] = "Mul", inv
        mul1.input[0], mul1.input[1] = x, half          # x * 0.5
        mul2.input[0], mul2.input[1] = mul1.output[0], add.output[0]  # (x * 0.5) * (erf + 1)
        count += 1
    erfs = sum(n.op_type == "Erf" for n in g.node)
    if erfs != count:
        raise ConversionError(f"{Path(onnx_path).name}: {erfs - count} of {erfs} Erf nodes are not in torch's "
                              "exact-GELU pattern; MNN could convert them with its approximate GELU fusion")
    if count:
        g.initializer.append(numpy_helper.from_array(np.array(1.0 / SQRT2, np.float32), inv))
        g.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), half))
        if external:  # a single protobuf cannot hold it: weights beside the copy, as in the bundle
            onnx.save(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=Path(out_path).name + ".data")
        else:
            onnx.save(model, str(out_path))
    return count


def round_weights_to_fp16(onnx_path: Path, out_path: Path) -> Path:
    """A copy of ``onnx_path`` whose float32 weights (initializers and Constant tensors of more than
    one value) hold the nearest fp16 value, still as float32; ``onnx_path`` itself if none changes.

    MNN 3.6.1's converter stores ``--fp16`` weights truncated toward zero, not rounded to nearest
    (measured on a 1x1 convolution: 1 + 0.75 ulp became 1.0, -(1 + 0.75 ulp) -1.0, 0.50044 0.5).
    Weights that are already fp16 values pass through exactly. A demo vit_t whose BatchNorms had
    learned statistics (folded into its convolutions, so its weights were no longer fp16 values)
    had its fp16 encoder at relative max error 0.58 against torch converted as it was, 0.015 from
    this copy. Values beyond fp16's range are left as they are (the converter clips them)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    external = any(uses_external_data(t) for t in model.graph.initializer)
    if external:
        load_external_data_for_model(model, str(Path(onnx_path).parent))
    tensors = list(model.graph.initializer) + [n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"
                                               and n.attribute and n.attribute[0].name == "value"]
    changed = 0
    for tensor in tensors:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(tensor)
        if w.size <= 1:
            continue
        with np.errstate(over="ignore"):
            r = w.astype(np.float16).astype(np.float32)
        r = np.where(np.isfinite(r), r, w)
        if not np.array_equal(r, w):
            tensor.CopyFrom(numpy_helper.from_array(r, tensor.name))
            changed += 1
    if not changed:
        return Path(onnx_path)
    if external:
        onnx.save(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=Path(out_path).name + ".data")
    else:
        onnx.save(model, str(out_path))
    return Path(out_path)


@contextlib.contextmanager
def exact_gelu_source(onnx_path: Path, scratch_parent: Path | None = None) -> Iterator[Path]:
    """The ONNX file to give ``onnx_to_mnn(..., rewrite_gelu=False)``: a copy with ``unfused_gelu``
    applied, in a scratch folder (in ``scratch_parent``, by default beside ``onnx_path``) that is
    removed on exit; ``onnx_path`` itself when the graph has no GELU or is not ONNX. One copy can
    serve every precision of a role: for vit_h that copy is 2.5 GB."""
    parent = scratch_parent if scratch_parent is not None else Path(onnx_path).resolve().parent
    scratch = Path(tempfile.mkdtemp(prefix=".exact-gelu-", dir=parent))
    try:
        from google.protobuf.message import DecodeError

        exact = scratch / Path(onnx_path).name
        try:
            rewritten = unfused_gelu(Path(onnx_path), exact)
        except DecodeError:  # not an ONNX file: the converter reports that itself
            rewritten = 0
        yield exact if rewritten else Path(onnx_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def onnx_to_mnn(onnx_path: Path, mnn_path: Path, precision: str, biz_code: str = "edgesam",
                rewrite_gelu: bool = True, keep_float: tuple[str, ...] = ()) -> list[str]:
    """Convert one ONNX file. Raises ConversionError on any failure.

    GELUs are converted exactly (``unfused_gelu``), through a rewritten copy in a scratch folder;
    ``rewrite_gelu=False`` when ``onnx_path`` is such a copy already (``exact_gelu_source``).
    ``keep_float`` (int8 only): substrings of layer names whose weights stay float32
    (``_int8_keeping_float``). Returns the names of the layers kept float ([] without it)."""
    if precision not in PRECISION_FLAGS:
        raise ConversionError(f"unknown MNN precision {precision!r}")
    if keep_float and precision != "int8":
        raise ConversionError("keep_float applies to int8 conversions only")
    if rewrite_gelu:
        with exact_gelu_source(onnx_path, Path(mnn_path).resolve().parent) as src:
            return onnx_to_mnn(src, mnn_path, precision, biz_code, rewrite_gelu=False, keep_float=keep_float)
    # The converter spills weights to ".__convert_external_data.bin" in the current directory
    # while it optimises. Two conversions sharing a working directory overwrite each other's
    # spill file and produce silently wrong weights (seen here: an int8 encoder at cosine -0.89
    # against torch while another conversion ran from the same folder). So each run gets a
    # private working directory (the converter's child process runs there; this process's own
    # working directory is never changed), removed afterwards.
    onnx_abs, mnn_abs = Path(onnx_path).resolve(), Path(mnn_path).resolve()
    scratch = Path(tempfile.mkdtemp(prefix=".mnnconvert-", dir=mnn_abs.parent))
    try:
        if precision == "fp16":
            onnx_abs = round_weights_to_fp16(onnx_abs, scratch / onnx_abs.name)
        if not keep_float:
            _convert_checked(["-f", "ONNX", "--modelFile", str(onnx_abs), "--keepInputFormat",
                              *PRECISION_FLAGS[precision]], mnn_abs, biz_code, f"{onnx_abs.name} to {precision}",
                             scratch)
            return []
        return _int8_keeping_float(onnx_abs, mnn_abs, biz_code, keep_float, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _convert_checked(args: list[str], out: Path, biz_code: str, what: str, cwd: Path) -> str:
    """One converter-core run in ``cwd`` writing ``out``; its log. The core returns True even when it
    failed, so it is judged by its log and by the file itself."""
    rc, log = _run_quiet(["mnnconvert", *args, "--MNNModel", str(out), "--bizCode", biz_code], cwd=cwd)
    tail = " | ".join(log.strip().splitlines()[-3:])
    if rc is not True or "Converted Success" not in log or "[ERROR]" in log:
        raise ConversionError(f"MNN conversion of {what} failed ({rc}): {tail}")
    if not out.is_file() or out.stat().st_size == 0:
        raise ConversionError(f"MNN conversion of {what} wrote no model: {tail}")
    return log


def _int8_keeping_float(onnx_path: Path, mnn_path: Path, biz_code: str, keep_float: tuple[str, ...],
                        scratch: Path) -> list[str]:
    """int8 weights everywhere but the layers whose MNN op name contains one of ``keep_float``.

    MNN's converter takes a per-layer quantisation file (``--compressionParamsFile``, protobuf
    JSON): given a path that does not exist, it writes one entry per convolution (MatMuls with
    constant weights are convolutions by then) with the op's name and its ``bits``; ``bits`` 0
    keeps that layer float. Names are those of the converted graph, so the float model is made
    first and both quantising passes read it. A pattern that matches nothing is an error: a
    renamed layer would otherwise lose its protection silently."""
    import json

    base = scratch / "float.mnn"
    _convert_checked(["-f", "ONNX", "--modelFile", str(onnx_path), "--keepInputFormat"], base, biz_code,
                     f"{onnx_path.name} to float", scratch)
    quant = ["-f", "MNN", "--modelFile", str(base), *PRECISION_FLAGS["int8"]]
    guide = scratch / "layers.json"
    _convert_checked([*quant, "--compressionParamsFile", str(guide)], scratch / "guide.mnn", biz_code,
                     f"{onnx_path.name} to int8 (layer list)", scratch)
    params = json.loads(guide.read_text())
    layers = [layer for algo in params.get("algo", []) for layer in algo.get("quantParams", {}).get("layer", [])]
    kept = []
    for layer in layers:
        if any(p in layer.get("opName", "") for p in keep_float):
            for w in layer.get("weight", []):
                w["bits"] = 0
            kept.append(layer["opName"])
    missing = [p for p in keep_float if not any(p in name for name in kept)]
    if missing:
        raise ConversionError(f"{onnx_path.name}: no layer named like {', '.join(missing)} to keep float in int8 "
                              f"(the converter listed {len(layers)} layers)")
    chosen = scratch / "layers-chosen.json"
    chosen.write_text(json.dumps(params))
    _convert_checked([*quant, "--compressionParamsFile", str(chosen)], mnn_path, biz_code, f"{onnx_path.name} to int8",
                     scratch)
    return kept
