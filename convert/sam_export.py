"""torch -> ONNX export of the image encoder and the prompt-encoder + mask-decoder.

The decoder wrapper is written here rather than taken from the official
``SamOnnxModel`` because that one (a) picks a single mask with a
points-count heuristic the official predictor does not use, (b) repeats the
embedding per prompt with ``repeat_interleave`` and (c) computes the resize
shape in float32. This one returns all four mask tokens (the runtime slices
``[1:]`` or ``[0:1]`` exactly as ``MaskDecoder.forward`` does) and broadcasts
one embedding over a dynamic prompt batch. In the graph the MNN files are converted from, its
token->image attentions sum over the image keys in chunks (``sam_decoder.ChunkedKeyAttention``), so MNN's fp16
kernels on ARM stay accurate; decoder.onnx, which other runtimes run, sums them in one product.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgesam.convert.sam_folded import FoldedDecoderWrapper
from edgesam.convert.sam_decoder import AV_CHUNK, DecoderWrapper
from edgesam.manifest import DECODER_GRAPHS
from edgesam.specs import DECODER_INPUTS, DECODER_OUTPUTS, EMBED_SHAPE, ENCODER_INPUTS, ENCODER_OUTPUTS, IMAGE_SIZE, LOWRES

# ONNX files whose weights pass this size keep them in an external-data file beside them.
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GiB limit, with headroom



class EncoderWrapper(nn.Module):
    """Normalised, padded NCHW image -> 1x256x64x64 embedding (normalisation lives in preprocessing)."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


def dummy_decoder_inputs(b: int = 2, n: int = 3, m: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(b, n)).astype(np.float32)
    labels[:, -1] = -1
    return {
        "image_embeddings": rng.standard_normal(EMBED_SHAPE).astype(np.float32),
        "point_coords": rng.uniform(0, IMAGE_SIZE, size=(b, n, 2)).astype(np.float32),
        "point_labels": labels,
        "mask_input": rng.standard_normal((m, 1, LOWRES, LOWRES)).astype(np.float32),
        "has_mask_input": np.ones((m,), np.float32),
    }


@dataclass
class ExportResult:
    path: Path
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes,
            opset: int) -> None:
    # GELUs are exported as torch writes them (ONNX Runtime fuses that into one exact kernel);
    # the MNN conversion rewrites them so MNN's approximate fusion is not used (mnn.unfused_gelu).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic are expected here
        torch.onnx.export(module, args, str(path), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)


def export_encoder(sam: nn.Module, path: Path, opset: int) -> ExportResult:
    x = torch.randn(*ENCODER_INPUTS["image"])
    _export(EncoderWrapper(sam).eval(), (x,), path, ENCODER_INPUTS, ENCODER_OUTPUTS, None, opset)
    return ExportResult(path, ENCODER_INPUTS, ENCODER_OUTPUTS)


def decoder_wrapper(sam: nn.Module, graph: str = "reference", mnn: bool = False) -> nn.Module:
    """The module exported as the decoder: ``reference`` (``DecoderWrapper``: the official computation
    step by step) or ``folded`` (``folded_decoder.py``: the same function with the big projections
    folded onto the prompt tokens; what ``edgesam convert`` exports by default). ``mnn``: the graph
    the MNN files are converted from, with MNN's workarounds (key sums in chunks; in the folded
    graph also the image keys expanded to the prompt batch); without, the graph of decoder.onnx."""
    if graph == "folded":
        return FoldedDecoderWrapper(sam, mnn=mnn).eval()
    if graph == "reference":
        return DecoderWrapper(sam, av_chunk=AV_CHUNK if mnn else 0).eval()
    raise ValueError(f"decoder graph must be one of {DECODER_GRAPHS}, not {graph!r}")


def export_decoder(sam: nn.Module, path: Path, opset: int, graph: str = "reference", mnn: bool = False) -> ExportResult:
    feeds = dummy_decoder_inputs()
    args = tuple(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS)
    dyn = {"point_coords": {0: "B", 1: "N"}, "point_labels": {0: "B", 1: "N"},
           "mask_input": {0: "M"}, "has_mask_input": {0: "M"},
           "iou_predictions": {0: "B"}, "low_res_masks": {0: "B"}}
    _export(decoder_wrapper(sam, graph, mnn), args, path, DECODER_INPUTS, DECODER_OUTPUTS, dyn, opset)
    return ExportResult(path, DECODER_INPUTS, DECODER_OUTPUTS)


def count_flops(sam, decoder_graph: str = "reference") -> dict:
    """FLOPs (2 x multiply-adds) of the encoder and of the exported decoder graph for one prompt (a box)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            EncoderWrapper(sam)(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
        enc = fc.get_total_flops()
        feeds = dummy_decoder_inputs(b=1, n=2)
        with FlopCounterMode(display=False) as fc:
            decoder_wrapper(sam, decoder_graph)(*(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS))
        dec = fc.get_total_flops()
    return {"encoder": int(enc), "decoder_per_prompt": int(dec)}
