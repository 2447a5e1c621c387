"""Kaggle's facial-keypoints data: the CSV reader, and the 15 Kaggle keypoints taken from the 68 iBUG points.

The Kaggle "Facial Keypoints Detection" challenge ships ``training.csv``: one row per face, 30 coordinate columns
(``left_eye_center_x``, ``left_eye_center_y``, ... in :data:`KEYPOINTS` order, 0-based pixels of a 96 x 96 grey
image) whose cells are **empty where the point is missing**, and an ``Image`` column of 9,216 space-separated grey
levels (row-major). Of its 7,049 faces only 2,140 carry all 15 points; most of the others carry 4 (eye centres, nose
tip, bottom lip centre). ``test.csv`` has ``ImageId`` and ``Image`` only. :func:`read_kaggle_csv` reads either into
arrays with a per-point validity mask (scheme ``kaggle15`` of :mod:`flmlib.point_schemes`).

The data is not part of this study. :func:`kaggle15_from_ibug68` takes the same 15 points from 68-point annotations
(the two eye centres as the means of each eye's six points, the other 13 as the matching iBUG points), which is how
the ``partial_labels`` stage rebuilds the Kaggle setting on 300-W's hand-annotated faces.

"left" and "right" are the subject's, as in iBUG's mark-up: Kaggle's ``left_eye_center`` lies on the image's right.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Kaggle's 15 keypoints in its column order (each has ``<name>_x`` and ``<name>_y`` columns).
KEYPOINTS = (
    "left_eye_center", "right_eye_center",
    "left_eye_inner_corner", "left_eye_outer_corner", "right_eye_inner_corner", "right_eye_outer_corner",
    "left_eyebrow_inner_end", "left_eyebrow_outer_end", "right_eyebrow_inner_end", "right_eyebrow_outer_end",
    "nose_tip", "mouth_left_corner", "mouth_right_corner", "mouth_center_top_lip", "mouth_center_bottom_lip",
)
#: Side of Kaggle's square grey images, pixels.
IMAGE_SIDE = 96
#: The 4 points most Kaggle faces keep, as indices into :data:`KEYPOINTS` (also the ``kaggle4`` scheme's order).
USUAL_FOUR = (0, 1, 10, 14)

#: iBUG 68 source of each Kaggle point: an index, or a tuple of indices whose mean it is (the eye centres).
FROM_IBUG68: tuple[int | tuple[int, ...], ...] = (
    tuple(range(42, 48)), tuple(range(36, 42)),   # eye centres: left eye 42-47, right eye 36-41
    42, 45, 39, 36,                                # left inner/outer corner, right inner/outer corner
    22, 26, 21, 17,                                # left brow inner/outer end, right brow inner/outer end
    30,                                            # nose tip
    54, 48,                                        # mouth left corner (subject's left), right corner
    51, 57,                                        # top lip centre (outer upper lip), bottom lip centre
)


@dataclass
class KaggleFaces:
    """Faces of a Kaggle CSV.

    ``images`` ``(N, 96, 96) uint8`` grey; ``points`` ``(N, 15, 2) float32`` 0-based pixels, NaN where missing
    (all NaN for ``test.csv``); ``valid`` ``(N, 15) bool``; ``image_id`` ``(N,)`` int (``ImageId``, or the row
    number when the file has none).
    """

    images: np.ndarray
    points: np.ndarray
    valid: np.ndarray
    image_id: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def complete(self) -> np.ndarray:
        """``(N,)`` bool: faces with all 15 points."""
        return self.valid.all(axis=1)


def kaggle15_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` iBUG points -> ``(..., 15, 2)`` Kaggle keypoints (float, same units)."""
    points68 = np.asarray(points68)
    if points68.shape[-2:] != (68, 2):
        raise ValueError(f"points of shape {points68.shape} are not (..., 68, 2) iBUG points")
    columns = [points68[..., list(src), :].mean(axis=-2) if isinstance(src, tuple) else points68[..., src, :]
               for src in FROM_IBUG68]
    return np.stack(columns, axis=-2)


def _parse_image(text, row: int, path: Path) -> np.ndarray:
    values = str(text).split()
    if len(values) != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"{path}: row {row}: Image has {len(values)} values, expected {IMAGE_SIDE * IMAGE_SIDE} "
                         f"({IMAGE_SIDE} x {IMAGE_SIDE} grey levels)")
    try:
        pixels = np.array(values, dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: row {row}: Image holds a value that is not a number") from None
    if not ((pixels >= 0) & (pixels <= 255) & (pixels == np.round(pixels))).all():
        raise ValueError(f"{path}: row {row}: Image values must be integers 0..255")
    return pixels.astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)


def read_kaggle_csv(path: str | Path, limit: int = 0) -> KaggleFaces:
    """Read Kaggle's ``training.csv`` (or ``test.csv``) into :class:`KaggleFaces`.

    Columns are found by name, so their order does not matter. ``limit`` > 0 reads only the first rows.

    Raises:
        FileNotFoundError: no such file. ValueError naming the file and row: no ``Image`` column, an image that is
        not 9,216 grey levels 0..255, a point with only one of x/y given, a coordinate that is not a number or lies
        outside the image.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Kaggle keypoints CSV not found")
    try:
        table = pd.read_csv(path, nrows=limit or None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({exc})") from None
    if "Image" not in table.columns:
        raise ValueError(f"{path}: no 'Image' column (columns: {list(table.columns)[:8]}...)")
    coordinate_columns = [f"{name}_{axis}" for name in KEYPOINTS for axis in "xy"]
    present = [c for c in coordinate_columns if c in table.columns]
    if present and len(present) != len(coordinate_columns):
        missing = sorted(set(coordinate_columns) - set(present))
        raise ValueError(f"{path}: has some keypoint columns but not {missing[:4]}")
    n = len(table)
    points = np.full((n, len(KEYPOINTS), 2), np.nan, np.float32)
    if present:
        raw = table[coordinate_columns].to_numpy()
        for row in range(n):
            for k, name in enumerate(KEYPOINTS):
                x, y = raw[row, 2 * k].strip(), raw[row, 2 * k + 1].strip()
                if (x == "") != (y == ""):
                    raise ValueError(f"{path}: row {row}: {name} has only one of x and y")
                if x == "":
                    continue
                try:
                    xy = float(x), float(y)
                except ValueError:
                    raise ValueError(f"{path}: row {row}: {name} = ({x!r}, {y!r}) is not a number pair") from None
                # Annotators clicked up to the image's outer edge (0 .. 96); a pixel more is a slip, beyond it an error.
                if not all(np.isfinite(v) and -1 <= v <= IMAGE_SIDE + 1 for v in xy):
                    raise ValueError(f"{path}: row {row}: {name} = {xy} lies outside the {IMAGE_SIDE} px image")
                points[row, k] = xy
    images = np.stack([_parse_image(text, row, path) for row, text in enumerate(table["Image"])]) if n else \
        np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
    image_id = table["ImageId"].astype(int).to_numpy() if "ImageId" in table.columns else np.arange(n)
    return KaggleFaces(images=images, points=points, valid=np.isfinite(points).all(axis=-1), image_id=image_id)


def write_kaggle_csv(path: str | Path, images: np.ndarray, points: np.ndarray) -> Path:
    """Write faces in Kaggle's ``training.csv`` layout (NaN points become empty cells); for tests and examples.

    ``images`` ``(N, 96, 96) uint8``; ``points`` ``(N, 15, 2)`` pixels with NaN where missing.
    """
    import pandas as pd

    columns = {}
    for k, name in enumerate(KEYPOINTS):
        for a, axis in enumerate("xy"):
            columns[f"{name}_{axis}"] = [("" if np.isnan(v) else f"{v:.4f}") for v in points[:, k, a]]
    columns["Image"] = [" ".join(str(int(v)) for v in image.ravel()) for image in images]
    pd.DataFrame(columns).to_csv(path, index=False)
    return Path(path)
