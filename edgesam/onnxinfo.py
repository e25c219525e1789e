"""What an ONNX file says about itself, read without the ``onnx`` package: its ``metadata_props``
(edgesam writes the model, role, contract, checkpoint sha256 and edgesam version there) and its
graph's inputs and outputs with their element types and shapes.

``edgesam info FILE.onnx`` runs on a device that has only MNN and numpy, and a vit_h file is about
2 GB, so this walks the protobuf wire format and seeks past everything it does not read (the
weights, the nodes); it never holds the file in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from edgesam.errors import InputError

# onnx.proto field numbers
MODEL_PRODUCER_NAME, MODEL_PRODUCER_VERSION, MODEL_GRAPH, MODEL_OPSET, MODEL_METADATA = 2, 3, 7, 8, 14
GRAPH_INPUT, GRAPH_OUTPUT = 11, 12
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
              10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass
class OnnxSummary:
    producer: str = ""
    opset: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[str, str, list]] = field(default_factory=list)  # (name, dtype, dims)
    outputs: list[tuple[str, str, list]] = field(default_factory=list)


class _Truncated(Exception):
    pass


def _varint(f: BinaryIO) -> int | None:
    """The next varint, or None at a clean end of file."""
    shift = value = 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise _Truncated()
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise _Truncated()


def _fields(f: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, wire type, value) up to offset ``end``: for a length-delimited field the value is
    its length and the file is left at its first byte; the caller reads it or not (it is skipped)."""
    while f.tell() < end:
        tag = _varint(f)
        if tag is None:
            raise _Truncated()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            yield number, wire, _varint(f)
        elif wire == 2:
            n = _varint(f)
            start = f.tell()
            if n is None or start + n > end:
                raise _Truncated()
            yield number, wire, n
            f.seek(start + n)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, 1)
        else:
            raise _Truncated()
    if f.tell() != end:
        raise _Truncated()


def _text(f: BinaryIO, n: int) -> str:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated()
    return data.decode("utf-8", "replace")


def _value_info(f: BinaryIO, end: int) -> tuple[str, str, list]:
    name, dtype, dims = "", "?", []
    for num, wire, v in _fields(f, end):
        if num == 1 and wire == 2:
            name = _text(f, v)
        elif num == 2 and wire == 2:  # TypeProto
            for tnum, twire, tv in _fields(f, f.tell() + v):
                if tnum == 1 and twire == 2:  # tensor_type
                    for nnum, nwire, nv in _fields(f, f.tell() + tv):
                        if nnum == 1 and nwire == 0:
                            dtype = ELEM_TYPES.get(nv, f"type {nv}")
                        elif nnum == 2 and nwire == 2:  # shape
                            for _, dwire, dv in _fields(f, f.tell() + nv):
                                if dwire == 2:
                                    dims.append(_dim(f, f.tell() + dv))
    return name, dtype, dims


def _dim(f: BinaryIO, end: int):
    dim: int | str = "?"
    for num, wire, v in _fields(f, end):
        if num == 1 and wire == 0:
            dim = v
        elif num == 2 and wire == 2:
            dim = _text(f, v)
    return dim


def read_onnx_summary(path: str | Path) -> OnnxSummary:
    """The metadata and graph inputs/outputs of an ONNX file; an InputError (one line) if it is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            s = OnnxSummary()
            seen_graph = False
            for num, wire, v in _fields(f, size):
                if num in (MODEL_PRODUCER_NAME, MODEL_PRODUCER_VERSION) and wire == 2:
                    s.producer = (s.producer + " " + _text(f, v)).strip()
                elif num == MODEL_OPSET and wire == 2:
                    domain, version = "", None
                    for onum, owire, ov in _fields(f, f.tell() + v):
                        if onum == 1 and owire == 2:
                            domain = _text(f, ov)
                        elif onum == 2 and owire == 0:
                            version = ov
                    if domain in ("", "ai.onnx"):
                        s.opset = version
                elif num == MODEL_METADATA and wire == 2:
                    key = value = ""
                    for mnum, mwire, mv in _fields(f, f.tell() + v):
                        if mnum == 1 and mwire == 2:
                            key = _text(f, mv)
                        elif mnum == 2 and mwire == 2:
                            value = _text(f, mv)
                    s.metadata[key] = value
                elif num == MODEL_GRAPH and wire == 2:
                    seen_graph = True
                    for gnum, gwire, gv in _fields(f, f.tell() + v):
                        if gnum in (GRAPH_INPUT, GRAPH_OUTPUT) and gwire == 2:
                            (s.inputs if gnum == GRAPH_INPUT else s.outputs).append(_value_info(f, f.tell() + gv))
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except _Truncated:
        raise InputError(f"{path}: not an ONNX model (truncated or not a protobuf ModelProto)") from None
    if not seen_graph or not s.outputs:
        raise InputError(f"{path}: not an ONNX model (no graph with outputs)")
    return s


def format_summary(path: str | Path, s: OnnxSummary) -> str:
    def io(rows):
        return ", ".join(f"{n} {t}[{','.join(str(d) for d in dims)}]" for n, t, dims in rows)

    lines = [f"onnx {path}: opset {s.opset}, producer {s.producer or '?'}",
             f"inputs:  {io(s.inputs)}", f"outputs: {io(s.outputs)}"]
    if s.metadata:
        lines.append("metadata_props:")
        lines += [f"  {k}: {v}" for k, v in s.metadata.items()]
    else:
        lines.append("metadata_props: none (not written by edgesam, or stripped)")
    return "\n".join(lines)
