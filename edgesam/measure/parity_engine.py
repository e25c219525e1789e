"""The one parity engine: a reference and candidates, each a pair of Backends, one report.

The convert gate (reference: torch), ``edgesam parity`` (reference: ONNX Runtime fp32, torch, or
MNN fp32 on a board) and the tests all call ``run_parity``. What differs between them is injected:
which backends, which images, which tensor names (a bundle's manifest, or the names the converter
is about to write). Stages, the same for every caller:

- ``encoder``: every encoder output against the reference's;
- ``decoder``: low-res logits and scores, fed the *reference* encoder outputs, so that the
  decoder's own error is measured apart from the encoder's;
- ``end_to_end``: the candidate's own encoder outputs into its own decoder, every mask token
  upscaled to the original image size as the runtime does it (``postprocess.upscale_logits``):
  what a user gets.

Models are loaded when their turn comes and dropped after (vit_h: GBs each).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from edgesam.manifest import DecoderSpec, EncoderSpec, Preprocess
from edgesam.measure.parity import Cell, compare, top_change_rate
from edgesam.runtime.backends import Backend

Image = tuple[str, np.ndarray]  # (name, HxWx3 uint8 RGB)


@dataclass(frozen=True)
class Runner:
    """One way to run a bundle's two models: a label, its tolerance key, and how to load them."""
    label: str  # e.g. "onnx fp32", "mnn fp16 low", "torch"
    tolerance: str  # key of measure.parity.TOLERANCES
    load: Callable[[], tuple[Backend, Backend]]


@dataclass(frozen=True)
class Contract:
    """The tensor names and the geometry the models follow (a manifest's, or the converter's)."""
    preprocess: Preprocess
    encoder: EncoderSpec
    decoder: DecoderSpec


@dataclass
class ParityReport:
    reference: str
    images: list[str]
    cells: list[Cell]
    skipped: list[str] = field(default_factory=list)  # candidates not run, with why

    @property
    def failures(self) -> list[str]:
        return [f"{c.candidate} {c.stage} {c.output}: {'; '.join(c.failures)}" for c in self.cells if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failures


def _prompt_cases(contract: Contract, size: tuple[int, int], prev_logits: Optional[np.ndarray]) -> dict:
    """The synthetic prompt set as named decoder feeds (the contract's tensor names)."""
    from edgesam.runtime.prompts import Transform
    from edgesam.synthetic.gate_inputs import prompt_set

    names = contract.decoder.inputs
    cases = prompt_set(size, None, prev_logits, Transform.of(contract.preprocess, contract.decoder))
    return {case: {names[k]: v for k, v in feeds.items()} for case, feeds in cases.items()}


class _Run:
    """One runner's outputs over every image and prompt case, concatenated per stage."""

    def __init__(self):
        self.encoded: dict[str, list] = {}
        self.logits, self.scores, self.final = [], [], []

    def result(self) -> dict:
        cat = {k: np.concatenate([a.ravel() for a in v]) for k, v in self.encoded.items()}
        return {"encoded": cat, "logits": np.concatenate(self.logits), "scores": np.concatenate(self.scores),
                "final": np.concatenate(self.final)}


def run_parity(reference: Runner, candidates: Iterable[Runner], images: Sequence[Image], contract: Contract,
               log: Callable[[str], None] = lambda m: None,
               extra: Optional[Callable[[Runner, Backend, Backend, list[dict]], list[Cell]]] = None) -> ParityReport:
    """Every candidate against the reference, at every stage (module docstring).

    ``extra(runner, encoder, decoder, references)`` adds cells of the caller's own while a candidate's
    models are loaded (the gate's full-variant ``masks`` output); ``references`` holds, per image, the
    reference's encoder outputs ("encoded"), the prompt cases' feeds ("cases") and its decoder outputs
    on them ("outputs"), so that nothing the reference computed is computed again."""
    from edgesam.runtime.postprocess import mask_geometry, upscale_logits
    from edgesam.runtime.preprocess import preprocess

    enc_names, dec = contract.encoder, contract.decoder
    low_name, score_name = dec.outputs["low_res_logits"], dec.outputs["scores"]
    pre = contract.preprocess
    ref_enc, ref_dec = reference.load()
    prepared = []  # per image: (encoder input, mask geometry (2), original size, reference outputs, prompt cases)
    references = []  # per image, for ``extra``
    ref_run = _Run()
    for _, img in images:
        size = img.shape[:2]
        x, input_size = preprocess(img, pre)
        input_size, frame = mask_geometry(pre.resize, pre.image_size, input_size, dec.lowres_size)
        encoded = ref_enc.run({enc_names.image_input: x})
        point = _prompt_cases(contract, size, None)["point"]
        first = ref_dec.run(_feeds(encoded, point, dec, size))
        cases = _prompt_cases(contract, size, first[low_name][:, dec.single_mask_token])
        prepared.append((x, input_size, frame, size, encoded, cases))
        outputs = _record(ref_run, ref_dec, encoded, encoded, cases, dec, size, input_size, frame, upscale_logits)
        references.append({"encoded": encoded, "cases": cases, "outputs": outputs})
    ref = ref_run.result()
    del ref_enc, ref_dec
    cells: list[Cell] = []
    for runner in candidates:
        log(f"  parity: {runner.label}")
        enc, dec_b = runner.load()
        run = _Run()
        for x, input_size, frame, size, ref_encoded, cases in prepared:
            own = enc.run({enc_names.image_input: x})
            _record(run, dec_b, own, ref_encoded, cases, dec, size, input_size, frame, upscale_logits)
        got = run.result()
        tol, label = runner.tolerance, runner.label
        for name in ref["encoded"]:
            cells.append(compare("encoder", name, ref["encoded"][name], got["encoded"].get(name, np.zeros(0)),
                                 tol, label, reference.label))
        cells.append(compare("decoder", low_name, ref["logits"], got["logits"], tol, label, reference.label,
                             "logits"))
        c = compare("decoder", score_name, ref["scores"], got["scores"], tol, label, reference.label, "scores")
        tokens = [dec.single_mask_token, *dec.multimask_tokens]
        c.top_change_rate = top_change_rate(ref["scores"][:, tokens], got["scores"][:, tokens])
        cells.append(c)
        cells.append(compare("end_to_end", "masks", ref["final"], got["final"], tol, label, reference.label,
                             "logits"))
        if extra is not None:
            cells.extend(extra(runner, enc, dec_b, references))
    return ParityReport(reference=reference.label, images=[n for n, _ in images], cells=cells)


def _feeds(encoded: dict, prompt: dict, dec: DecoderSpec, size: tuple[int, int]) -> dict:
    feeds = {**encoded, **prompt}
    if "orig_im_size" in dec.inputs:  # a full decoder's graph input (its masks output is not used here)
        feeds[dec.inputs["orig_im_size"]] = np.array(size, dec.orig_im_size_dtype)
    return feeds


def _record(run: _Run, decoder: Backend, own: dict, ref_encoded: dict, cases: dict, dec: DecoderSpec,
            size: tuple[int, int], input_size: tuple[int, int], frame: int, upscale) -> dict:
    """Add one image's encoder outputs, decoder outputs on the reference's encoder outputs, and
    end-to-end masks (own encoder outputs) to ``run``; return the decoder outputs per case."""
    low_name, score_name = dec.outputs["low_res_logits"], dec.outputs["scores"]
    for name, value in own.items():
        run.encoded.setdefault(name, []).append(value)
    outputs = {}
    for case, feeds in cases.items():
        out = outputs[case] = decoder.run(_feeds(ref_encoded, feeds, dec, size))
        run.logits.append(out[low_name].ravel())
        run.scores.append(out[score_name])
        mine = out if own is ref_encoded else decoder.run(_feeds(own, feeds, dec, size))
        run.final.append(upscale(mine[low_name], input_size, size, frame=frame).ravel())
    return outputs
