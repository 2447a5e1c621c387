"""The `predict` and `compare` stages: every method on the same test faces, then errors, metrics and CED tables.

* ``predict@<method>-<test set>`` runs one method on one prepared test set (:func:`predict_test_set`) and writes
  ``reports/predictions/<method>/<test set>.npz`` (:func:`save_predictions`). Every method gets the same faces with
  the same box: the detection box (``boxes: detector``) or the landmark-derived box (``boxes: landmarks``).
* ``compare`` reads every prediction listed by the configuration, checks that each method saw exactly the faces of
  the prepared test set, and tabulates per-face errors (:func:`error_table`), per-region errors, metrics with
  bootstrap intervals and paired differences against the reference method (:func:`study_metrics`), CED tables and
  detection rates (:func:`detection_rates`).

A method may fail to place a face (MediaPipe finds no face in the crop): its points are NaN, and the face counts as a
failure (error inf: above every threshold) for that method, with the count reported (``n_failed``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
# Plain text bars: they show in `dvc repro` logs (papermill --log-output) and in JupyterLab alike.
from tqdm import tqdm

from flmlib.dataset import group_order, in_test_set, yaw_bins
from flmlib.io import read_image
from flmlib.metrics import (GROUP_COLUMN, NORMALISED_ERRORS, all_errors, metrics_dict, region_errors, regions_frame,
                            threshold_key, valid_counts)
from flmlib.paths import project_path
from flmlib.prepare import load_arrays, load_split

#: Faces handed to a landmarker's ``predict_batch`` at once when it works from images.
IMAGE_CHUNK = 32
#: Label of the row that holds every face of a test set (its subsets / yaw bins get their own rows).
ALL = "all"


def predictions_path(predictions_dir: str | Path, method: str, test_set: str) -> Path:
    """Where ``predict@<method>-<test_set>`` writes: ``<predictions_dir>/<method>/<test_set>.npz``."""
    return Path(predictions_dir) / method / f"{test_set}.npz"


def _uses_prepared_crops(landmarker, split: Mapping[str, np.ndarray]) -> bool:
    """A trained CNN whose crop geometry is the prepared crops' runs on them (training's own evaluation path)."""
    if not hasattr(landmarker, "predict_context_crops"):
        return False
    return (int(landmarker.crop_size) == int(split["crop_size"])
            and abs(float(landmarker.context_factor) - float(split["context_factor"])) < 1e-6)


def predict_test_set(landmarker, split: Mapping[str, np.ndarray], image_paths: Mapping[str, str],
                     desc: str = "") -> np.ndarray:
    """One method's points on one prepared test set.

    Args:
        landmarker: a landmarker (:mod:`flmlib.landmarkers.base`). A trained CNN whose crop geometry matches the
            prepared crops runs batched on them; every other method gets the original images, in chunks.
        split: a prepared test set (:func:`flmlib.prepare.load_split`).
        image_paths: face_id -> image path (relative paths: from the project root).
    Returns:
        ``(N, 68, 2) float32`` image pixels in the split's face order; all-NaN rows where the method placed no face.
    """
    n = len(split["face_id"])
    if n == 0:
        return np.zeros((0, 68, 2), np.float32)
    if _uses_prepared_crops(landmarker, split):
        return landmarker.predict_context_crops(split["crops"], split["boxes"])
    points = np.empty((n, 68, 2), np.float32)
    with tqdm(total=n, desc=f"{landmarker.name} {desc}".strip(), unit="face", mininterval=2.0) as bar:
        for start in range(0, n, IMAGE_CHUNK):
            stop = min(start + IMAGE_CHUNK, n)
            images = [read_image(project_path(image_paths[f])) for f in split["face_id"][start:stop]]
            boxes = [split["boxes"][i : i + 1] for i in range(start, stop)]
            points[start:stop] = np.concatenate(landmarker.predict_batch(images, boxes))
            bar.update(stop - start)
    return points


def run_predict(landmarker, split: Mapping[str, np.ndarray], image_paths: Mapping[str, str], test_set: str,
                out_path: str | Path) -> dict:
    """Predict one test set and write the predictions file; returns a summary (faces, failed, seconds)."""
    started = time.perf_counter()
    points = predict_test_set(landmarker, split, image_paths, desc=test_set)
    seconds = time.perf_counter() - started
    save_predictions(out_path, landmarker.name, test_set, split["face_id"], points, seconds)
    failed = int((~np.isfinite(points).all(axis=(1, 2))).sum()) if len(points) else 0
    return dict(method=landmarker.name, test_set=test_set, faces=int(len(points)), failed=failed,
                seconds=round(seconds, 2), ms_per_face=round(1000 * seconds / max(len(points), 1), 3))


def save_predictions(path: str | Path, method: str, test_set: str, face_id: np.ndarray, points: np.ndarray,
                     seconds: float) -> Path:
    """Write ``face_id`` ``(N,)``, ``points`` ``(N, 68, 2) float32`` image pixels, the method, the test set and the
    wall time of the run to ``path`` (written whole or not at all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, face_id=np.asarray(face_id, str), points=np.asarray(points, np.float32),
                        method=np.array(method), test_set=np.array(test_set), seconds=np.array(float(seconds)))
    tmp.replace(path)
    return path


def load_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Read a predictions file (:func:`save_predictions`); a missing file names the stage that writes it."""
    return load_arrays(path, "predictions", "run `dvc repro` for its predict stage")


def aligned_points(predictions: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray], source: str) -> np.ndarray:
    """The predicted points in the split's face order; ``ValueError`` naming ``source`` if the faces differ."""
    if not np.array_equal(predictions["face_id"], split["face_id"]):
        ours, theirs = set(split["face_id"]), set(predictions["face_id"])
        raise ValueError(f"{source}: predicted faces differ from the prepared test set ({len(theirs - ours)} extra,"
                         f" {len(ours - theirs)} missing, or another order); re-run its predict stage")
    return predictions["points"]


def points_of_faces(predictions: Mapping[str, np.ndarray], face_ids: Sequence[str]) -> np.ndarray:
    """``(len(face_ids), 68, 2)`` predicted points of the given faces (``KeyError`` naming a face not predicted)."""
    row = {f: i for i, f in enumerate(predictions["face_id"])}
    missing = [f for f in face_ids if f not in row]
    if missing:
        raise KeyError(f"{len(missing)} face(s) have no prediction, e.g. {missing[:3]}")
    return predictions["points"][[row[f] for f in face_ids]]


def breakdown_labels(split: Mapping[str, np.ndarray], test_set_config) -> np.ndarray | None:
    """``(N,)`` per-face label of the test set's breakdown (subset or yaw bin), or None without one."""
    if test_set_config.breakdown == "subset":
        return np.asarray(split["subset"], object)
    if test_set_config.breakdown == "yaw":
        return yaw_bins(split["yaw"], tuple(test_set_config.yaw_bins))
    return None


def error_table(test_set: str, split: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                groups: np.ndarray | None = None) -> pd.DataFrame:
    """Tidy per-face errors: one row per (face, method), columns ``test_set, method, face_id, person, group`` and
    every :data:`flmlib.metrics.NORMALISED_ERRORS` (dimensionless; each column names its normaliser).

    With a ``valid`` mask in the split, each error runs over the face's annotated points and ``n_points`` says how
    many. A face a method could not place (NaN points) gets error inf for that method (a failure); ``person`` comes from
    the split (bootstrap intervals resample persons, not frames); ``group`` is the breakdown label or empty.
    """
    frames = []
    valid = split.get("valid")  # a test set with unannotated points: errors over each face's annotated ones
    for method, pred in predictions.items():
        errors = all_errors(pred, split["landmarks_image"], split["boxes"], nonfinite="fail", valid=valid)
        frame = pd.DataFrame({"test_set": test_set, "method": method, "face_id": split["face_id"],
                              GROUP_COLUMN: split["person"], "group": "" if groups is None else groups})
        if valid is not None:
            frame["n_points"] = valid_counts(valid, len(valid))
        for name in NORMALISED_ERRORS:
            frame[name] = errors[name]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def region_table(test_set: str, split: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                 normaliser: str = "interocular") -> pd.DataFrame:
    """Tidy per-face, per-region mean error (jaw, brows, nose, eyes, mouth), normalised by ``normaliser``; faces a
    method could not place are left out of that method's rows. With a ``valid`` mask in the split, a region's error
    runs over its annotated points, and a face without any in a region has no row for it."""
    frames = []
    valid = split.get("valid")
    for method, pred in predictions.items():
        placed = np.isfinite(pred).all(axis=(1, 2))
        regions = region_errors(pred[placed], split["landmarks_image"][placed], normaliser, split["boxes"][placed],
                                valid=None if valid is None else np.asarray(valid)[placed])
        frames.append(regions_frame({method: regions}, test_set, face_ids=split["face_id"][placed]))
    return pd.concat(frames, ignore_index=True)


def study_metrics(errors: pd.DataFrame, reference: str, error_names: Sequence[str], n_resamples: int,
                  seed: int) -> dict:
    """Metrics of every test set, overall and per breakdown group: ``test_set -> group -> metrics_dict entry``.

    Group :data:`ALL` holds every face; the others are the test set's subsets or yaw bins. Each entry has
    ``methods`` (summary + bootstrap AUC intervals) and ``vs_reference`` (paired AUC differences against
    ``reference``), see :func:`flmlib.metrics.metrics_dict`. Each method also gets ``n_failed`` (faces it placed no
    point on, scored as failures; their means are over the placed faces).
    """
    out: dict = {}
    for test_set, frame in errors.groupby("test_set", sort=False):
        parts = {ALL: frame}
        for group in sorted(set(frame["group"]) - {""}, key=group_order):
            parts[group] = frame[frame["group"] == group]
        out[test_set] = {}
        for group, part in parts.items():
            entry = metrics_dict(part.assign(test_set=group), error_names=error_names, reference=reference,
                                 auc_ci=True, n_resamples=n_resamples, seed=seed)[group]
            for method, values in entry["methods"].items():
                rows = part[part["method"] == method]
                placed = np.isfinite(rows[error_names[0]]).to_numpy()
                values["n_failed"] = int((~placed).sum())
                if values["n_failed"]:  # means over the placed faces; AUC and failure rate count the rest as failures
                    for name in error_names:
                        values[f"{name}/mean"] = float(rows.loc[placed, name].mean()) if placed.any() else None
            out[test_set][group] = entry
    return out


def headline_metrics(detail: Mapping, error: str, threshold: float, other_errors: Sequence[str]) -> dict:
    """The few numbers ``dvc metrics show`` prints: per test set and method, the AUC and failure rate of ``error``
    at ``threshold`` and the mean of each of ``other_errors`` (whole test sets only)."""
    key = threshold_key(threshold)
    out = {}
    for test_set, groups in detail.items():
        out[test_set] = {}
        for method, values in groups[ALL]["methods"].items():
            row = {f"{error}/auc@{key}": values.get(f"{error}/auc@{key}"),
                   f"{error}/fail@{key}": values.get(f"{error}/fail@{key}")}
            row.update({f"{name}/mean": values.get(f"{name}/mean") for name in other_errors})
            out[test_set][method] = row
    return out


def detection_rates(faces: pd.DataFrame, test_sets: Mapping) -> dict[str, dict]:
    """Per test set: annotated faces, readable ones, faces the detector found, the rate detected / readable, and
    the same per yaw bin for test sets broken down by yaw.

    ``faces`` is the prepare stage's ``faces.csv``; ``test_sets`` maps ids to their configs. For a test set with
    ``boxes: landmarks`` every readable face is evaluated; its detection counts still say what HOG would have found.
    """
    def counts(rows: pd.DataFrame) -> dict:
        readable, detected = int(rows["readable"].sum()), int(rows["detected"].sum())
        return dict(faces=int(len(rows)), readable=readable, detected=detected,
                    detection_rate=round(detected / readable, 4) if readable else None)

    rates = {}
    for name, config in test_sets.items():
        rows = faces[in_test_set(faces, config.source, tuple(config.subsets))]
        entry = counts(rows)
        entry["evaluated"] = "detected faces" if config.boxes == "detector" else "every readable face"
        if config.breakdown == "yaw":
            labels = yaw_bins(rows["yaw"].to_numpy(), tuple(config.yaw_bins))
            entry["by_yaw"] = {label: counts(rows[labels == label])
                               for label in sorted(set(labels) - {""}, key=group_order)}
        if config.breakdown == "subset":
            entry["by_subset"] = {k: counts(g) for k, g in rows.groupby("subset")}
        rates[name] = entry
    return rates


def limit_split(split: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first ``limit`` faces of a prepared split (smoke runs); ``limit <= 0`` keeps all."""
    if limit <= 0:
        return split
    return {k: (v[:limit] if np.ndim(v) and len(v) == len(split["face_id"]) else v) for k, v in split.items()}


__all__ = ["predictions_path", "predict_test_set", "run_predict", "save_predictions", "load_predictions",
           "aligned_points", "points_of_faces", "breakdown_labels", "error_table", "region_table", "study_metrics", "headline_metrics",
           "detection_rates", "limit_split", "load_split", "ALL"]
