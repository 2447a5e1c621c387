"""dlib's frontal (HOG) face detector, matching detections to annotated faces, and fallback boxes.

Boxes follow :mod:`flmlib.crops`: ``(x0, y0, x1, y1)`` float32 edges in image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flmlib.crops import box_from_dlib, iou, landmark_box


@lru_cache(maxsize=1)
def hog_detector():
    """dlib's HOG + linear SVM frontal face detector (one per process; building it costs ~50 ms)."""
    import dlib

    return dlib.get_frontal_face_detector()


def detect_faces(image: np.ndarray, upsample: int = 1) -> np.ndarray:
    """Run the HOG detector on ``(H, W, 3) uint8`` RGB -> ``(K, 4) float32`` boxes, K >= 0."""
    rects = hog_detector()(image, int(upsample))
    if len(rects) == 0:
        return np.zeros((0, 4), np.float32)
    return np.stack([box_from_dlib(r) for r in rects])


@dataclass(frozen=True)
class Match:
    """The detection chosen for an annotated face: ``box`` is None for a miss; ``iou`` is the best IoU (0 if none)."""

    box: np.ndarray | None
    iou: float


def match_detection(detections: np.ndarray, landmarks: np.ndarray, threshold: float) -> Match:
    """Pick the detection that overlaps the annotated face's landmark box most.

    Args:
        detections: ``(K, 4)`` boxes.
        landmarks: ``(68, 2)`` annotated points, image pixels.
        threshold: minimum IoU with the landmark box; below it the face counts as missed.
    """
    if len(detections) == 0:
        return Match(None, 0.0)
    overlaps = iou(landmark_box(landmarks), detections)
    best = int(np.argmax(overlaps))
    best_iou = float(overlaps[best])
    return Match(detections[best].astype(np.float32) if best_iou >= threshold else None, best_iou)


@dataclass(frozen=True)
class FallbackBoxModel:
    """Maps a landmark box to a dlib-like detection box: centre offset and size, relative to the landmark box size.

    Fitted on faces the detector found (medians, robust to the odd loose match), so fallback boxes for missed
    training faces have the proportions the model sees at test time.
    """

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    @classmethod
    def fit(cls, landmark_boxes: np.ndarray, detection_boxes: np.ndarray) -> "FallbackBoxModel":
        """Fit from ``(N, 4)`` landmark boxes and their matched ``(N, 4)`` detection boxes (N >= 1)."""
        lm = np.asarray(landmark_boxes, np.float64)
        det = np.asarray(detection_boxes, np.float64)
        if len(lm) == 0:
            raise ValueError("cannot fit a fallback box model without any detected face")
        size = np.sqrt((lm[:, 2] - lm[:, 0]) * (lm[:, 3] - lm[:, 1]))
        centre = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
        offset = (centre(det) - centre(lm)) / size[:, None]
        det_size = np.sqrt((det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1]))
        return cls(float(np.median(offset[:, 0])), float(np.median(offset[:, 1])), float(np.median(det_size / size)))

    def box_for(self, landmarks: np.ndarray) -> np.ndarray:
        """A square ``(4,) float32`` box for ``(68, 2)`` landmarks."""
        lm = landmark_box(landmarks).astype(np.float64)
        size = np.sqrt((lm[2] - lm[0]) * (lm[3] - lm[1]))
        cx = (lm[0] + lm[2]) / 2 + self.dx * size
        cy = (lm[1] + lm[3]) / 2 + self.dy * size
        half = self.scale * size / 2
        return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)
