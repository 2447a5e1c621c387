"""The study's front door: find faces with dlib's HOG detector, then place 68 landmarks with a landmarker.

    >>> from flmlib.predictor import Predictor
    >>> predictor = Predictor.from_name("onet")   # any method id of params.yaml: "onet", "dlib", "mediapipe", ...
    >>> faces = predictor("data/300w/helen/testset/2968560214_1.jpg")
    >>> faces[0].box, faces[0].points.shape, faces[0].method
    (array([x0, y0, x1, y1], dtype=float32), (68, 2), 'onet')
    >>> fast = Predictor.from_name("onet_half_40", detector="blazeface")   # any detector id of detectors.yaml

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

    @property
    def placed(self) -> bool:
        """False when the method could not place this face (its points are NaN)."""
        return bool(np.isfinite(self.points).all())

    def to_dict(self) -> dict:
        """JSON-ready: the box and points rounded to 1/1000 px; ``points`` is None for a face the method could not
        place (JSON has no NaN)."""
        return {"box": [round(float(v), 3) for v in self.box],
                "points": [[round(float(x), 3), round(float(y), 3)] for x, y in self.points] if self.placed else None,
                "method": self.method}


ImageLike = np.ndarray | str | Path
EXPECTED_IMAGE = ("a path, a PIL image, or a uint8 array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA")


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
        #: The detector, described for output files and messages (:meth:`from_name` names a registered one).
        self.detector_info = {"name": "dlib_hog", "kind": "dlib_hog", "upsample": self.upsample}
        self.detector_text = f"dlib HOG detector, upsample {self.upsample}"

    @classmethod
    def from_name(cls, name: str = "onet", upsample: int | None = None, detector: str | None = None,
                  **landmarker_kwargs) -> "Predictor":
        """A predictor around :func:`flmlib.landmarkers.build_landmarker` ``(name, **landmarker_kwargs)``.

        ``detector``: an id of detectors.yaml (``hog1``, ``hog0``, ``blazeface``, ...); default dlib's HOG at
        ``upsample``. A HOG entry brings its own upsampling unless ``upsample`` is given; another detector (BlazeFace,
        MTCNN) detects in this process with the box calibration the ``detectors`` stage fitted
        (``FileNotFoundError`` before that stage has run; ``KeyError`` for an unknown id, listing the known ones).
        """
        landmarker = build_landmarker(name, **landmarker_kwargs)
        if detector is None:
            return cls(landmarker, upsample=upsample)
        from flmlib.detector_config import load_detector_config

        config = load_detector_config()
        if detector not in config.detectors:
            raise KeyError(f"unknown detector {detector!r}; detectors.yaml lists {sorted(config.detectors)}")
        entry = config.detectors[detector]
        if entry.kind == "dlib_hog":  # the default, picklable path (worker processes can detect)
            predictor = cls(landmarker, upsample=int(entry.options.get("upsample", 1)) if upsample is None else upsample)
            predictor.detector_info = {"name": detector, "kind": entry.kind, "upsample": predictor.upsample}
            predictor.detector_text = f"detector {detector}: dlib HOG, upsample {predictor.upsample}"
            return predictor
        from flmlib.face_detectors import build_detector

        found = build_detector(detector, config)
        predictor = cls(landmarker, upsample=0, detector=lambda image, _upsample: found.detect(image))
        predictor.detector_info = {"name": detector, "kind": entry.kind, **entry.options}
        predictor.detector_text = f"detector {detector}: {entry.description or entry.kind}"
        return predictor

    @property
    def method(self) -> str:
        return self.landmarker.name

    @staticmethod
    def load(image: ImageLike) -> np.ndarray:
        """An image argument as ``(H, W, 3) uint8`` RGB.

        Accepted: a path (read with :func:`flmlib.io.read_image`; ``DataError`` if it cannot be), a PIL image (any
        mode, converted to RGB), an ``(H, W)`` uint8 grey array (repeated to three channels), an ``(H, W, 4)`` uint8
        RGBA array (alpha dropped) or an ``(H, W, 3)`` uint8 RGB array. Anything else raises ``TypeError`` /
        ``ValueError`` saying what was given and what is expected.
        """
        if isinstance(image, (str, Path)):
            return read_image(image)
        if image is None:
            raise TypeError(f"image is None; expected {EXPECTED_IMAGE}")
        if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray):  # PIL
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image is a {type(image).__name__}; expected {EXPECTED_IMAGE}")
        if image.dtype == np.uint8 and image.ndim == 2:
            return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4:
            return np.ascontiguousarray(image[:, :, :3])
        return check_image(image, f"image ({EXPECTED_IMAGE})")

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
        if images is None or isinstance(images, (str, Path)) or hasattr(images, "convert") or (
                isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            return self.predict(images)
        if not hasattr(images, "__iter__"):
            raise TypeError(f"images is a {type(images).__name__}; expected {EXPECTED_IMAGE}, or a list of them")
        return self.predict_many(list(images))
