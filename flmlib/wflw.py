"""Reader for WFLW's annotation lists (Wu et al., CVPR 2018: 10,000 faces, 7,500 train / 2,500 test, 98 points).

The lists ``list_98pt_rect_attr_train.txt`` / ``list_98pt_rect_attr_test.txt`` hold one face per line, separated by
whitespace: 196 floats (``x0 y0 x1 y1 ... x97 y97``), 4 integers (box ``x_min y_min x_max y_max``), 6 attribute flags
(pose, expression, illumination, make-up, occlusion, blur; 1 = the face is in that hard subset) and the image name
relative to ``WFLW_images/`` (e.g. ``51--Dancing/51_Dancing_Dancing_51_560.jpg``). One image may carry several faces,
so a face is named by its image *and* its line.

Conventions (see :mod:`flmlib.crops` for the project's box and pixel conventions):

* **Landmarks** are taken as they are, as **0-based pixels** (pixel centres at integers), with no offset. WFLW's
  release does not state a convention; the public readers checked all use the floats unchanged as 0-based image
  coordinates and array indices: mmpose (``tools/dataset_converters/wflw2coco.py``) writes them straight into COCO
  keypoints, and PIPNet (``lib/preprocess.py``, ``process_wflw``) clips them to ``[0, width]`` and crops with them as
  array indices. Unlike 300-W's ``.pts`` files there is no 1-based origin to undo. A residual half-pixel ambiguity
  (pixel centres vs corners) cannot be settled from the files; it is well under 1% of a WFLW inter-ocular distance.
* **Box**: WFLW's integers are read as the first and last pixel column / row inside the box (inclusive indices, like
  a dlib rectangle), so the box's edges are ``(x_min - 0.5, y_min - 0.5, x_max + 0.5, y_max + 0.5)`` and its width is
  ``x_max - x_min + 1``, as :func:`flmlib.crops.box_from_dlib` does. (PIPNet takes ``x_max - x_min`` as the width:
  the two readings differ by 1 px, half a pixel per edge.)
* **Points** stay in WFLW's 98-point scheme (``scheme == "wflw98"``, see :mod:`flmlib.point_schemes`);
  :func:`wflw_to_ibug68` selects the 68 iBUG-layout points.

Bad input raises :class:`flmlib.io.DataError` naming the file and the 1-based line number, never a silently wrong
array.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from flmlib import point_schemes
from flmlib.io import DataError

N_POINTS = 98
N_COORDS = 2 * N_POINTS
#: Attribute flag columns, in the file's order (``make_up`` is WFLW's "make-up").
ATTRIBUTES: tuple[str, ...] = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")
N_NUMBERS = N_COORDS + 4 + len(ATTRIBUTES)  # everything before the image name
N_FIELDS = N_NUMBERS + 1
SCHEME = "wflw98"


def _bad_line(path: Path, line_numbers: np.ndarray, rows: np.ndarray, what: str) -> DataError:
    """DataError for the first row flagged in ``rows`` (a bool mask over the parsed lines)."""
    bad = np.flatnonzero(rows)
    return DataError(f"{path}: line {line_numbers[bad[0]]}: {what}"
                     + (f" ({len(bad)} such lines in all)" if len(bad) > 1 else ""))


def _parse_fast(text: str, n_lines: int) -> tuple[np.ndarray, list[str]] | None:
    """``((N, 206) float64, N image names)`` via pandas' C parser, or None if anything looks off.

    Well-formed files (the normal case) are parsed in C: 7,500 lines take about a tenth of a second, against most of a
    second for a line-by-line split and convert. Any irregularity (a line with too many or too few fields, a
    non-numeric token, a missing name) sends the caller to :func:`_parse_slow`, which names the first bad line.
    """
    try:
        table = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, engine="c", quoting=csv.QUOTE_NONE,
                            keep_default_na=False, na_values=[], skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError):  # e.g. a line with more fields than the first one
        return None
    if table.shape != (n_lines, N_FIELDS):
        return None
    numeric = table.iloc[:, :N_NUMBERS]
    if not all(pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
               for dtype in numeric.dtypes):
        return None
    names = table.iloc[:, N_NUMBERS].astype(str).tolist()
    if any(not name for name in names):  # a short last field is read as an empty name
        return None
    return numeric.to_numpy(dtype=np.float64), names


def _parse_slow(path: Path, text: str) -> tuple[np.ndarray, list[str]]:
    """Line-by-line parse of a file :func:`_parse_fast` declined; raises DataError naming the first bad line."""
    rows = [(number, line.split()) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    for number, fields in rows:
        if len(fields) != N_FIELDS:
            raise DataError(f"{path}: line {number}: has {len(fields)} fields, expected {N_FIELDS} "
                            f"({N_COORDS} coordinates, 4 box values, {len(ATTRIBUTES)} attribute flags, image name)")
    numbers = np.empty((len(rows), N_NUMBERS), dtype=np.float64)
    for i, (number, fields) in enumerate(rows):
        for j, value in enumerate(fields[:N_NUMBERS]):
            try:
                numbers[i, j] = float(value)
            except ValueError:
                raise DataError(f"{path}: line {number}: non-numeric value {value!r}") from None
    return numbers, [fields[-1] for _, fields in rows]


def read_wflw_annotations(list_path: str | Path, image_root: str | Path) -> pd.DataFrame:
    """Read one WFLW annotation list (format and conventions in the module docstring).

    Args:
        list_path: ``list_98pt_rect_attr_{train,test}.txt``.
        image_root: the ``WFLW_images`` folder the image names are relative to (it is not read).
    Returns:
        DataFrame, one row per face in file order (blank lines are skipped), with columns

        * ``face_id`` (str): ``wflw/<image name>#<i>``, ``i`` the 0-based line index in the file, unique per file;
        * ``image_path`` (str): ``image_root / <image name>``;
        * ``landmarks``: ``(98, 2) float32`` arrays, 0-based pixels of the image;
        * ``box``: ``(4,) float32`` arrays ``(x0, y0, x1, y1)``, box edges in pixels;
        * ``pose``, ``expression``, ``illumination``, ``make_up``, ``occlusion``, ``blur`` (bool);
        * ``scheme`` (str): ``"wflw98"``.
    Raises:
        DataError: unreadable or empty file; or, naming the first bad line (1-based, as an editor counts them): a
        field count other than 207, a non-numeric value, a non-finite coordinate, box values that are not finite
        whole numbers or have ``x_max < x_min`` / ``y_max < y_min``, or an attribute flag other than 0 / 1.
    """
    path = Path(list_path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read WFLW annotation list ({exc})") from exc
    line_numbers = np.array([n for n, line in enumerate(text.split("\n"), start=1) if line.strip()], dtype=np.int64)
    if not len(line_numbers):
        raise DataError(f"{path}: no annotation lines")
    parsed = _parse_fast(text, len(line_numbers))
    numbers, names = parsed if parsed is not None else _parse_slow(path, text)
    coords = numbers[:, :N_COORDS]
    box_ints = numbers[:, N_COORDS:N_COORDS + 4]
    flags = numbers[:, N_COORDS + 4:]

    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise _bad_line(path, line_numbers, bad, "non-finite landmark coordinate (nan / inf)")
    bad = ~(np.isfinite(box_ints) & (box_ints == np.round(box_ints))).all(axis=1)
    if bad.any():
        raise _bad_line(path, line_numbers, bad, "box values must be whole pixel indices")
    bad = (box_ints[:, 2] < box_ints[:, 0]) | (box_ints[:, 3] < box_ints[:, 1])
    if bad.any():
        raise _bad_line(path, line_numbers, bad, "box has x_max < x_min or y_max < y_min")
    bad = ~((flags == 0) | (flags == 1)).all(axis=1)
    if bad.any():
        raise _bad_line(path, line_numbers, bad, f"attribute flags ({', '.join(ATTRIBUTES)}) must be 0 or 1")

    root = Path(image_root)
    # Inclusive pixel indices -> edges (module docstring): half a pixel outwards on every side.
    boxes = (box_ints + np.array([-0.5, -0.5, 0.5, 0.5])).astype(np.float32)
    frame = pd.DataFrame({
        "face_id": [f"wflw/{name}#{number - 1}" for name, number in zip(names, line_numbers)],
        "image_path": [str(root / name) for name in names],
        "landmarks": list(coords.astype(np.float32).reshape(-1, N_POINTS, 2)),
        "box": list(boxes),
    })
    for i, attribute in enumerate(ATTRIBUTES):
        frame[attribute] = flags[:, i].astype(bool)
    frame["scheme"] = SCHEME
    return frame


def wflw_to_ibug68(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of a :func:`read_wflw_annotations` frame with its landmarks in the iBUG 68-point layout.

    ``landmarks`` become ``(68, 2) float32`` arrays (0-based pixels, selected by
    :func:`flmlib.point_schemes.to_ibug68`; no interpolation) and ``scheme`` becomes ``"ibug68"``; the other columns
    (the box included) are unchanged.

    Caveat: the mapped points are WFLW's mark-up, not iBUG's. The jaw is every second point of WFLW's 33-point contour
    and the brows are WFLW's upper brow edges, which do not coincide with iBUG's hand-placed jaw and brow points (the
    WFLW authors report no explicit 98 -> 68 correspondence), and two eye-lid points per eye are WFLW's. Any error,
    NME or comparison computed on mapped points must say that the points are mapped and is not directly comparable
    with numbers on 300-W's own annotations.

    Raises:
        ValueError: a row whose ``scheme`` is not ``"wflw98"``.
    """
    schemes = set(frame["scheme"]) if len(frame) else set()
    if schemes - {SCHEME}:
        raise ValueError(f"wflw_to_ibug68 expects {SCHEME!r} rows, got schemes {sorted(schemes)}")
    out = frame.copy()
    if len(frame):
        points = np.stack(frame["landmarks"].to_numpy()).astype(np.float32)
        out["landmarks"] = list(point_schemes.to_ibug68(points, SCHEME))
    out["scheme"] = point_schemes.IBUG68.name
    return out
