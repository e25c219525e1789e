"""How to run a bundle: one typed, validated set of options shared by every entry point.

``segment``, ``everything`` and the demo hold a ``RunOptions``; ``bench`` sweeps lists of the
same settings and checks each value with the same functions. The field names and defaults
are ``SamPredictor``'s keyword arguments, so ``RunOptions(...).predictor(bundle)`` opens
exactly what ``SamPredictor(bundle, ...)`` with those keywords would.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence

from edgesam.errors import InputError
from edgesam.runtime.backends import BACKENDS, INT8_COMPUTE, ARITHMETIC_PRECISIONS, resolve_threads
from edgesam.runtime.preprocess import INTERPOLATIONS


def check_choice(what: str, value: Any, choices: Sequence[str]) -> None:
    """InputError unless ``value`` is one of ``choices`` (one message for every run option)."""
    if value not in choices:
        raise InputError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Backend, model precision and arithmetic for a bundle's encoder and decoder.

    backend: "mnn", "ort" (ONNX Runtime, fp32 only), "openvino" or "tensorrt" (refused where
      TensorRT does not import). precision: which model files ("fp32", "fp16", "int8"; the
      bundle says which it has). threads: CPU threads (None: every core this process may use).
    runtime_precision / decoder_runtime_precision: arithmetic, see ``SamPredictor`` (None: the
      decoder follows the encoder). interpolation: "pyramid" or "linear" preprocessing downscale.
    int8_compute: int8 files on MNN: "auto", "on" (int8 arithmetic) or "off".

    Checked on construction, so a ``RunOptions`` that exists is a valid one.
    """

    backend: str = "mnn"
    precision: str = "fp32"
    threads: Optional[int] = None
    runtime_precision: str = "high"
    decoder_runtime_precision: Optional[str] = None
    interpolation: str = "pyramid"
    int8_compute: str = "auto"

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, BACKENDS)
        resolve_threads(self.threads)
        check_choice("runtime precision", self.runtime_precision, ARITHMETIC_PRECISIONS)
        if self.decoder_runtime_precision is not None:
            check_choice("decoder runtime precision", self.decoder_runtime_precision, ARITHMETIC_PRECISIONS)
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        check_choice("int8 compute", self.int8_compute, INT8_COMPUTE)
        if self.backend == "ort" and self.precision != "fp32":
            raise InputError("backend 'ort' runs the fp32 ONNX models only; use --precision fp32")

    def predictor_kwargs(self) -> dict[str, Any]:
        """These options as ``SamPredictor`` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def predictor(self, bundle: Any) -> Any:
        """A ``SamPredictor`` on ``bundle`` (a path or a loaded ``Bundle``) run with these options."""
        from edgesam.runtime.predictor import SamPredictor

        return SamPredictor(bundle, **self.predictor_kwargs())


RUN_DEFAULTS = RunOptions()  # the defaults every entry point's signature reads (SamPredictor, SAM2ImagePredictor, bench)
