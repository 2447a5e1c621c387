"""The ``crops@<size>`` stage: training crops at another resolution, cut from the prepare stage's cached boxes.

The prepare stage detects every face once and stores ``crop_size`` (96 px) context crops, enough for O-Net's 48 px
input. A network with a larger input (a 96 px MobileNet wants the face box at 96 px, a 192 px context crop) is
trained from crops cut at that size from the original images, around the same boxes (detections, or fallback boxes
for training faces the detector missed) that prepare recorded: no detection is repeated, and only the training
splits are cut again (test sets are predicted from the original images at any size).

``crops/<size>/train.npz`` and ``val.npz`` hold every array of the prepared split (:mod:`flmlib.prepare`), with
``crops`` ``(N, size, size, 3) uint8``, ``landmarks`` (crop pixels) and ``crop_size`` replaced.

``--aligned`` cuts *aligned* crops instead (the ``aligned_crops@<size>`` stage, for a second landmark pass,
:mod:`flmlib.alignment`): each face is rotated and scaled so that its annotated inner points fit the training faces'
mean shape, placed where a context crop puts the face box. Those files also hold ``align_mean`` ``(68, 2)`` (box units,
from the training split, used for both splits) and ``align_matrices`` ``(N, 2, 3)`` (image -> crop), and
``landmarks_image`` and ``boxes`` are given in crop pixels (the points, and the mean-shape box): a similarity keeps
every ratio of distances, so the NMEs that training reports on them are the image's.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
# Plain text bars: they show in `dvc repro` logs (papermill --log-output) and in JupyterLab alike.
from tqdm import tqdm

from flmlib.alignment import alignment_matrices, box_in_crop, mean_shape
from flmlib.crops import apply_affine, context_matrix, crop_affine
from flmlib.io import read_image
from flmlib.paths import project_path
from flmlib.prepare import TRAINING_SPLITS, load_split


def _cut_image(item: tuple[str, np.ndarray], size: int) -> list[np.ndarray]:
    path, matrices = item
    image = read_image(project_path(path))
    return [crop_affine(image, matrix, size) for matrix in matrices]


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def recrop(split: dict[str, np.ndarray], image_paths: dict[str, str], size: int, workers: int = 0,
           desc: str = "crops", align_mean: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A prepared split with its crops cut again at ``size`` pixels (same boxes, same context factor), or aligned.

    Args:
        split: a prepared split (:func:`flmlib.prepare.load_split`).
        image_paths: face_id -> image path (``prepared/faces.csv``; relative paths from the project root).
        size: side of the new context crops, pixels.
        workers: processes that read and cut images (0 = all cores).
        align_mean: ``(68, 2)`` mean shape in box units (:func:`flmlib.alignment.mean_shape`): cut aligned crops
            (module docstring) instead of context crops around the boxes.
    Returns:
        the split's arrays with ``crops`` ``(N, size, size, 3) uint8``, ``landmarks`` ``(N, 68, 2) float32`` crop
        pixels and ``crop_size`` replaced (aligned: also ``landmarks_image``, ``boxes``, ``align_mean`` and
        ``align_matrices``).
    """
    if not (isinstance(size, int) and size >= 16):
        raise ValueError(f"crop size {size!r} must be an integer >= 16")
    face_ids = split["face_id"].astype(str)
    missing = [f for f in face_ids if f not in image_paths]
    if missing:
        raise ValueError(f"{len(missing)} face(s) of the split have no image path (first: {missing[0]})")
    context_factor = float(split["context_factor"])
    points = np.asarray(split["landmarks_image"], np.float64)
    if align_mean is None:
        matrices = np.stack([context_matrix(box, size, context_factor) for box in split["boxes"]]) \
            if len(face_ids) else np.zeros((0, 2, 3))
    else:
        if "valid" in split and not np.asarray(split["valid"]).all():
            raise ValueError("aligned crops need every point of every face; this split has unannotated points")
        matrices = alignment_matrices(points, align_mean, size, context_factor)
    # One task per image (an image can hold several training faces), in the split's order of first appearance.
    order: dict[str, list[int]] = {}
    for i, face_id in enumerate(face_ids):
        order.setdefault(image_paths[face_id], []).append(i)
    items = [(path, matrices[rows]) for path, rows in order.items()]
    job = partial(_cut_image, size=size)
    bar = dict(total=len(items), desc=desc, unit="img", mininterval=2.0)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(items) < 8:
        results = [job(item) for item in tqdm(items, **bar)]
    else:
        with mp.get_context("forkserver" if os.name == "posix" else "spawn").Pool(workers, initializer=_init_worker) as pool:
            results = list(tqdm(pool.imap(job, items, chunksize=8), **bar))
    crops = np.empty((len(face_ids), size, size, 3), np.uint8)
    for rows, cut in zip(order.values(), results):
        crops[rows] = cut
    landmarks = np.empty((len(face_ids), 68, 2), np.float32)
    for i, matrix in enumerate(matrices):
        landmarks[i] = apply_affine(split["landmarks_image"][i], matrix)
    out = {**split, "crops": crops, "landmarks": landmarks, "crop_size": np.array(size)}
    if align_mean is not None:
        out.update(landmarks_image=landmarks.copy(), align_mean=np.asarray(align_mean, np.float64),
                   align_matrices=matrices,
                   boxes=np.tile(box_in_crop(size, context_factor).astype(np.float32), (len(face_ids), 1)))
    return out


def run(prepared_dir: str | Path, out_dir: str | Path, size: int, workers: int = 0, aligned: bool = False) -> list[Path]:
    """Cut ``train`` and ``val`` of ``prepared_dir`` again at ``size`` into ``out_dir``; returns the written files.

    ``aligned``: aligned crops, on the mean shape of the training split's faces in their boxes.
    """
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    faces = pd.read_csv(prepared_dir / "faces.csv", usecols=["face_id", "image_path"])
    image_paths = dict(zip(faces["face_id"], faces["image_path"]))
    splits = {name: load_split(prepared_dir / f"{name}.npz") for name in TRAINING_SPLITS}
    mean = mean_shape(splits["train"]["landmarks_image"], splits["train"]["boxes"]) if aligned else None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, split in splits.items():
        arrays = recrop(split, image_paths, size, workers, desc=f"{name} @{size}", align_mean=mean)
        path = out_dir / f"{name}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)  # uncompressed, like prepare's files: crops load ~10x faster
        os.replace(tmp, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", default="prepared", help="the prepare stage's output folder")
    parser.add_argument("--size", type=int, required=True, help="context crop side, pixels")
    parser.add_argument("--out", required=True, help="output folder (train.npz, val.npz)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    parser.add_argument("--aligned", action="store_true",
                        help="aligned crops for a second landmark pass (inner points on the mean shape)")
    args = parser.parse_args(argv)
    for path in run(args.prepared, args.out, args.size, args.workers, aligned=args.aligned):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
