"""The `compare` stage: run every landmarker on the same detected test faces and tabulate per-face errors.

Both methods see identical faces: the test faces the HOG detector found in `prepare` (misses are counted in
the detection rate and excluded for every method alike), with the same detection box:

* dlib's shape predictor runs on the original image with the detection rectangle;
* O-Net runs on the context crop of that rectangle (the prepared crop, cut by :func:`flmlib.crops.crop_context`,
  exactly what :meth:`ONetLandmarker.predict` cuts from the image), and its points are mapped back to image pixels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
# Plain text bars: they show in `dvc repro` logs (papermill --log-output) and in JupyterLab alike.
from tqdm import tqdm

from flmlib.io import read_image
from flmlib.metrics import GROUP_COLUMN, NORMALISED_ERRORS, all_errors, region_errors, regions_frame
from flmlib.paths import project_path
from flmlib.prepare import load_split


def predict_test_set(landmarkers: Sequence, split: Mapping[str, np.ndarray], image_paths: Mapping[str, str],
                     desc: str = "") -> dict[str, np.ndarray]:
    """Predictions of every landmarker on one prepared test split.

    Args:
        landmarkers: objects with ``name`` and ``predict(image, boxes)``; those that also have
            ``predict_context_crops(crops, boxes)`` (O-Net) run batched on the prepared crops.
        split: a prepared split (:func:`flmlib.prepare.load_split`).
        image_paths: face_id -> image path (relative paths: from the project root), for methods that need the
            original image.
    Returns:
        method name -> ``(N, 68, 2) float32`` image pixels, in the split's face order.
    """
    n = len(split["face_id"])
    out: dict[str, np.ndarray] = {}
    for landmarker in landmarkers:
        if hasattr(landmarker, "predict_context_crops"):
            out[landmarker.name] = landmarker.predict_context_crops(split["crops"], split["boxes"])
            continue
        points = np.empty((n, 68, 2), np.float32)
        for i in tqdm(range(n), desc=f"{landmarker.name} {desc}".strip(), unit="face", leave=False):
            image = read_image(project_path(image_paths[split["face_id"][i]]))
            points[i] = landmarker.predict(image, split["boxes"][i : i + 1])[0]
        out[landmarker.name] = points
    return out


def error_table(test_set: str, split: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                persons: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Tidy per-face errors: one row per (face, method), columns test_set, method, face_id, person (when
    ``persons`` maps face_id -> person; bootstrap intervals then resample persons, not frames) and every
    :data:`flmlib.metrics.NORMALISED_ERRORS` (dimensionless; each column names its normaliser).

    A non-finite prediction raises (:mod:`flmlib.metrics` names the faces): it would silently distort every number.
    """
    frames = []
    for method, pred in predictions.items():
        errors = all_errors(pred, split["landmarks_image"], split["boxes"])
        frame = pd.DataFrame({"test_set": test_set, "method": method, "face_id": split["face_id"]})
        if persons is not None:
            frame[GROUP_COLUMN] = [persons[f] for f in split["face_id"]]
        for name in NORMALISED_ERRORS:
            frame[name] = errors[name]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def region_table(test_set: str, split: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                 normaliser: str = "interocular") -> pd.DataFrame:
    """Tidy per-face, per-region mean error (jaw, brows, nose, eyes, mouth), normalised by ``normaliser``."""
    per_method = {m: region_errors(p, split["landmarks_image"], normaliser, split["boxes"]) for m, p in predictions.items()}
    return regions_frame(per_method, test_set, face_ids=split["face_id"])


def detection_rates(faces_csv: str | Path, test_sets: Sequence[str]) -> dict[str, dict]:
    """Per test set: annotated faces, readable ones, faces the detector found, and the rate detected / readable
    (as in the prepare stage's summary; identical for every method)."""
    faces = pd.read_csv(faces_csv)
    rates = {}
    for test_set in test_sets:
        rows = faces[faces["split"] == test_set]
        readable, detected = int(rows["readable"].sum()), int(rows["detected"].sum())
        rates[test_set] = dict(faces=int(len(rows)), readable=readable, detected=detected,
                               detection_rate=round(detected / readable, 4) if readable else None)
    return rates


def save_predictions(path: str | Path, split: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray]) -> Path:
    """Write ``face_id``, ``boxes``, ``gt`` and one ``(N, 68, 2)`` array per method (image pixels) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, face_id=split["face_id"], boxes=split["boxes"], gt=split["landmarks_image"],
                        **{f"pred_{m}": p for m, p in predictions.items()})
    return path


def load_predictions(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inverse of :func:`save_predictions`: (face_id/boxes/gt arrays, method -> predictions)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    preds = {k.removeprefix("pred_"): v for k, v in arrays.items() if k.startswith("pred_")}
    return {k: v for k, v in arrays.items() if not k.startswith("pred_")}, preds


def limit_split(split: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first ``limit`` faces of a prepared split (smoke runs); ``limit <= 0`` keeps all."""
    if limit <= 0:
        return split
    return {k: (v[:limit] if np.ndim(v) and len(v) == len(split["face_id"]) else v) for k, v in split.items()}


__all__ = ["predict_test_set", "error_table", "region_table", "detection_rates", "save_predictions",
           "load_predictions", "limit_split", "load_split"]
