"""Where a landmark CNN's input comes from: the crop geometry of its model file, and the cutting of those crops.

A model trained by the study sees a context crop (``crop_size`` pixels, ``context_factor`` times the face box) and, in
evaluation, the face box resampled to ``input_size`` (:func:`flmlib.augment.central_box`). :class:`CropGeometry`
holds those three numbers (from the model file's input spec) and says whether the network input can be cut straight
from the image; :class:`CropCutter` cuts crops of many faces (context crops of face boxes, or through any image ->
crop map), on several threads for large batches.

Shapes: images ``(H, W, 3) uint8`` RGB; boxes ``(K, 4)`` float ``(x0, y0, x1, y1)`` edges in image pixels; crops
``(N, size, size, 3) uint8``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from flmlib.augment import central_box
from flmlib.crops import crop_affine
from flmlib.landmarkers.base import check_batch
from flmlib.landmarkers.crop_plans import check_crop_matrices, context_matrices, cut_planned, plan_crops

#: Context factor of a crop that is the face box itself (the network input, cut straight from the image).
BOX_ONLY = 1.0
#: Below this many faces per thread, handing crops to a thread pool costs more than it saves.
MIN_FACES_PER_CROP_THREAD = 16
#: Below this many faces, planning the crops as a batch (about 0.1 ms of numpy calls) costs more than it saves.
MIN_FACES_TO_PLAN = 4


@dataclass(frozen=True)
class CropGeometry:
    """The input spec of a model file: ``input_size`` (network input side, pixels), ``crop_size`` (context crop
    side, pixels) and ``context_factor`` (context crop side / face box side)."""

    input_size: int
    crop_size: int
    context_factor: float

    @classmethod
    def from_config(cls, config: dict) -> "CropGeometry":
        return cls(int(config["input_size"]), int(config["crop_size"]), float(config["context_factor"]))

    @property
    def cuts_inputs_directly(self) -> bool:
        """Whether the network input can be cut straight from the image.

        True when the face box spans exactly ``input_size`` pixels of the context crop, starting on a whole pixel
        (the study's 96 px crop at context factor 2 with a 48 px input): training's un-augmented input is then the
        central part of the context crop, copied without resampling.
        """
        inner = self.crop_size / self.context_factor
        return inner == self.input_size and (self.crop_size - self.input_size) % 2 == 0

    @torch.inference_mode()
    def network_inputs(self, crops: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        """Context crops ``(N, S, S, 3) uint8`` -> network inputs ``(N, 3, s, s) float32`` 0..255 on ``device``.

        This is the training code's evaluation transform (no augmentation), :func:`flmlib.augment.central_box`: the
        face box of each crop resampled to ``input_size``.
        """
        crops = torch.as_tensor(crops)
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (self.crop_size, self.crop_size, 3) or crops.dtype != torch.uint8:
            raise ValueError(
                f"context crops must be (N, {self.crop_size}, {self.crop_size}, 3) uint8 for this model (crop_size"
                f" {self.crop_size}), got {crops.dtype} {tuple(crops.shape)}"
            )
        return central_box(crops.to(device).permute(0, 3, 1, 2), self.input_size, self.context_factor)

    @staticmethod
    @torch.inference_mode()
    def input_tensor(input_crops: np.ndarray, device: torch.device) -> torch.Tensor:
        """Network inputs cut straight from images ``(N, s, s, 3) uint8`` -> ``(N, 3, s, s) float32`` 0..255 on
        ``device`` (NHWC viewed as channels-last NCHW, the layout the network runs in)."""
        return torch.from_numpy(input_crops).to(device).permute(0, 3, 1, 2).float()


class CropCutter:
    """Cuts the crops of many faces, in order: :func:`flmlib.crops.crop_context` crops of face boxes (:meth:`cut`) or
    crops through any image -> crop maps (:meth:`cut_affine`, e.g. a second pass's aligned faces).

    The crops are those :func:`flmlib.crops.crop_affine` makes, pixel for pixel; from :data:`MIN_FACES_TO_PLAN` faces
    on, their geometry is worked out for the whole batch at once (:mod:`flmlib.landmarkers.crop_plans`). A large batch is cut on
    ``torch.get_num_threads()`` threads (OpenCV releases the GIL), so the crops spread over the cores like the network
    that follows them; OpenCV's own thread pool is held to one thread meanwhile (:func:`opencv_single_threaded`). The
    pool belongs to the cutter (one per landmarker): use one landmarker per calling thread.
    """

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def cut(self, images: Sequence[np.ndarray], boxes_list: Sequence, size: int, context_factor: float) -> np.ndarray:
        """``(N, size, size, 3) uint8`` crops; ``images`` ``(H, W, 3) uint8``, ``boxes_list`` per image ``(K_i, 4)``."""
        images, boxes_list = check_batch(images, boxes_list)
        per_face = [image for image, boxes in zip(images, boxes_list) for _ in boxes]
        boxes = np.concatenate(boxes_list) if boxes_list else np.zeros((0, 4))
        return self.cut_affine(per_face, context_matrices(boxes, size, context_factor), size)

    def cut_affine(self, images: Sequence[np.ndarray], matrices: np.ndarray, size: int) -> np.ndarray:
        """``(N, size, size, 3) uint8`` anti-aliased crops, one per face.

        Args:
            images: one ``(H, W, 3) uint8`` RGB image per face (the same array may repeat for faces of one image).
            matrices: ``(N, 2, 3)`` image -> crop maps (scalings or similarities).
        Raises:
            ValueError: counts that differ, or a map that is not finite or not invertible (the message names its face).
        """
        matrices = check_crop_matrices(matrices)
        if len(images) != len(matrices):
            raise ValueError(f"{len(images)} images but {len(matrices)} matrices")
        crops = np.empty((len(images), size, size, 3), np.uint8)
        if len(images) < MIN_FACES_TO_PLAN:  # a webcam frame's face or two: crop_affine itself, the same pixels
            for i, (image, matrix) in enumerate(zip(images, matrices)):
                crops[i] = crop_affine(image, matrix, size)
            return crops
        plans = plan_crops(np.array([image.shape[:2] for image in images]), matrices, size)

        def cut(start: int, stop: int) -> None:
            for i in range(start, stop):
                crops[i] = cut_planned(images[i], plans, i)

        pool_size = torch.get_num_threads()
        chunks = max(1, min(pool_size, len(images) // MIN_FACES_PER_CROP_THREAD))
        if chunks == 1:
            cut(0, len(images))
            return crops
        if self._pool_size != pool_size:  # created on first use; again only if torch's thread count changes
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="cnn-crop")
            self._pool_size = pool_size
        bounds = np.linspace(0, len(images), chunks + 1).astype(int)
        with opencv_single_threaded():
            list(self._pool.map(cut, bounds[:-1], bounds[1:]))  # list() re-raises a crop's exception here
        return crops


@contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """Run OpenCV calls without OpenCV's own worker threads, then restore its thread count.

    The cutter already spreads faces over the cores. OpenCV's workers would split each small resize and warp again,
    and they keep spinning for a while after each call, on the cores the network runs on next: with them, a
    two-pass O-Net took about 10% longer per face batched on a 2-core CPU (``flmlib.speed``).
    """
    old = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(old)
