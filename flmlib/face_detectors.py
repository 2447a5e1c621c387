"""Face detectors behind one registry: an RGB image in, face boxes in the study's box convention out.

A detector is a ``detectors:`` entry of ``detectors.yaml`` (:mod:`flmlib.detector_config`): an id, a ``kind`` and
that kind's options. Kinds:

* ``dlib_hog``: dlib's HOG + linear SVM detector, ``upsample`` 0 or 1. With ``upsample: 1`` it is the detector of
  every ``boxes: detector`` test set, so its boxes *are* the study's convention.
* ``mediapipe_blazeface``: MediaPipe's BlazeFace, ``model: short`` (128 px input) or ``full`` (192 px), run in the
  MediaPipe environment by :mod:`flmlib.blazeface_worker` (the model ships in the mediapipe 0.10.21 wheel; that
  environment is the one Face Mesh already needs, so no TFLite runtime or conversion enters the study's).
* ``mtcnn``: the MTCNN cascade (:mod:`flmlib.mtcnn_detector`) with facenet-pytorch's weights (``min_face``,
  ``thresholds``, ``factor``).

**Box convention.** The landmarkers were trained on HOG boxes (square, brows to chin). Another detector's raw boxes
sit elsewhere on the face, so each gets a :class:`BoxCalibration` (centre shift and side scale as fractions of its
raw box side, medians over training faces that both it and HOG found), fitted by the ``detectors`` stage and stored
in ``models/detector_boxes.json``. A detector without one returns raw boxes, which a landmarker would misplace.

Boxes are ``(K, 4) float32`` ``(x0, y0, x1, y1)`` pixel edges (pixel centres at integers, as in :mod:`flmlib.crops`),
best first.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flmlib.detect import detect_faces
from flmlib.paths import project_path

#: Where the ``detectors`` stage writes the fitted box calibrations (relative to the project root).
CALIBRATION_PATH = "models/detector_boxes.json"
#: BlazeFace's worker (run by file path in the MediaPipe environment) and the size of its answer's rows
#: (``x0, y0, x1, y1, score``).
BLAZEFACE_SCRIPT = Path(__file__).with_name("blazeface_worker.py")
BLAZEFACE_ROW = 5


@dataclass(frozen=True)
class BoxCalibration:
    """Maps a detector's raw box to a HOG-like box: centre moved by ``(dx, dy)`` raw sides, sides times
    ``(scale_w, scale_h)``; ``faces`` is how many training faces it was fitted on (0: identity)."""

    dx: float = 0.0
    dy: float = 0.0
    scale_w: float = 1.0
    scale_h: float = 1.0
    faces: int = 0

    @classmethod
    def fit(cls, raw: np.ndarray, target: np.ndarray) -> "BoxCalibration":
        """Medians over pairs of ``(N, 4)`` raw and target boxes of the same faces (robust to a few bad pairs)."""
        raw, target = np.asarray(raw, np.float64), np.asarray(target, np.float64)
        if raw.shape != target.shape or raw.ndim != 2 or raw.shape[1] != 4 or len(raw) < 5:
            raise ValueError(f"need >= 5 matching (N, 4) box pairs to calibrate, got {raw.shape} and {target.shape}")
        side = np.sqrt((raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1]))
        centre = (raw[:, :2] + raw[:, 2:]) / 2
        t_centre = (target[:, :2] + target[:, 2:]) / 2
        shift = np.median((t_centre - centre) / side[:, None], axis=0)
        return cls(dx=float(shift[0]), dy=float(shift[1]),
                   scale_w=float(np.median((target[:, 2] - target[:, 0]) / side)),
                   scale_h=float(np.median((target[:, 3] - target[:, 1]) / side)), faces=len(raw))

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """``(K, 4)`` raw boxes -> ``(K, 4) float32`` calibrated boxes."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        side = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None))
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 + self.dx * side
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 + self.dy * side
        half_w, half_h = self.scale_w * side / 2, self.scale_h * side / 2
        return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- detectors


class HogDetector:
    """dlib's HOG detector at ``upsample`` 0 or 1 (the study's convention; no calibration)."""

    needs_calibration = False

    def __init__(self, upsample: int = 1):
        if int(upsample) not in (0, 1, 2):
            raise ValueError(f"dlib_hog upsample={upsample!r}: use 0, 1 or 2")
        self.upsample = int(upsample)

    def detect_raw(self, image: np.ndarray) -> np.ndarray:
        return detect_faces(image, self.upsample)

    def close(self) -> None:
        pass


class BlazeFaceDetector:
    """MediaPipe BlazeFace in the MediaPipe environment, one worker process (started on first use, reused)."""

    needs_calibration = True

    def __init__(self, model: str = "short", min_confidence: float = 0.5, python: str | Path | None = None,
                 timeout: float = 300.0):
        from flmlib.landmarkers.mediapipe_mesh import DEFAULT_PYTHON, MeshWorker

        if model not in ("short", "full"):
            raise ValueError(f"mediapipe_blazeface model={model!r}: use short or full")
        self.worker = MeshWorker(project_path(python or DEFAULT_PYTHON), float(min_confidence), timeout,
                                 script=BLAZEFACE_SCRIPT, args=["--model", model], row_size=BLAZEFACE_ROW)

    def detect_raw(self, image: np.ndarray) -> np.ndarray:
        self.submit_raw(image)
        return self.receive_raw()

    def submit_raw(self, image: np.ndarray) -> None:
        """Send ``image`` to the worker and return at once: it detects while the caller does other work."""
        self.worker.send(np.ascontiguousarray(image, np.uint8))

    def receive_raw(self) -> np.ndarray:
        """The boxes of the image sent last by :meth:`submit_raw`."""
        return self.worker.receive("detecting faces").reshape(-1, BLAZEFACE_ROW)[:, :4].astype(np.float32)

    def close(self) -> None:
        self.worker.close()


def _mtcnn(**options):
    from flmlib.mtcnn_detector import MTCNN

    return MTCNN(**options)


_BUILDERS = {"dlib_hog": HogDetector, "mediapipe_blazeface": BlazeFaceDetector, "mtcnn": _mtcnn}


class FaceDetector:
    """A registered detector with its calibration: :meth:`detect` returns boxes in the study's convention."""

    def __init__(self, detector_id: str, raw, calibration: BoxCalibration | None):
        self.id, self.raw = detector_id, raw
        if raw.needs_calibration and calibration is None:
            raise FileNotFoundError(
                f"detector {detector_id!r} has no box calibration in {CALIBRATION_PATH}: run `dvc repro detectors` "
                "(its raw boxes sit elsewhere on the face than the HOG boxes the landmarkers were trained on)")
        self.calibration = calibration if raw.needs_calibration else None

    def detect_raw(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> the detector's own ``(K, 4) float32`` boxes."""
        return self.raw.detect_raw(image)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(K, 4) float32`` boxes in the study's convention, best first."""
        return self._calibrated(self.raw.detect_raw(image))

    def submit(self, image: np.ndarray) -> None:
        """Start detecting ``image``; :meth:`receive` returns its boxes. A detector in a worker process (BlazeFace)
        works meanwhile, so the caller can landmark the previous frame on its own core; others detect here."""
        if hasattr(self.raw, "submit_raw"):
            self.raw.submit_raw(image)
        else:
            self._pending = image

    def receive(self) -> np.ndarray:
        """The boxes of the image given to :meth:`submit` last, as :meth:`detect` returns them."""
        if hasattr(self.raw, "receive_raw"):
            return self._calibrated(self.raw.receive_raw())
        image, self._pending = self._pending, None
        return self.detect(image)

    def _calibrated(self, boxes: np.ndarray) -> np.ndarray:
        return boxes if self.calibration is None else self.calibration.apply(boxes)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_raw(kind: str, options: Mapping):
    """The uncalibrated detector of ``kind`` with ``options`` (a ``detectors:`` entry without kind/description)."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown detector kind {kind!r}; known: {list(_BUILDERS)}")
    try:
        return _BUILDERS[kind](**dict(options))
    except TypeError as exc:
        raise ValueError(f"detector kind {kind!r}: bad options {dict(options)} ({exc})") from None


def read_calibrations(path: str | Path = CALIBRATION_PATH) -> dict[str, BoxCalibration]:
    """Detector id -> :class:`BoxCalibration` from the ``detectors`` stage's file ({} when it does not exist)."""
    path = project_path(path)
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text())
        return {k: BoxCalibration(**v) for k, v in payload["calibrations"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a detector calibration file ({exc})") from None


def write_calibrations(path: str | Path, calibrations: Mapping[str, BoxCalibration], note: str) -> Path:
    path = project_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"note": note, "calibrations": {k: asdict(v) for k, v in calibrations.items()}},
                               indent=2) + "\n")
    return path


def build_detector(detector_id: str, config, calibration_path: str | Path | None = None) -> FaceDetector:
    """The detector ``detector_id`` of a loaded detector configuration
    (:func:`flmlib.detector_config.load_detector_config`), calibrated (``calibration_path``: default
    :data:`CALIBRATION_PATH`, read when called).

    Raises:
        KeyError: an id that ``detectors.yaml`` does not list (the message lists the known ones).
        FileNotFoundError: a detector that needs a calibration the ``detectors`` stage has not written yet.
    """
    if detector_id not in config.detectors:
        raise KeyError(f"unknown detector {detector_id!r}; detectors.yaml lists {sorted(config.detectors)}")
    entry = config.detectors[detector_id]
    raw = build_raw(entry.kind, entry.options)
    calibrations = read_calibrations(CALIBRATION_PATH if calibration_path is None else calibration_path)
    return FaceDetector(detector_id, raw, calibrations.get(detector_id))
