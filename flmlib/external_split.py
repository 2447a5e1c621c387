"""Training splits from annotations a user brings: the Kaggle facial-keypoints CSV and WFLW's annotation lists.

The study cannot ship these datasets; users who have them write a split folder with this module and name it in a
``models:`` entry (``train_data: external/<name>``), which then trains like the study's own models::

    python -m flmlib.external_split kaggle training.csv --out external/kaggle
    python -m flmlib.external_split wflw list_98pt_rect_attr_train.txt --images WFLW_images --scheme ibug68 \\
        --prepared prepared --out external/wflw68
    .venv/bin/dvc add external/kaggle      # so that the train stage can depend on it

Each folder gets ``train.npz`` and ``val.npz`` (``val_share`` of the faces, seeded) in the layout of
:func:`flmlib.train.load_training_split`: context crops, points in crop and image pixels, boxes, ``face_id`` (``kaggle/
<row>``, ``wflw/<image>#<line>``: a source of its own, see :data:`flmlib.train.SOURCE_ALIASES`), the per-point
``valid`` mask and the ``point_scheme`` (``kaggle15``; ``wflw98`` or, mapped, ``ibug68``).

Boxes. A Kaggle image is already a 96 px face crop: its central square of side ``96 / context_factor`` is the box.
WFLW faces get the study's box convention when ``--prepared`` is given (the landmark-box -> HOG-box model fitted on the
study's detected training faces, as prepare does for its misses), else WFLW's own face boxes, which a model would then
expect at inference too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flmlib.crops import apply_affine, crop_context, landmark_box
from flmlib.io import read_image


def _split_rows(n: int, val_share: float, seed: int, eligible: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train rows, val rows): ``val_share`` of the faces, drawn from the ``eligible`` ones (default all)."""
    if not 0 < val_share < 1:
        raise ValueError(f"val_share={val_share!r} must be in (0, 1)")
    eligible = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
    pool = np.random.default_rng(seed).permutation(np.flatnonzero(eligible))
    n_val = min(max(1, int(round(n * val_share))), len(pool))
    if n_val < 1 or n - n_val < 1:
        raise ValueError(f"{n} face(s) ({len(pool)} eligible for validation) are too few to split into training and "
                         "validation")
    val = np.sort(pool[:n_val])
    return np.setdiff1d(np.arange(n), val), val


def _write(out_dir: Path, arrays: dict, rows_by_name: dict[str, np.ndarray]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in rows_by_name.items():
        part = {k: (v[rows] if isinstance(v, np.ndarray) and v.ndim > 0 else v) for k, v in arrays.items()}
        path = out_dir / f"{name}.npz"
        np.savez(path, **part)
        paths.append(path)
    return paths


def kaggle_split(csv_path: str | Path, out_dir: str | Path, context_factor: float = 1.5, val_share: float = 0.1,
                 seed: int = 0, limit: int = 0) -> list[Path]:
    """Kaggle ``training.csv`` -> ``out_dir/{train,val}.npz`` in scheme ``kaggle15`` with the missing points masked.

    The 96 x 96 grey image is the crop (copied into three channels); the box is its central square of side
    ``96 / context_factor``, so the points stay in the image's own pixels. Validation faces are drawn from those with
    both outer eye corners, the end points of the inter-ocular normaliser that validation scores with (in Kaggle's
    data: the faces with all 15 points); the faces with 4 points all train.
    """
    from flmlib.point_schemes import get_scheme

    from flmlib.kaggle_keypoints import read_kaggle_csv

    faces = read_kaggle_csv(csv_path, limit=limit)
    if len(faces) < 2:
        raise ValueError(f"{csv_path}: {len(faces)} face(s); a split needs at least 2")
    if not faces.valid.any(axis=1).all():
        raise ValueError(f"{csv_path}: some rows carry no keypoint at all (training.csv expected, not test.csv)")
    size = faces.images.shape[1]
    side = size / float(context_factor)
    centre = (size - 1) / 2
    box = np.array([centre - side / 2, centre - side / 2, centre + side / 2, centre + side / 2], np.float32)
    points = np.where(faces.valid[..., None], faces.points, np.nan).astype(np.float32)
    arrays = {
        "crops": np.repeat(faces.images[..., None], 3, axis=3),
        "landmarks": points,
        "landmarks_image": points,
        "boxes": np.tile(box, (len(faces), 1)),
        "face_id": np.array([f"kaggle/{i}" for i in faces.image_id]),
        "valid": faces.valid,
        "crop_size": np.array(size),
        "context_factor": np.array(float(context_factor)),
        "point_scheme": np.array("kaggle15"),
    }
    corners = list(get_scheme("kaggle15").outer_eye_corners)
    train, val = _split_rows(len(faces), val_share, seed, eligible=faces.valid[:, corners].all(axis=1))
    return _write(Path(out_dir), arrays, {"train": train, "val": val})


def study_box_model(prepared_dir: str | Path):
    """The landmark-box -> HOG-box model of :class:`flmlib.detect.FallbackBoxModel`, fitted on the detected faces of
    the study's ``prepared/train.npz`` (what prepare fits for the training faces HOG missed)."""
    from flmlib.detect import FallbackBoxModel

    with np.load(Path(prepared_dir) / "train.npz") as data:
        detected = data["detected"].astype(bool)
        points, boxes = data["landmarks_image"][detected], data["boxes"][detected]
    return FallbackBoxModel.fit(landmark_box(points), boxes)


def wflw_split(list_path: str | Path, image_root: str | Path, out_dir: str | Path, scheme: str = "ibug68",
               crop_size: int = 96, context_factor: float = 2.0, prepared_dir: str | Path | None = None,
               val_share: float = 0.1, seed: int = 0, limit: int = 0) -> list[Path]:
    """A WFLW annotation list -> ``out_dir/{train,val}.npz`` in ``scheme`` (``wflw98``, or ``ibug68`` through the
    standard 98 -> 68 mapping), context crops cut from the images."""
    from flmlib.wflw import read_wflw_annotations, wflw_to_ibug68

    if scheme not in ("wflw98", "ibug68"):
        raise ValueError(f"scheme={scheme!r}: use wflw98 or ibug68")
    frame = read_wflw_annotations(list_path, image_root)
    if limit:
        frame = frame.head(limit)
    if scheme == "ibug68":
        frame = wflw_to_ibug68(frame)
    box_model = study_box_model(prepared_dir) if prepared_dir is not None else None
    crops, landmarks, boxes = [], [], []
    for path, points, wflw_box in zip(frame["image_path"], frame["landmarks"], frame["box"]):
        box = box_model.box_for(points) if box_model is not None else np.asarray(wflw_box, np.float32)
        crop, matrix = crop_context(read_image(path), box, crop_size, context_factor)
        crops.append(crop)
        landmarks.append(apply_affine(points, matrix).astype(np.float32))
        boxes.append(np.asarray(box, np.float32))
    n_points = len(frame["landmarks"].iloc[0])
    arrays = {
        "crops": np.stack(crops),
        "landmarks": np.stack(landmarks),
        "landmarks_image": np.stack(frame["landmarks"].to_list()).astype(np.float32),
        "boxes": np.stack(boxes),
        "face_id": frame["face_id"].to_numpy().astype(str),
        "valid": np.ones((len(frame), n_points), bool),
        "crop_size": np.array(crop_size),
        "context_factor": np.array(float(context_factor)),
        "point_scheme": np.array(scheme),
    }
    train, val = _split_rows(len(frame), val_share, seed)
    return _write(Path(out_dir), arrays, {"train": train, "val": val})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="format", required=True)
    kaggle = sub.add_parser("kaggle", help="the Kaggle facial-keypoints training.csv")
    kaggle.add_argument("csv")
    kaggle.add_argument("--context-factor", type=float, default=1.5)
    wflw = sub.add_parser("wflw", help="a WFLW annotation list (98 points, box and attributes per line)")
    wflw.add_argument("list")
    wflw.add_argument("--images", required=True, help="WFLW_images folder")
    wflw.add_argument("--scheme", choices=["ibug68", "wflw98"], default="ibug68")
    wflw.add_argument("--prepared", help="the study's prepared/ folder: boxes in the study's convention")
    wflw.add_argument("--crop-size", type=int, default=96)
    wflw.add_argument("--context-factor", type=float, default=2.0)
    for p in (kaggle, wflw):
        p.add_argument("--out", required=True, help="output folder, e.g. external/<name>")
        p.add_argument("--val-share", type=float, default=0.1)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=0, help="faces to read, 0 = all")
    args = parser.parse_args(argv)
    try:
        if args.format == "kaggle":
            paths = kaggle_split(args.csv, args.out, args.context_factor, args.val_share, args.seed, args.limit)
        else:
            paths = wflw_split(args.list, args.images, args.out, args.scheme, args.crop_size, args.context_factor,
                               args.prepared, args.val_share, args.seed, args.limit)
    except (ValueError, FileNotFoundError) as exc:
        print(f"flmlib.external_split: {exc}")
        return 2
    for path in paths:
        with np.load(path) as data:
            print(f"wrote {path}: {len(data['face_id'])} faces, scheme {data['point_scheme']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
