"""Readers for the study's two annotation formats and for images.

Every reader returns landmarks as ``(68, 2) float32`` arrays in **0-based pixels** of the image they belong to
(pixel centres at integers). Bad input raises :class:`DataError` naming the offending file (and row or value),
never a silently wrong array.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

N_POINTS = 68


class DataError(ValueError):
    """A data file that cannot be read as the study expects; the message names the file."""


def read_pts(path: str | Path) -> np.ndarray:
    """Read a 300-W ``.pts`` file.

    The format is ``version: 1``, ``n_points: 68``, ``{``, 68 lines ``x y``, ``}`` in 1-based (Matlab) pixels.

    Returns:
        (68, 2) float32, 0-based pixels of the image.
    Raises:
        DataError: wrong header, point count other than 68, or a non-numeric / non-finite coordinate.
    """
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read .pts file ({exc})") from exc
    header = {}
    i = 0
    while i < len(lines) and lines[i] != "{":
        key, _, value = lines[i].partition(":")
        header[key.strip()] = value.strip()
        i += 1
    if i == len(lines) or "}" not in lines:
        raise DataError(f"{path}: not a .pts file (missing '{{' or '}}')")
    body = lines[i + 1 : lines.index("}")]
    declared = header.get("n_points")
    if declared is not None and declared != str(N_POINTS):
        raise DataError(f"{path}: n_points is {declared}, expected {N_POINTS}")
    if len(body) != N_POINTS:
        raise DataError(f"{path}: has {len(body)} points, expected {N_POINTS}")
    try:
        pts = np.array([[float(v) for v in ln.split()] for ln in body], dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric coordinate ({exc})") from exc
    if pts.shape != (N_POINTS, 2) or not np.isfinite(pts).all():
        raise DataError(f"{path}: every point line must hold two finite numbers")
    return pts - 1.0  # 300-W is 1-based


def read_keypoints_csv(path: str | Path, skip_bad_rows: bool = False,
                       extra_columns: tuple[str, ...] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Read a keypoint CSV: file name, then ``extra_columns`` (numbers, e.g. AFLW2000-3D's ``yaw, pitch, roll``),
    then ``x0, y0, ..., x67, y67`` in 0-based pixels (the YouTube-Faces and AFLW2000-3D layouts).

    Args:
        skip_bad_rows: leave out rows with a missing / non-numeric value instead of raising.
        extra_columns: names of the numeric columns between the file name and the coordinates.
    Returns:
        (DataFrame with columns ``name`` (str), ``landmarks`` ((68, 2) float32 arrays, 0-based pixels) and one float
        column per extra column, one message per skipped row naming the file, the row and the image name).
    Raises:
        DataError: wrong column count, or (unless ``skip_bad_rows``) a bad row, named with its line number.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse CSV ({exc})") from exc
    n_extra = len(extra_columns)
    if table.shape[1] != 1 + n_extra + 2 * N_POINTS:
        raise DataError(f"{path}: has {table.shape[1]} columns, expected {1 + n_extra + 2 * N_POINTS} (name"
                        + "".join(f", {c}" for c in extra_columns) + " + 136 coordinates)")
    numbers = table.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    extras, coords = numbers[:, :n_extra], numbers[:, n_extra:]
    bad = ~np.isfinite(numbers).all(axis=1) | table.iloc[:, 0].isna().to_numpy()
    # Line numbers as a text editor shows them: the header is line 1.
    messages = [f"{path}: row {row + 2} ({table.iloc[row, 0]!r}) has a missing or non-numeric value"
                for row in np.flatnonzero(bad)]
    if messages and not skip_bad_rows:
        raise DataError(messages[0] + f" ({len(messages)} bad rows in all)")
    keep = ~bad
    names = table.iloc[:, 0].astype(str).to_numpy()[keep]
    frame = pd.DataFrame({"name": names, "landmarks": list(coords[keep].reshape(-1, N_POINTS, 2))})
    for i, column in enumerate(extra_columns):
        frame[column] = extras[keep, i].astype(np.float64)
    return frame, messages


#: The largest image :func:`read_image` decodes, in pixels (100 megapixels, e.g. 10,000 x 10,000). A 70-byte PNG can
#: claim 60,000 x 60,000 pixels (10 GB decoded); the header is checked before decoding. The environment variable
#: ``FLM_MAX_IMAGE_PIXELS`` raises or lowers the limit.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
MAX_PIXELS_VARIABLE = "FLM_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The image size limit in pixels: ``FLM_MAX_IMAGE_PIXELS`` if set, else :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        limit = int(float(value))
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={value!r} is not a number of pixels") from None
    if limit <= 0:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={value!r} must be positive")
    return limit


def _header_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding the pixels; None if Pillow cannot tell."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit is ours (read_image), not Pillow's
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(buf.tobytes())) as image:
            warnings.simplefilter("ignore")
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB.

    Raises:
        DataError: the file is missing, empty, not a decodable image, or larger than :func:`max_image_pixels`
        (checked on the header, before any pixel is decoded).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    buf = np.fromfile(path, dtype=np.uint8)
    size = _header_size(buf) if buf.size else None
    limit = max_image_pixels()
    if size is not None and size[0] * size[1] > limit:
        raise DataError(f"{path}: {size[0]} x {size[1]} pixels is more than the limit of {limit:,} pixels"
                        f" (set {MAX_PIXELS_VARIABLE} to read larger images)")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    except cv2.error as exc:  # OpenCV's own size limit, or a decoder failure
        raise DataError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1][:200]})") from None
    if image is None:
        raise DataError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (NaN/inf refused, so the file stays valid JSON), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path
