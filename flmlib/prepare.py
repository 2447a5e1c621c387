"""The `prepare` stage: detect every face, match it to its annotation, cut context crops, write one file per split.

``prepared/train.npz`` and ``prepared/val.npz`` hold the training faces; ``prepared/<test set id>.npz`` each test set
of the configuration (:mod:`flmlib.config`). Each file holds

====================  ========================================================================
crops                 ``(N, S, S, 3) uint8`` RGB context crops (S = ``crop_size``)
landmarks             ``(N, 68, 2) float32``, 0-based pixels of the crop
landmarks_image       ``(N, 68, 2) float32``, 0-based pixels of the original image
boxes                 ``(N, 4) float32`` box edges in image pixels (detection, or fallback)
face_id               ``(N,)`` str
person                ``(N,)`` str, the grouping key that bootstraps resample
subset                ``(N,)`` str (e.g. ``helen/testset``), for per-subset rows
yaw                   ``(N,) float32`` degrees, NaN where the source has none (for per-yaw rows)
detected              ``(N,)`` bool, False where the box is a fallback derived from the landmarks
crop_size             scalar int; context_factor: scalar float
====================  ========================================================================

``prepared/faces.csv`` has one row per annotated face: its split, detection outcome and box; ``image_path`` is
relative to the project root for images inside it (resolve it with :func:`flmlib.paths.project_path`).

A test set with ``boxes: detector`` holds the faces the detector found (misses are counted in the detection summary
and excluded identically for every method); one with ``boxes: landmarks`` holds every readable face, with the box the
fallback model derives from its annotated points, so landmarking is compared apart from detection.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
# Plain text bars: they show in `dvc repro` logs (papermill --log-output) and in JupyterLab alike.
from tqdm import tqdm

from flmlib.crops import apply_affine, crop_context, landmark_box
from flmlib.dataset import in_test_set
from flmlib.detect import FallbackBoxModel, detect_faces, match_detection
from flmlib.io import DataError, read_image
from flmlib.paths import portable_path

TRAINING_SPLITS = ("train", "val")
ARRAY_FIELDS = ("crops", "landmarks", "landmarks_image", "boxes", "face_id", "person", "subset", "yaw", "detected")


@dataclass
class FaceResult:
    """What detection did for one annotated face (one image)."""

    face_id: str
    n_detections: int = 0
    iou: float = 0.0
    box: np.ndarray | None = None        # matched detection, or None for a miss
    crop: np.ndarray | None = None       # (S, S, 3) uint8 for a matched face
    matrix: np.ndarray | None = None     # (2, 3) image -> crop
    error: str | None = None             # set when the image could not be read


def _detect_one(face: tuple[str, str, np.ndarray], upsample: int, iou_threshold: float, crop_size: int,
                context_factor: float) -> FaceResult:
    face_id, image_path, landmarks = face
    try:
        image = read_image(image_path)
    except DataError as exc:
        return FaceResult(face_id, error=str(exc))
    detections = detect_faces(image, upsample)
    match = match_detection(detections, landmarks, iou_threshold)
    result = FaceResult(face_id, n_detections=len(detections), iou=match.iou, box=match.box)
    if match.box is not None:
        result.crop, result.matrix = crop_context(image, match.box, crop_size, context_factor)
    return result


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def detect_all(index: pd.DataFrame, upsample: int, iou_threshold: float, crop_size: int, context_factor: float,
               workers: int = 0) -> list[FaceResult]:
    """Detect and crop every face of ``index`` (in index order) on ``workers`` processes (0 = all cores)."""
    workers = workers or os.cpu_count() or 1
    faces = list(zip(index["face_id"], index["image_path"], index["landmarks"]))
    job = partial(_detect_one, upsample=upsample, iou_threshold=iou_threshold, crop_size=crop_size,
                  context_factor=context_factor)
    bar = dict(total=len(faces), desc="detect + crop", unit="img", smoothing=0.05, mininterval=2.0)
    if workers == 1:
        _init_worker()
        return [job(face) for face in tqdm(faces, **bar)]
    # Not "fork": a parent that already used OpenCV's thread pool can deadlock its forked children.
    with mp.get_context("forkserver" if os.name == "posix" else "spawn").Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(job, faces, chunksize=8), **bar))


def assemble(index: pd.DataFrame, results: list[FaceResult], crop_size: int, context_factor: float,
             train_fallback_box: bool, skip_bad_files: bool, test_sets: Mapping | None = None,
             ) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Turn detection results into the per-face table and the per-file arrays.

    Args:
        test_sets: test set id -> its config (:class:`flmlib.config.TestSet`: ``source``, ``subsets``, ``boxes``).
    A :class:`FallbackBoxModel` is fitted on this run's detected training faces. Training and validation misses get
    its box when ``train_fallback_box`` is set; test sets with ``boxes: landmarks`` get it for every face.

    Returns:
        (faces table with one row per indexed face, {``train`` / ``val`` / test set id: arrays as in the module
        docstring}).
    Raises:
        DataError: an unreadable image when ``skip_bad_files`` is False (the message names the file).
    """
    test_sets = dict(test_sets or {})
    by_id = {r.face_id: r for r in results}
    errors = [r.error for r in results if r.error]
    if errors and not skip_bad_files:
        raise DataError(f"{len(errors)} unreadable image(s); first: {errors[0]}")

    faces = index.drop(columns=["landmarks"]).copy()
    faces["n_detections"] = [by_id[f].n_detections for f in faces["face_id"]]
    faces["iou"] = [by_id[f].iou for f in faces["face_id"]]
    faces["readable"] = [by_id[f].error is None for f in faces["face_id"]]
    faces["detected"] = [by_id[f].box is not None for f in faces["face_id"]]

    training = faces["split"].isin(TRAINING_SPLITS) & faces["detected"]
    needs_fallback = train_fallback_box or any(ts.boxes == "landmarks" for ts in test_sets.values())
    fallback = None
    if needs_fallback and training.any():
        lm_boxes = np.stack([landmark_box(lm) for lm in index.loc[training, "landmarks"]])
        det_boxes = np.stack([by_id[f].box for f in faces.loc[training, "face_id"]])
        fallback = FallbackBoxModel.fit(lm_boxes, det_boxes)

    # Which file(s) each face goes to, and with which kind of box.
    members: dict[str, list[tuple[int, str]]] = {name: [] for name in (*TRAINING_SPLITS, *test_sets)}
    missed_training = faces["split"].isin(TRAINING_SPLITS) & ~faces["detected"] & faces["readable"]
    for split in TRAINING_SPLITS:
        rows = faces.index[(faces["split"] == split) & faces["detected"]]
        members[split] = [(i, "detector") for i in rows]
        if train_fallback_box and fallback is not None:
            members[split] += [(i, "fallback") for i in faces.index[(faces["split"] == split) & missed_training]]
        members[split].sort()
    for name, ts in test_sets.items():
        rows = in_test_set(faces, ts.source, tuple(ts.subsets)) & faces["readable"]
        if ts.boxes == "detector":
            members[name] = [(i, "detector") for i in faces.index[rows & faces["detected"]]]
        else:
            if fallback is None:
                raise DataError(f"test set {name!r} needs landmark-derived boxes, but no training face was detected "
                                "to fit the fallback box model on")
            members[name] = [(i, "landmarks") for i in faces.index[rows]]

    faces["box_kind"] = np.where(faces["detected"], "detector", np.where(faces["readable"], "missed", "unreadable"))
    boxes = np.full((len(faces), 4), np.nan, np.float32)
    arrays = {}
    for name, rows in members.items():
        out = {k: [] for k in ARRAY_FIELDS}
        for i, kind in tqdm(rows, desc=f"assemble {name}", unit="face", leave=False, mininterval=2.0):
            face, result, landmarks = faces.loc[i], by_id[faces.at[i, "face_id"]], index.at[i, "landmarks"]
            if kind == "detector":
                box, crop, matrix = result.box, result.crop, result.matrix
            else:
                box = fallback.box_for(landmarks)
                crop, matrix = crop_context(read_image(face["image_path"]), box, crop_size, context_factor)
                if name in TRAINING_SPLITS:
                    boxes[i], faces.at[i, "box_kind"] = box, "fallback"
            out["crops"].append(crop)
            out["landmarks"].append(apply_affine(landmarks, matrix).astype(np.float32))
            out["landmarks_image"].append(landmarks.astype(np.float32))
            out["boxes"].append(np.asarray(box, np.float32))
            for key in ("face_id", "person", "subset", "yaw"):
                out[key].append(face[key])
            out["detected"].append(kind == "detector")
        arrays[name] = _stack(out, crop_size, context_factor)
    detected = faces["detected"].to_numpy()
    if detected.any():
        boxes[detected] = np.stack([by_id[f].box for f in faces.loc[detected, "face_id"]])
    faces[["x0", "y0", "x1", "y1"]] = boxes
    return faces, arrays


def _stack(lists: dict[str, list], crop_size: int, context_factor: float) -> dict[str, np.ndarray]:
    n = len(lists["face_id"])
    return dict(
        crops=np.stack(lists["crops"]) if n else np.zeros((0, crop_size, crop_size, 3), np.uint8),
        landmarks=np.stack(lists["landmarks"]) if n else np.zeros((0, 68, 2), np.float32),
        landmarks_image=np.stack(lists["landmarks_image"]) if n else np.zeros((0, 68, 2), np.float32),
        boxes=np.stack(lists["boxes"]) if n else np.zeros((0, 4), np.float32),
        face_id=np.array(lists["face_id"], dtype=str),
        person=np.array(lists["person"], dtype=str),
        subset=np.array(lists["subset"], dtype=str),
        yaw=np.array(lists["yaw"], dtype=np.float32),
        detected=np.array(lists["detected"], dtype=bool),
        crop_size=np.array(crop_size),
        context_factor=np.array(context_factor, np.float32),
    )


def detection_summary(faces: pd.DataFrame, n_skipped_files: int = 0) -> dict:
    """Detection counts per subset and per split: faces, detected, missed, fallback, detection rate.

    ``faces`` is the table from :func:`assemble`. Rates are detected / readable faces.
    """
    def counts(group: pd.DataFrame) -> dict:
        readable = int(group["readable"].sum())
        detected = int(group["detected"].sum())
        return dict(faces=int(len(group)), readable=readable, detected=detected, missed=readable - detected,
                    fallback=int((group["box_kind"] == "fallback").sum()),
                    detection_rate=round(detected / readable, 4) if readable else None)

    return dict(
        by_subset={k: counts(g) for k, g in faces.groupby("subset")},
        by_split={k: counts(g) for k, g in faces.groupby("split")},
        skipped_files=int(n_skipped_files),
    )


def save_outputs(out_dir: str | Path, faces: pd.DataFrame, arrays: dict[str, dict[str, np.ndarray]]) -> list[Path]:
    """Write ``faces.csv`` and ``<split>.npz`` into ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "faces.csv"]
    faces.assign(image_path=faces["image_path"].map(portable_path)).to_csv(written[0], index=False, float_format="%.3f")
    for split, data in arrays.items():
        path = out_dir / f"{split}.npz"
        np.savez(path, **data)  # uncompressed: crops load ~10x faster and the files stay < 150 MB
        written.append(path)
    return written


def load_arrays(path: str | Path, what: str, how_to_make: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` stage output, in memory; a missing file names ``what`` it is and ``how_to_make``
    it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found ({how_to_make})")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_split(path: str | Path) -> dict[str, np.ndarray]:
    """Load a prepared ``<split>.npz`` (fields in the module docstring) into memory."""
    return load_arrays(path, "prepared split", "run the prepare stage: `dvc repro prepare`")
