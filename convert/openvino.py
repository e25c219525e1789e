"""ONNX -> OpenVINO IR (``.xml`` graph + ``.bin`` weights), fp32 or fp16-compressed.

Uses ``Core.read_model`` (the ONNX frontend) and ``save_model``, never
``openvino.convert_model`` / ``ovc``: those go through OpenVINO's telemetry
module. As with MNN, success is judged by loading the written IR back.

"fp16" here is weight storage only (``compress_to_fp16``): the CPU plugin
decompresses the weights at compile time and the arithmetic follows the
runtime's inference precision (edgesam asks for f32, see runtime/backends.py).
"""
from __future__ import annotations

from pathlib import Path

from edgesam.errors import ConversionError

PRECISIONS = ("fp32", "fp16")  # int8 would need NNCF calibration: not offered


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise ConversionError("--format openvino needs OpenVINO: pip install 'edgesam[openvino]'") from None
    return openvino


def openvino_version() -> str:
    return import_openvino().__version__


def onnx_to_openvino(onnx_path: Path, xml_path: Path, precision: str) -> dict:
    """Write ``xml_path`` and its ``.bin``; returns {"xml", "bin", "inputs", "outputs"} as read back."""
    if precision not in PRECISIONS:
        raise ConversionError(f"OpenVINO IR is written at {' or '.join(PRECISIONS)}, not {precision!r}")
    ov = import_openvino()
    core = ov.Core()
    try:
        model = core.read_model(str(onnx_path))
    except Exception as e:  # the frontend raises a plain RuntimeError subclass with a long text
        raise ConversionError(f"OpenVINO could not read {onnx_path.name}: {str(e).splitlines()[0][:200]}") from None
    # The dynamic prompt axes (B, N, M) stay dynamic: read_model keeps ONNX dim_params as "?".
    try:
        ov.save_model(model, str(xml_path), compress_to_fp16=precision == "fp16")
    except Exception as e:
        raise ConversionError(f"OpenVINO could not save {xml_path.name}: {str(e).splitlines()[0][:200]}") from None
    bin_path = xml_path.with_suffix(".bin")
    for p in (xml_path, bin_path):
        if not p.is_file() or p.stat().st_size == 0:
            raise ConversionError(f"OpenVINO wrote no {p.name} for {onnx_path.name}")
    try:  # read back and compile: a file that does not load must never reach the manifest
        back = core.read_model(str(xml_path))
        core.compile_model(back, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as e:
        raise ConversionError(f"OpenVINO IR {xml_path.name} does not load: {str(e).splitlines()[0][:200]}") from None

    def dims(port):
        return [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]

    return {"xml": xml_path.name, "bin": bin_path.name,
            "inputs": {p.any_name: dims(p) for p in back.inputs},
            "outputs": {p.any_name: dims(p) for p in back.outputs}}
