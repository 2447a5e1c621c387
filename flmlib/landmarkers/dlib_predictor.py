"""dlib's 68-point shape predictor (Kazemi & Sullivan's regression-tree cascade) behind the landmarker interface.

The model is ``shape_predictor_68_face_landmarks.dat`` from the ``face-recognition-models`` package.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from flmlib.crops import box_to_dlib
from flmlib.landmarkers.base import N_POINTS, MethodSpec, check_batch, check_boxes, check_image

DLIB_MODEL_FILE = "models/shape_predictor_68_face_landmarks.dat"


def dlib_model_path() -> Path:
    """Path of ``shape_predictor_68_face_landmarks.dat`` inside the installed ``face_recognition_models`` package.

    The package is located without importing it: its ``__init__`` imports ``pkg_resources``, which current
    setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face-recognition-models is not installed (it ships dlib's 68-point model)")
    path = Path(list(spec.submodule_search_locations)[0]) / DLIB_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dlib's 68-point shape predictor model is missing")
    return path


class DlibShapePredictor:
    """dlib's shape predictor. dlib returns integer part coordinates that are pixel centres, 0-based, so they are
    image pixels as they are. It works one face at a time; ``predict_batch`` is a plain loop."""

    def __init__(self, model_path: str | Path | None = None, spec: MethodSpec | None = None):
        import dlib

        self.spec = spec if spec is not None else MethodSpec(id="dlib", kind="dlib_predictor")
        self.model_path = Path(model_path) if model_path is not None else dlib_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: dlib shape predictor model not found")
        self._predictor = dlib.shape_predictor(str(self.model_path))

    @property
    def name(self) -> str:
        """The method id (``spec.id``)."""
        return self.spec.id

    def predict(self, image: np.ndarray, boxes) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB image and ``(K, 4)`` boxes -> ``(K, 68, 2) float32`` image pixels."""
        image = check_image(image)
        boxes = check_boxes(boxes)
        out = np.empty((len(boxes), N_POINTS, 2), np.float32)
        for i, box in enumerate(boxes):
            shape = self._predictor(image, box_to_dlib(box))
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out

    def predict_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> list[np.ndarray]:
        """Many images, each with its ``(K_i, 4)`` boxes -> list of ``(K_i, 68, 2) float32`` image pixels."""
        images, boxes_list = check_batch(images, boxes_list)
        return [self.predict(image, boxes) for image, boxes in zip(images, boxes_list)]


def build(spec: MethodSpec, model_path: str | Path | None = None) -> DlibShapePredictor:
    """The landmarker of ``spec`` (``model_path``: another ``.dat`` file; default the packaged model)."""
    return DlibShapePredictor(model_path, spec=spec)
