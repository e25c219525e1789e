"""Torch as a parity reference: a model's export wrappers behind the runtime's Backend protocol.

One adapter for every caller: the convert gate and ``edgesam parity --reference torch``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from edgesam.manifest import SAM_TENSORS
from edgesam.measure.parity_engine import Runner
from edgesam.specs import DECODER_INPUTS

if TYPE_CHECKING:
    from edgesam.bundle import Bundle


class TorchBackend:
    """A torch module fed named numpy arrays (in ``inputs`` order), returning named numpy arrays."""

    name = "torch"

    def __init__(self, module: torch.nn.Module, inputs: list[str], outputs: list[str]) -> None:
        self.module, self.inputs, self.outputs = module.eval(), inputs, outputs

    @torch.no_grad()
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.module(*(torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in self.inputs))
        outs = outs if isinstance(outs, tuple) else (outs,)
        return {name: o.numpy() for name, o in zip(self.outputs, outs)}


def torch_runner(sam: torch.nn.Module, label: str = "torch") -> Runner:
    """``sam`` (SAM / MobileSAM) as the two models a bundle holds, with the bundle's tensor names."""
    from edgesam.convert.sam_export import DecoderWrapper, EncoderWrapper

    enc, out = SAM_TENSORS["encoder"], SAM_TENSORS["outputs"]

    def load():
        return (TorchBackend(EncoderWrapper(sam), [enc["image_input"]], [enc["embedding_output"]]),
                TorchBackend(DecoderWrapper(sam), list(DECODER_INPUTS), [out["scores"], out["low_res_logits"]]))

    return Runner(label, "fp32", load)


def bundle_reference(bundle: "Bundle", checkpoint: Optional[str]) -> Runner:
    """The bundle's weights in torch, as the convert gate's reference: what ``edgesam parity
    --reference torch`` compares against (the weights rebuilt from the seed, or the checkpoint, which
    must be the one the bundle was made from)."""
    from edgesam.convert.families import family_of
    from edgesam.errors import InputError

    ck = bundle.manifest["checkpoint"]
    family = family_of(bundle.model)
    if "random_init_seed" in ck:
        sam = family.build(bundle.model, seed=int(ck["random_init_seed"]))
    else:
        if not checkpoint:
            raise InputError("this bundle was made from a checkpoint: pass --checkpoint PATH for --reference torch")
        from edgesam.bundle import sha256_file

        if sha256_file(Path(checkpoint)) != ck.get("sha256"):
            raise InputError(f"{checkpoint}: sha256 differs from the checkpoint this bundle was made from")
        sam = family.build(bundle.model, checkpoint=Path(checkpoint))
    return family.reference(sam)
