"""Torch as a parity reference: a model's export wrappers behind the runtime's Backend protocol.

One adapter for every caller: the convert gate and ``edgesam parity --reference torch``.
"""
from __future__ import annotations

import numpy as np
import torch

from edgesam.manifest import SAM_TENSORS
from edgesam.measure.engine import Runner
from edgesam.specs import DECODER_INPUTS


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
    from edgesam.convert.export import DecoderWrapper, EncoderWrapper

    enc, out = SAM_TENSORS["encoder"], SAM_TENSORS["outputs"]

    def load():
        return (TorchBackend(EncoderWrapper(sam), [enc["image_input"]], [enc["embedding_output"]]),
                TorchBackend(DecoderWrapper(sam), list(DECODER_INPUTS), [out["scores"], out["low_res_logits"]]))

    return Runner(label, "fp32", load)
