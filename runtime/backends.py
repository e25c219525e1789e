"""Backends: one protocol, ``run(inputs) -> outputs``, over MNN, ONNX Runtime and OpenVINO.

Encoder and decoder are built on top of a Backend; no backend knows about SAM.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from edgesam.errors import BackendError, InputError

MNN_PRECISIONS = ("high", "normal", "low")  # runtime arithmetic; "low" = fp16 on ARMv8.2+
_MNN_PRECISION_CODE = {"normal": 0, "high": 1, "low": 2}


class Backend(Protocol):
    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named float32/int32 arrays, returning named numpy arrays."""
        ...


class MNNBackend:
    """An .mnn model through ``MNN.nn`` Modules (shape-mutable: prompt counts vary call to call)."""

    name = "mnn"

    def __init__(self, path: Path, inputs: Sequence[str], outputs: Sequence[str], precision: str = "normal",
                 threads: int = 2, device: str = "CPU") -> None:
        from edgesam.runtime._mnn import import_mnn

        if precision not in MNN_PRECISIONS:
            raise InputError(f"MNN runtime precision must be one of {', '.join(MNN_PRECISIONS)}, not {precision!r}")
        if threads < 1:
            raise InputError(f"threads must be >= 1, not {threads}")
        self.MNN = import_mnn()
        self.inputs, self.outputs = list(inputs), list(outputs)
        # Integer precision codes: the string forms print a banner on stdout.
        config = {"backend": device, "precision": _MNN_PRECISION_CODE[precision], "numThread": int(threads)}
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

    def __init__(self, path: Path, threads: int = 2) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("backend 'ort' needs onnxruntime: pip install 'edgesam[ort]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # Encoder and decoder are separate sessions: with spinning on, the encoder's idle
        # threads spin while the first decoder call runs (measured: 100 ms vs 70 ms, vit_t).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.outputs, {k: inputs[k] for k in self.inputs})
        return dict(zip(self.outputs, outs))


BACKEND_FORMATS = {"mnn": "mnn", "ort": "onnx", "openvino": "openvino"}
