"""One export interface per model family: everything ``convert`` needs to know about a family.

The pipeline, the parity gate, ``edgesam parity --reference torch`` and the manifest writer reach a
family only through ``family_of(model)``. Adding a family is adding a class that implements ``Family`` (in its
own module, with its model building and export wrappers, as ``sam2_family.py``) and a row in
``FAMILIES`` (or ``LAZY_FAMILIES``, when its module imports torch); docs/bundle-format.md lists what its manifest must say.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from edgesam.specs import get_spec

if TYPE_CHECKING:  # torch is imported by the implementations only
    import torch

    from edgesam.convert.sam_export import ExportResult
    from edgesam.measure.parity_engine import Contract, Runner


class Family(Protocol):
    name: str
    folds_decoder: bool  # whether --decoder-graph chooses between the folded and the reference graph
    mnn_encoder_graph: bool  # whether the MNN encoder files come from a graph of their own (export_encoder(mnn=True))

    def build(self, model: str, checkpoint: Optional[Path] = None, seed: Optional[int] = None) -> "torch.nn.Module":
        """The torch model: from an official checkpoint (weights_only loading), or seeded random weights."""

    def export_encoder(self, sam: "torch.nn.Module", path: Path, opset: int, mnn: bool = False) -> "ExportResult":
        """encoder.onnx with the tensor names of ``sections`` (or, with ``mnn``, the graph the MNN
        files are converted from, where ``mnn_encoder_graph``)."""

    def export_decoder(self, sam: "torch.nn.Module", path: Path, opset: int, graph: str,
                       mnn: bool = False) -> "ExportResult":
        """decoder.onnx (or, with ``mnn``, the graph the MNN files are converted from)."""

    def sections(self, variant: str) -> dict:
        """The manifest's "preprocess", "encoder" and "decoder" sections for this decoder variant."""

    def reference(self, sam: "torch.nn.Module") -> "Runner":
        """``sam`` as the parity engine's torch reference, with the tensor names of ``sections``."""

    def count_flops(self, sam: "torch.nn.Module", graph: str) -> dict:
        """{"encoder": FLOPs, "decoder_per_prompt": FLOPs of the exported decoder for one box}."""


class SamFamily:
    """SAM (ViT encoders) and MobileSAM (TinyViT encoder): one prompt encoder and mask decoder,
    one preprocessing, one set of tensor names; only how the torch model is built differs
    (``convert/sam_models.py``: segment-anything's or mobile_sam's registry)."""

    folds_decoder = True
    mnn_encoder_graph = False

    def __init__(self, name: str) -> None:
        self.name = name

    def build(self, model: str, checkpoint: Optional[Path] = None, seed: Optional[int] = None):
        from edgesam.convert import sam_models as models

        if (checkpoint is None) == (seed is None):
            raise ValueError("give a checkpoint or a random-init seed, not both or neither")
        return models.random_model(model, seed) if checkpoint is None else models.model_from_checkpoint(model,
                                                                                                       checkpoint)

    def export_encoder(self, sam, path: Path, opset: int, mnn: bool = False):
        from edgesam.convert import sam_export as export

        return export.export_encoder(sam, path, opset)

    def export_decoder(self, sam, path: Path, opset: int, graph: str, mnn: bool = False):
        from edgesam.convert import sam_export as export

        return export.export_decoder(sam, path, opset, graph=graph, mnn=mnn)

    def sections(self, variant: str) -> dict:
        from edgesam.manifest import sam_sections

        return sam_sections(variant)

    def reference(self, sam):
        from edgesam.convert.reference import torch_runner

        return torch_runner(sam)

    def count_flops(self, sam, graph: str) -> dict:
        from edgesam.convert.sam_export import count_flops

        return count_flops(sam, decoder_graph=graph)


def _sam2() -> Family:
    from edgesam.convert.sam2_family import Sam2Family  # torch at import: only when asked for

    return Sam2Family()


FAMILIES: dict[str, Family] = {"sam": SamFamily("sam"), "mobilesam": SamFamily("mobilesam")}
LAZY_FAMILIES = {"sam2": _sam2}


def family_of(model: str) -> Family:
    """The family that exports ``model`` (an InputError naming the models for an unknown one)."""
    family = get_spec(model).family
    if family not in FAMILIES:
        FAMILIES[family] = LAZY_FAMILIES[family]()
    return FAMILIES[family]


def contract(family: Family, variant: str) -> "Contract":
    """The tensor names and geometry a bundle of this family and decoder variant will have."""
    from edgesam.manifest import parse_sections
    from edgesam.measure.parity_engine import Contract

    return Contract(*parse_sections(family.sections(variant), "convert"))
