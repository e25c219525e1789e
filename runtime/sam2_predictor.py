"""``SAM2ImagePredictor`` without torch: the official SAM 2 image API on a SAM 2 / 2.1 bundle.

Everything after construction is ``sam2.sam2_image_predictor.SAM2ImagePredictor``'s API: the same
methods, arguments, shapes and dtypes (masks come back as float32 0/1, or logits with
``return_logits``; low-res logits clamped to +-32). Preprocessing, prompt layout and the token rule
come from the bundle's manifest, as for ``SamPredictor``, which this class extends (so the
automatic mask generator and the CLI run it too).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from edgesam.bundle import Bundle
from edgesam.errors import BundleError, InputError
from edgesam.runtime.options import RUN_DEFAULTS
from edgesam.runtime.predictor import SamPredictor


def _as_rgb_array(image) -> np.ndarray:
    """A numpy HWC RGB image, or a PIL image (converted to RGB as ``ToTensor`` reads it)."""
    if isinstance(image, np.ndarray):
        return image
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image, without importing PIL
        return np.asarray(image.convert("RGB"))
    raise InputError(f"image must be an HxWx3 uint8 numpy array or a PIL image, got {type(image).__name__}")


class SAM2ImagePredictor(SamPredictor):
    """Drop-in for ``sam2.sam2_image_predictor.SAM2ImagePredictor`` on an edgesam SAM 2 bundle.

    ``sam_model`` is a bundle folder (or a loaded ``Bundle``) where the official class takes a
    model; ``mask_threshold``, ``max_hole_area`` and ``max_sprinkle_area`` are the official
    keywords (``mask_threshold`` left out: the bundle's, its manifest's ``decoder.mask_threshold``);
    ``backend``, ``precision``, ``threads`` and the rest are ``SamPredictor``'s.
    """

    def __init__(self, sam_model: str | os.PathLike | Bundle, mask_threshold: Optional[float] = None,
                 max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0, *,
                 backend: str = RUN_DEFAULTS.backend, precision: str = RUN_DEFAULTS.precision,
                 threads: Optional[int] = RUN_DEFAULTS.threads, runtime_precision: str = RUN_DEFAULTS.runtime_precision,
                 interpolation: str = RUN_DEFAULTS.interpolation,
                 decoder_runtime_precision: Optional[str] = RUN_DEFAULTS.decoder_runtime_precision,
                 int8_compute: str = RUN_DEFAULTS.int8_compute) -> None:
        super().__init__(sam_model, backend=backend, precision=precision, threads=threads,
                         runtime_precision=runtime_precision, interpolation=interpolation,
                         decoder_runtime_precision=decoder_runtime_precision, int8_compute=int8_compute)
        if self.bundle.spec.family != "sam2":
            raise BundleError(f"{self.bundle.root}: a {self.bundle.spec.family} bundle; SAM2ImagePredictor "
                              "runs SAM 2 bundles (use SamPredictor for SAM and MobileSAM)")
        if mask_threshold is None:
            mask_threshold = self.bundle.spec.decoder.mask_threshold
        for name, v in (("mask_threshold", mask_threshold), ("max_hole_area", max_hole_area),
                        ("max_sprinkle_area", max_sprinkle_area)):
            if not np.isfinite(float(v)):
                raise InputError(f"{name} must be a finite number, not {v}")
        self.mask_threshold = float(mask_threshold)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self._batch: list[tuple[dict, tuple[int, int]]] = []

    # --- image ----------------------------------------------------------------------------
    def set_image(self, image, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 RGB numpy image or a PIL image (the official class takes RGB)."""
        super().set_image(_as_rgb_array(image), image_format)
        self._batch = []

    def set_image_batch(self, image_list: list) -> None:
        """Embed several RGB images; ``predict_batch`` then prompts each of them."""
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise InputError("image_list must be a non-empty list of HxWx3 uint8 RGB images")
        batch = []
        for image in image_list:
            SamPredictor.set_image(self, _as_rgb_array(image))
            batch.append((self._encoded, self.original_size))
        self._batch = batch  # the last image stays set, as predict() on the official class uses it

    def reset_predictor(self) -> None:
        self.reset_image()
        self._batch = []

    @property
    def _is_image_set(self) -> bool:
        return self.is_image_set

    @property
    def _orig_hw(self) -> list[tuple[int, int]]:
        return [hw for _, hw in self._batch] if self._batch else ([self.original_size] if self.is_image_set else [])

    @property
    def _features(self) -> Optional[dict]:
        """The encoder outputs as the official predictor keeps them ("image_embed", "high_res_feats")."""
        if not self.is_image_set:
            return None
        enc = self._encoded
        names = self.bundle.spec.encoder
        return {"image_embed": enc[names.embedding_output],
                "high_res_feats": [enc[n] for n in names.outputs if n != names.embedding_output]}

    # --- prompts --------------------------------------------------------------------------
    def predict(self, point_coords: Optional[np.ndarray] = None, point_labels: Optional[np.ndarray] = None,
                box: Optional[np.ndarray] = None, mask_input: Optional[np.ndarray] = None,
                multimask_output: bool = True, return_logits: bool = False, normalize_coords: bool = True):
        """Prompts on the current image -> (masks CxHxW float32, iou_predictions C float32, low-res
        logits Cx256x256 float32); with a batch of prompts (BxNx2 points or Bx4 boxes) the leading B
        stays, as the official ``squeeze(0)`` leaves it. ``normalize_coords=False``: coordinates are
        already in [0, 1] of the image's width and height."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return self._predict_one(point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                                 normalize_coords)

    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None,
                      mask_input_batch=None, multimask_output: bool = True, return_logits: bool = False,
                      normalize_coords: bool = True):
        """One prompt set per image of ``set_image_batch`` -> lists of masks, ious and low-res logits."""
        if not self._batch:
            raise RuntimeError("An image must be set with .set_image_batch(...) before mask prediction.")

        def item(seq, i):
            return None if seq is None else seq[i]

        masks, ious, lows = [], [], []
        for i, (encoded, hw) in enumerate(self._batch):
            self._encoded, self.original_size = encoded, hw
            self.features = encoded[self.bundle.spec.encoder.embedding_output]
            m, s, low = self._predict_one(item(point_coords_batch, i), item(point_labels_batch, i),
                                          item(box_batch, i), item(mask_input_batch, i), multimask_output,
                                          return_logits, normalize_coords)
            masks.append(m)
            ious.append(s)
            lows.append(low)
        return masks, ious, lows

    def _predict_one(self, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                     normalize_coords):
        h, w = self.original_size
        if point_coords is not None and not normalize_coords:
            point_coords = np.asarray(point_coords, np.float64) * np.array([w, h], np.float64)
        if box is not None and not normalize_coords:
            box = (np.asarray(box, np.float64).reshape(-1, 2, 2) * np.array([w, h], np.float64)).reshape(-1, 4)
        # masks bool (> mask_threshold) unless return_logits; holes and sprinkles filled first
        out = [a.astype(np.float32, copy=False) for a in SamPredictor.predict_batch(
            self, point_coords, point_labels, box, mask_input, multimask_output, return_logits)]
        if out[0].shape[0] == 1:  # the official squeeze(0): one prompt loses its batch axis
            out = [a[0] for a in out]
        return tuple(out)

    def get_image_embedding(self) -> np.ndarray:
        """The 1x256x64x64 ``image_embed`` of the current image."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
        return self._features["image_embed"]
