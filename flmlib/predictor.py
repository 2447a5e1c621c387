"""The study's front door: find faces with dlib's HOG detector, then place 68 landmarks with a landmarker.

    >>> from flmlib.predictor import Predictor
    >>> predictor = Predictor.from_name("onet")   # any method id of params.yaml: "onet", "dlib", "mediapipe", ...
    >>> faces = predictor("data/300w/helen/testset/2968560214_1.jpg")
    >>> faces[0].box, faces[0].points.shape, faces[0].method
    (array([x0, y0, x1, y1], dtype=float32), (68, 2), 'onet')

Detection uses the same upsampling as the ``prepare`` stage (``prepare.upsample`` in params.yaml), so the boxes are
distributed like the ones the model was trained and evaluated on. All faces of one call (one image or many) go
through the landmarker as one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from flmlib.detect import detect_faces
from flmlib.io import read_image
from flmlib.landmarkers import build_landmarker, check_image
from flmlib.paths import PROJECT_ROOT

#: Used when params.yaml cannot be read (flmlib used outside the project): dlib's usual single upsampling.
FALLBACK_UPSAMPLE = 1


def default_upsample(params_path: str | Path = PROJECT_ROOT / "params.yaml") -> int:
    """``prepare.upsample`` from params.yaml, or :data:`FALLBACK_UPSAMPLE` if the file or key is absent."""
    import yaml

    path = Path(params_path)
    if not path.is_file():
        return FALLBACK_UPSAMPLE
    params = yaml.safe_load(path.read_text()) or {}
    value = (params.get("prepare") or {}).get("upsample", FALLBACK_UPSAMPLE)
    if not (isinstance(value, int) and value >= 0):
        raise ValueError(f"{path}: prepare.upsample={value!r} must be an integer >= 0")
    return value


@dataclass(frozen=True)
class Face:
    """One face: ``box`` ``(4,) float32`` detection edges and ``points`` ``(68, 2) float32``, both image pixels
    (0-based, pixel centres at integers); ``method`` names the landmarker (a method id of params.yaml)."""

    box: np.ndarray
    points: np.ndarray
    method: str

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 3) for v in self.box],
                "points": [[round(float(x), 3), round(float(y), 3)] for x, y in self.points],
                "method": self.method}


ImageLike = np.ndarray | str | Path


class Predictor:
    """Detector + landmarker.

    Args:
        landmarker: any object with ``name`` and ``predict_batch(images, boxes_list)`` (see
            :mod:`flmlib.landmarkers`).
        upsample: HOG detector upsampling; ``None`` reads ``prepare.upsample`` from params.yaml.
        detector: ``(image, upsample) -> (K, 4)`` boxes; dlib's HOG detector unless replaced (e.g. in tests).
    """

    def __init__(self, landmarker, upsample: int | None = None,
                 detector: Callable[[np.ndarray, int], np.ndarray] = detect_faces):
        self.landmarker = landmarker
        self.upsample = default_upsample() if upsample is None else int(upsample)
        self.detector = detector

    @classmethod
    def from_name(cls, name: str = "onet", upsample: int | None = None, **landmarker_kwargs) -> "Predictor":
        """A predictor around :func:`flmlib.landmarkers.build_landmarker` ``(name, **landmarker_kwargs)``."""
        return cls(build_landmarker(name, **landmarker_kwargs), upsample=upsample)

    @property
    def method(self) -> str:
        return self.landmarker.name

    @staticmethod
    def load(image: ImageLike) -> np.ndarray:
        """An image argument as ``(H, W, 3) uint8`` RGB: arrays are checked, paths are read (``DataError`` if not)."""
        if isinstance(image, (str, Path)):
            return read_image(image)
        return check_image(image)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """``(K, 4) float32`` HOG detections of one ``(H, W, 3) uint8`` image."""
        return np.asarray(self.detector(image, self.upsample), np.float32).reshape(-1, 4)

    def predict_many(self, images: Sequence[ImageLike]) -> list[list[Face]]:
        """Faces of each image (an empty list where none was found); every face goes through one batch."""
        arrays = [self.load(image) for image in images]
        boxes = [self.detect(image) for image in arrays]
        points = self.landmarker.predict_batch(arrays, boxes)
        return [[Face(b, p, self.method) for b, p in zip(bs, ps)] for bs, ps in zip(boxes, points)]

    def predict(self, image: ImageLike) -> list[Face]:
        """Faces of one image (array or path)."""
        return self.predict_many([image])[0]

    def __call__(self, images: ImageLike | Sequence[ImageLike]):
        """One image (array ``(H, W, 3)`` or path) -> list of :class:`Face`; a list of images or an
        ``(N, H, W, 3)`` array -> one such list per image."""
        if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            return self.predict(images)
        return self.predict_many(list(images))
