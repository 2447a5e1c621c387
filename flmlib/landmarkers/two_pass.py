"""Two-pass landmarkers: a first CNN's points align the face, a second CNN trained on aligned faces refines them.

The first pass runs on the face box as any :class:`~flmlib.landmarkers.cnn.CNNLandmarker` does. Its inner points
(17-67) give a similarity that maps them onto the mean shape the second network was trained with
(:mod:`flmlib.alignment`); the second network sees that aligned crop (upright, at one scale and position: trained on
``training_crops --aligned`` data) and its points go back to the image through the inverse similarity.

A two-pass model file (written by :func:`flmlib.models.write_two_pass_model` at the end of ``train_two_pass@<id>``)
is the second model's file with the first model's file nested under ``first_pass``, so one ``models/<id>.pt`` holds
the whole method and :func:`flmlib.landmarkers.cnn.build` opens it like any model file.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from flmlib.alignment import alignment_matrices, box_in_crop, invert_matrices, map_points
from flmlib.landmarkers.base import MethodSpec, check_batch
from flmlib.models import build_from_blob, read_model_file, write_two_pass_model
from flmlib.paths import project_path

N_POINTS = 68


class TwoPassLandmarker:
    """First pass on the face box, second pass on the aligned crop (module docstring).

    Args:
        first: the first-pass landmarker (any landmarker with ``predict_batch``).
        second: the second-pass :class:`~flmlib.landmarkers.cnn.CNNLandmarker`; its model config holds
            ``alignment.mean`` ``(68, 2)`` box units.
        spec: the method's spec (its id names the predictions).
    """

    def __init__(self, first, second, spec: MethodSpec | None = None):
        alignment = second.config.get("alignment")
        if not alignment:
            raise ValueError(f"{second.source}: the second pass must be trained on aligned crops")
        self.first, self.second = first, second
        self.mean = np.asarray(alignment["mean"], np.float64)
        if self.mean.shape != (N_POINTS, 2):
            raise ValueError(f"{second.source}: alignment mean has shape {self.mean.shape}, expected (68, 2)")
        self.spec = spec if spec is not None else MethodSpec(id=f"{first.name}+{second.name}", kind="cnn")
        geometry = second.geometry
        # Aligned crop pixels -> the second network's input pixels: the mean-shape box becomes the input, edge to
        # edge, so the input is cut from the image in one resample (no context crop in between).
        box = box_in_crop(geometry.crop_size, geometry.context_factor)
        scale = geometry.input_size / (box[2] - box[0])
        self._crop_to_input = np.array([[scale, 0.0, -0.5 - scale * box[0]], [0.0, scale, -0.5 - scale * box[1]]])
        self._input_box = np.array([-0.5, -0.5, geometry.input_size - 0.5, geometry.input_size - 0.5])

    @property
    def name(self) -> str:
        return self.spec.id

    @property
    def networks(self) -> tuple:
        """The two torch modules (first pass, second pass); ``None`` for one run by ONNX Runtime."""
        return (getattr(self.first, "model", None), self.second.model)

    @classmethod
    def from_file(cls, path: str | Path, spec: MethodSpec | None = None, **kwargs) -> "TwoPassLandmarker":
        """Open a two-pass model file; ``kwargs`` (``device``, ``batch_size``, ``threads``, ``backend``,
        ``precision``) apply to both networks, ``flip_test`` to the second only (the first pass only has to align
        the face)."""
        path = project_path(path)
        return cls.from_blob(read_model_file(path), str(path), spec=spec, **kwargs)

    @classmethod
    def from_blob(cls, blob: dict, source: str, spec: MethodSpec | None = None, **kwargs) -> "TwoPassLandmarker":
        """A two-pass model file's dict (:func:`flmlib.models.read_model_file`); ``source`` names it in errors."""
        from flmlib.landmarkers.cnn import CNNLandmarker

        if "first_pass" not in blob:
            raise ValueError(f"{source}: not a two-pass model file (no first_pass)")
        flip_test = kwargs.pop("flip_test", False)
        first = CNNLandmarker.from_model(*build_from_blob(blob["first_pass"], f"{source} (first pass)"),
                                         source=f"{source} (first pass)", **kwargs)
        second = CNNLandmarker.from_model(*build_from_blob(blob, source), source=source, flip_test=flip_test, **kwargs)
        return cls(first, second, spec=spec)

    def input_matrices(self, points: np.ndarray) -> np.ndarray:
        """``(N, 68, 2)`` first-pass image points -> ``(N, 2, 3)`` image -> second-network-input maps."""
        geometry = self.second.geometry
        to_crop = alignment_matrices(points, self.mean, geometry.crop_size, geometry.context_factor)
        linear, shift = self._crop_to_input[:, :2], self._crop_to_input[:, 2]
        return np.concatenate([linear @ to_crop[:, :, :2], (to_crop[:, :, 2] @ linear.T + shift)[:, :, None]], axis=2)

    def refine(self, images: Sequence[np.ndarray], points: np.ndarray) -> np.ndarray:
        """The second pass: one image per face and the ``(N, 68, 2)`` first-pass points -> ``(N, 68, 2) float32``."""
        if len(points) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32)
        matrices = self.input_matrices(points)
        # the crops flmlib.alignment.aligned_crops cuts (and training's aligned crops were cut with), pixel for pixel
        inputs = self.second.cutter.cut_affine(images, matrices, self.second.geometry.input_size)
        boxes = np.tile(self._input_box.astype(np.float32), (len(points), 1))
        in_input = self.second.points_from_inputs(self.second.input_tensor(inputs), boxes)
        return map_points(in_input, invert_matrices(matrices)).astype(np.float32)

    def predict(self, image: np.ndarray, boxes) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB image and ``(K, 4)`` boxes -> ``(K, 68, 2) float32`` image pixels."""
        return self.predict_batch([image], [boxes])[0]

    def predict_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> list[np.ndarray]:
        """Many images, each with its ``(K_i, 4)`` boxes -> a list of ``(K_i, 68, 2) float32`` image pixels."""
        images, boxes_list = check_batch(images, boxes_list)
        counts = [len(b) for b in boxes_list]
        first = self.first.predict_batch(images, boxes_list)
        if sum(counts) == 0:
            return first
        per_face = [image for image, count in zip(images, counts) for _ in range(count)]
        refined = self.refine(per_face, np.concatenate(first))
        return np.split(refined, np.cumsum(counts)[:-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a two-pass model file: a first model on face boxes and a "
                                                 "second trained on aligned crops, in one file.")
    parser.add_argument("--first", required=True, help="first-pass model file (trained on face boxes)")
    parser.add_argument("--second", required=True, help="second-pass model file (trained on aligned crops)")
    parser.add_argument("--out", required=True, help="the two-pass model file to write")
    args = parser.parse_args(argv)
    print(f"wrote {write_two_pass_model(args.first, args.second, args.out)}")


if __name__ == "__main__":
    main()
