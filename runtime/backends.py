"""Backends: one protocol, ``run(inputs) -> outputs``, over MNN, ONNX Runtime and OpenVINO.

Encoder and decoder are built on top of a Backend; no backend knows about SAM.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from edgesam.errors import BackendError, InputError

# The arithmetic a backend computes in ("runtime precision"), apart from the precision the model
# files store their weights in (edgesam.manifest.PRECISIONS: fp32, fp16, int8). "low" = fp16 on ARMv8.2+.
ARITHMETIC_PRECISIONS = ("high", "normal", "low")
_MNN_PRECISION_CODE = {"normal": 0, "high": 1, "low": 2}
# MNN's memory modes (integer codes; the string forms are silently ignored). "low" makes the CPU
# backend keep int8 weights as int8 and quantise each layer's input on the fly (int8 arithmetic);
# "normal" expands int8 weights to float32 at load. On fp32/fp16 files both run the same.
MNN_MEMORY_MODES = ("normal", "low")
_MNN_MEMORY_CODE = {"normal": 0, "low": 2}
INT8_COMPUTE = ("auto", "on", "off")


def default_threads() -> int:
    """The cores this process may run on (a board has 4-8; MNN's own default is 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if int(threads) != threads or threads < 1:
        raise InputError(f"threads must be an integer >= 1, not {threads!r}")
    return int(threads)


def int8_compute_default() -> bool:
    """Whether int8 files run int8 arithmetic by default here: where MNN has dot-product int8
    kernels (ARM sdot/i8mm). The pip wheel for x86 has AVX2 int8 kernels only (no AVX-512 VNNI
    compiled in); there int8 arithmetic ran the vit_t encoder 1.5x slower than fp32 (README,
    "int8"), so x86 expands int8 weights to float32 at load instead."""
    from edgesam.runtime._mnn import cpu_features

    f = cpu_features()
    return bool(f.get("i8sdot") or f.get("i8mm"))


def mnn_memory_mode(precision: str, int8_compute: str = "auto") -> str:
    """MNN memory mode for a model file of ``precision`` ("fp32", "fp16", "int8")."""
    if int8_compute not in INT8_COMPUTE:
        raise InputError(f"int8 compute must be one of {', '.join(INT8_COMPUTE)}, not {int8_compute!r}")
    if precision != "int8" or int8_compute == "off":
        return "normal"
    return "low" if int8_compute == "on" or int8_compute_default() else "normal"


class Backend(Protocol):
    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named float32/int32 arrays, returning named numpy arrays."""
        ...


class MNNBackend:
    """An .mnn model through ``MNN.nn`` Modules (shape-mutable: prompt counts vary call to call)."""

    name = "mnn"

    def __init__(self, path: Path, inputs: Sequence[str], outputs: Sequence[str], arithmetic: str = "normal",
                 threads: int | None = None, device: str = "CPU", memory: str = "normal") -> None:
        from edgesam.runtime._mnn import import_mnn

        if arithmetic not in ARITHMETIC_PRECISIONS:
            raise InputError(f"MNN runtime precision must be one of {', '.join(ARITHMETIC_PRECISIONS)}, "
                             f"not {arithmetic!r}")
        if memory not in MNN_MEMORY_MODES:
            raise InputError(f"MNN memory mode must be one of {', '.join(MNN_MEMORY_MODES)}, not {memory!r}")
        threads = resolve_threads(threads)
        self.MNN = import_mnn()
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.memory = memory
        # Integer codes: the string forms print a banner on stdout (precision) or are ignored (memory).
        # Module options were measured on the vit_t encoder (README, "MNN settings"): shape_mutable
        # and rearrange changed nothing beyond noise, and shape_mutable=False with rearrange=False
        # gave different numbers (cosine 0.99946 against fp32), so they stay as they are.
        config = {"backend": device, "precision": _MNN_PRECISION_CODE[arithmetic], "numThread": threads,
                  "memory": _MNN_MEMORY_CODE[memory]}
        rt = self.MNN.nn.create_runtime_manager((config,))
        try:
            self.module = self.MNN.nn.load_module_from_file(str(path), self.inputs, self.outputs,
                                                            runtime_manager=rt, shape_mutable=True,
                                                            rearrange=True)
        except Exception as e:  # MNN raises SystemError chained from a plain Exception
            raise BackendError(f"{path}: MNN could not load this model ({type(e).__name__})") from None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expr = self.MNN.expr
        feeds = []
        for name in self.inputs:
            arr = np.ascontiguousarray(inputs[name])
            dtype = expr.int if arr.dtype == np.int32 else expr.float
            if arr.dtype not in (np.int32, np.float32):
                arr = arr.astype(np.float32)
            feeds.append(expr.const(arr, list(arr.shape), expr.NCHW, dtype))
        outs = self.module.forward(feeds)
        result = {}
        for name, var in zip(self.outputs, outs):
            if var.data_format == expr.NC4HW4:
                var = expr.convert(var, expr.NCHW)
            result[name] = np.array(var.read(), copy=True)
        return result


class ORTBackend:
    """An .onnx model through ONNX Runtime (optional dependency: the ``ort`` extra)."""

    name = "ort"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        threads = resolve_threads(threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("backend 'ort' needs onnxruntime: pip install 'edgesam[ort]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # Worker threads spin between the ops of a run (a parked thread takes a wake-up per op;
        # the vit_t decoder, one point, interleaved medians: 22.3 against 33.8 ms parked in one
        # measurement, 25.1 against 26.8 in another) and stop spinning when the run returns.
        # Encoder and decoder are separate sessions: left spinning after a run, the encoder's
        # threads took cores from the first decoder call (100 ms against 70 ms, vit_t), and the
        # decoder's from postprocessing.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.outputs, {k: inputs[k] for k in self.inputs})
        return dict(zip(self.outputs, outs))


def openvino_low_arithmetic() -> str:
    """What OpenVINO's CPU plugin computes in at runtime precision "low" on this CPU: "bf16" (AVX512-BF16
    or AMX), "fp16" (ARM) or "fp32"."""
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f16", "f32"
    return {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")


class OpenVINOBackend:
    """An OpenVINO IR (.xml + .bin) on the CPU plugin (optional dependency: the ``openvino`` extra).

    Arithmetic is pinned to f32: left alone, the CPU plugin picks bf16 on CPUs with AMX or
    AVX512-BF16 and the numbers drift past the fp32 tolerances. ``inference_precision="low"``
    hands the choice back to the plugin (bf16 or f16 where the CPU has it, else f32).
    """

    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, inference_precision: str = "high",
                 outputs: Sequence[str] | None = None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("backend 'openvino' needs OpenVINO: pip install 'edgesam[openvino]'") from None
        threads = resolve_threads(threads)
        if inference_precision not in ("high", "low"):
            raise InputError(f"OpenVINO inference precision must be high or low, not {inference_precision!r}")
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if inference_precision == "high":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            model = core.read_model(str(path))
            if outputs is not None:  # e.g. the lowres outputs of a full decoder: skip the upscale
                keep = [model.output(n) for n in outputs]
                model = ov.Model(keep, _parameters_used(model, keep), model.friendly_name)
            # Output names as the model file gives them: after compiling, a port can carry an internal
            # alias too, and any_name may pick it (SAM 2's high_res_feats_1 came back as
            # "/conv_s1/Conv_output_0").
            names = [o.any_name for o in model.outputs]
            # inputs likewise: compiled, SAM 2's tracking decoder's image_embed port answered to
            # "/Reshape_6_output_0" as any_name (both names still reach it)
            in_names = [p.any_name for p in model.inputs]
            in_types = [p.get_element_type().get_type_name() for p in model.inputs]
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line C++ trace
            raise BackendError(f"{path}: OpenVINO could not load this model "
                               f"({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__})") \
                from None
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what the plugin really runs
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.request = self.compiled.create_infer_request()
        self._dtypes = {n: _np_dtype(ty) for n, ty in zip(in_names, in_types)}
        self.inputs = in_names
        self.outputs = names

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(inputs[k], dtype=self._dtypes[k]) for k in self.inputs}
        self.request.infer(feeds)
        # The request reuses its output buffers on the next call: copy out.
        return {name: np.array(self.request.get_tensor(name).data, copy=True) for name in self.outputs}


def _parameters_used(model, outputs: list) -> list:
    """The model's Parameters that ``outputs`` depend on, in model order (drops e.g. orig_im_size)."""
    seen, stack = set(), [o.get_node() for o in outputs]
    while stack:
        node = stack.pop()
        if node.get_name() in seen:
            continue
        seen.add(node.get_name())
        stack.extend(i.get_source_output().get_node() for i in node.inputs())
    return [p for p in model.get_parameters() if p.get_name() in seen]


def _np_dtype(ov_type: str) -> type:
    return {"f32": np.float32, "i32": np.int32, "i64": np.int64, "f16": np.float16}.get(ov_type, np.float32)


def require_tensorrt() -> None:
    """Raise a one-line BackendError unless the ``tensorrt`` Python package imports here."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        raise BackendError(f"backend 'tensorrt' needs NVIDIA TensorRT, which does not import here ({e}); "
                           "build engines on the device with the trtexec commands in the bundle's "
                           "manifest (key 'tensorrt')") from None
    except Exception as e:  # a broken install (missing libnvinfer, no CUDA driver) is also a refusal
        raise BackendError(f"backend 'tensorrt': the tensorrt package failed to import "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


@dataclass(frozen=True)
class ModelRequest:
    """What a backend needs to load one bundle model: its file and tensor names, and settings."""
    path: Path
    inputs: list  # the input names to feed (a subgraph's, e.g. a full decoder without orig_im_size)
    outputs: list  # the output names wanted (a subgraph's outputs skip the rest of the graph)
    threads: int | None
    runtime_precision: str  # "high", "normal" or "low" (backends.ARITHMETIC_PRECISIONS)
    memory: str  # MNN memory mode (mnn_memory_mode); "normal" for other backends


def _open_mnn(r: ModelRequest) -> Backend:
    return MNNBackend(r.path, r.inputs, r.outputs, r.runtime_precision, r.threads, memory=r.memory)


def _open_ort(r: ModelRequest) -> Backend:
    b = ORTBackend(r.path, r.threads)
    b.outputs = [o for o in b.outputs if o in r.outputs]  # ORT still wants every input fed
    return b


def _open_openvino(r: ModelRequest) -> Backend:
    # OpenVINO's "low" hands arithmetic precision to the plugin; MNN's "normal" has no OpenVINO twin.
    return OpenVINOBackend(r.path, r.threads, "low" if r.runtime_precision == "low" else "high", outputs=r.outputs)


@dataclass(frozen=True)
class BackendKind:
    format: str  # the manifest format of the files it runs
    open: Callable[[ModelRequest], Backend]


# The backends that run bundle models: one row each (TensorRT runs through trtexec, see require_tensorrt).
BACKEND_TABLE = {
    "mnn": BackendKind("mnn", _open_mnn),
    "ort": BackendKind("onnx", _open_ort),
    "openvino": BackendKind("openvino", _open_openvino),
}
BACKENDS = (*BACKEND_TABLE, "tensorrt")  # tensorrt: refused unless it imports (see require_tensorrt)
