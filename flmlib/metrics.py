"""Landmark errors, CED curves, AUC / failure rates and the paired bootstrap: pure functions on arrays.

Every per-face error takes ``pred`` and ``gt`` as ``(N, 68, 2)`` arrays in **image pixels** (0-based, see
:mod:`flmlib.crops`) and returns an ``(N,)`` float64 array of *normalised* errors (dimensionless: pixels divided
by a length in pixels). The normaliser is part of every error's name, so no number leaves this module without it:

* ``rmse_box`` (primary, the original study's metric): RMSE over the 68 points, ``sqrt(mean_k |p_k - g_k|^2)``,
  divided by ``sqrt(w*h)`` of the *detection* box;
* ``nme_interocular``: mean point-to-point distance ``mean_k |p_k - g_k|`` divided by ``|g_36 - g_45|`` (outer eye
  corners);
* ``nme_interpupil``: the same mean distance divided by the distance of the eye centres (means of gt 36-41 and
  42-47);
* ``nme_gtbox``: the same mean distance divided by ``sqrt(w*h)`` of the tight box around the gt points.

Faces with missing annotations pass ``valid``, an ``(N, 68)`` bool mask of annotated points: the mean (or RMSE) is
then taken over each face's valid points only (:func:`valid_counts` gives how many), and a face without any valid
point raises. :func:`nme_scheme` does the same for landmarks in any :mod:`flmlib.point_schemes` scheme.

A NaN/inf prediction raises a ``ValueError`` naming the faces, unless ``nonfinite="fail"`` asks to score such faces
as failures (error ``inf``: above every threshold, AUC contribution 0, ``mean`` becomes inf).

With ``valid``, the normalisers use annotated points only: ``gtbox`` is the box around them, and ``interocular``
(points 36, 45) and ``interpupil`` (36-47) raise, naming the faces, where their points are missing.

Code loops over :data:`NORMALISED_ERRORS` (name -> function) instead of branching on names or point counts.
Every error function has the signature ``f(pred, gt, boxes=None, *, nonfinite="raise", valid=None)``; only
``rmse_box`` needs ``boxes``.

Aggregates (:func:`ced`, :func:`auc`, :func:`failure_rate`, :func:`summary`) work on ``(N,)`` error arrays. The AUC
is the exact integral of the CED step function, ``AUC(T) = (1/T) * int_0^T CED(x) dx = mean(max(T - e, 0)) / T``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from flmlib.crops import box_size, landmark_box
from flmlib.landmarks68 import OUTER_EYE_CORNERS, REGIONS

N_POINTS = 68
THRESHOLDS = (0.08, 0.10)
"""The study's CED cut-offs: 0.08 (primary) and 0.10."""

ERROR_REGIONS: Mapping[str, np.ndarray] = REGIONS
"""The five regions of the per-region error (jaw, brows, nose, eyes, mouth), from :mod:`flmlib.landmarks68`."""

NONFINITE_POLICIES = ("raise", "fail")
#: The 51 inner-face points (brows, nose, eyes, mouth): every point but the jaw line 0-16.
INNER_POINTS = np.arange(17, N_POINTS)


# --------------------------------------------------------------------------------------------------- validation
def _check_points(pred: np.ndarray, gt: np.ndarray, nonfinite: str, n_points: int = N_POINTS,
                  valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``pred``/``gt`` and return them as float64 plus an ``(N,)`` mask of faces with a non-finite pred.

    Coordinates of points that ``valid`` marks missing are not checked (they may hold NaN)."""
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite={nonfinite!r}; expected one of {NONFINITE_POLICIES}")
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (n_points, 2):
        raise ValueError(f"gt has shape {gt.shape}; expected (N, {n_points}, 2) image pixels")
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape} but gt has shape {gt.shape}; expected the same (N, {n_points}, 2)")
    if valid is not None:
        gt = np.where(valid[..., None], gt, 0.0)
    if not np.isfinite(gt).all():
        bad = np.flatnonzero(~np.isfinite(gt).all(axis=(1, 2)))
        raise ValueError(f"gt has NaN/inf coordinates in {bad.size} of {len(gt)} faces (indices {_index_list(bad)})")
    broken = ~np.isfinite(pred).all(axis=(1, 2))
    if broken.any() and nonfinite == "raise":
        bad = np.flatnonzero(broken)
        raise ValueError(
            f"pred has NaN/inf coordinates in {bad.size} of {len(pred)} faces (indices {_index_list(bad)}); "
            "fix the predictor or pass nonfinite='fail' to count those faces as failures (error = inf)"
        )
    return pred, gt, broken


def _check_valid(valid, n_faces: int, n_points: int = N_POINTS) -> np.ndarray | None:
    """``(N, P)`` bool validity mask (None passes through); every face needs at least one valid point."""
    if valid is None:
        return None
    valid = np.asarray(valid)
    if valid.dtype != bool or valid.shape != (n_faces, n_points):
        raise ValueError(f"valid is {valid.dtype} {valid.shape}; expected a ({n_faces}, {n_points}) bool mask")
    empty = ~valid.any(axis=1)
    if empty.any():
        bad = np.flatnonzero(empty)
        raise ValueError(f"{bad.size} face(s) have no valid point to score (indices {_index_list(bad)})")
    return valid


def valid_counts(valid: np.ndarray | None, n_faces: int, n_points: int = N_POINTS) -> np.ndarray:
    """``(N,)`` int: how many points of each face an error was computed over (all of them without a mask)."""
    if valid is None:
        return np.full(n_faces, n_points, np.int64)
    return _check_valid(valid, n_faces, n_points).sum(axis=1)


def _mean_points(values: np.ndarray, valid: np.ndarray | None, points: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``(N, P)`` per-point values over ``points`` (default all) and, with a mask, its valid points only."""
    if points is not None:
        values = values[:, points]
        valid = None if valid is None else valid[:, points]
    if valid is None:
        return values.mean(axis=-1)
    count = valid.sum(axis=-1)
    if (count == 0).any():
        bad = np.flatnonzero(count == 0)
        raise ValueError(f"{bad.size} face(s) have no valid point among the scored ones (indices {_index_list(bad)})")
    return np.where(valid, values, 0.0).sum(axis=-1) / count


def _index_list(indices: np.ndarray, limit: int = 20) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f", ... ({indices.size - limit} more)" if indices.size > limit else "")


def _check_errors(errors: np.ndarray) -> np.ndarray:
    """``(N,)`` errors as float64; NaN or negative values are a bug upstream, so they raise (inf is a failure)."""
    errors = np.asarray(errors, np.float64)
    if errors.ndim != 1:
        raise ValueError(f"errors have shape {errors.shape}; expected (N,)")
    if errors.size == 0:
        raise ValueError("errors are empty: no faces to aggregate")
    if np.isnan(errors).any():
        bad = np.flatnonzero(np.isnan(errors))
        raise ValueError(f"errors contain NaN for {bad.size} of {errors.size} faces (indices {_index_list(bad)})")
    if (errors < 0).any():
        raise ValueError(f"errors contain negative values (min {errors.min()}); normalised errors are >= 0")
    return errors


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold {threshold} must be a positive finite number")
    return threshold


# --------------------------------------------------------------------------------------------------- normalisers
def detection_box_size(gt: np.ndarray, boxes: np.ndarray | None, valid: np.ndarray | None = None) -> np.ndarray:
    """``sqrt(w*h)`` of the detection boxes ``(N, 4)`` (pixel edges) -> ``(N,)`` pixels; ``gt`` only sets N."""
    if boxes is None:
        raise ValueError("the detection-box normaliser needs boxes (N, 4) in image pixels; got boxes=None")
    boxes = np.asarray(boxes, np.float64)
    if boxes.shape != (len(gt), 4):
        raise ValueError(f"boxes have shape {boxes.shape}; expected ({len(gt)}, 4) to match the faces")
    return box_size(boxes)


def gt_box_size(gt: np.ndarray, boxes: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """``sqrt(w*h)`` of the tight box around the ground-truth points ``(N, 68, 2)`` -> ``(N,)`` pixels; with
    ``valid`` ``(N, 68)`` the box is around the annotated points only."""
    if valid is None:
        return box_size(landmark_box(gt).astype(np.float64))
    points = np.where(np.asarray(valid)[..., None], np.asarray(gt, np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        box = np.concatenate([np.nanmin(points, axis=1), np.nanmax(points, axis=1)], axis=-1)
    return box_size(box)


def _require_points(valid: np.ndarray | None, points: Sequence[int], name: str) -> None:
    """A normaliser defined by ``points`` needs them annotated: raise naming the faces where one is missing."""
    if valid is None:
        return
    lacking = ~np.asarray(valid)[:, list(points)].all(axis=1)
    if lacking.any():
        bad = np.flatnonzero(lacking)
        raise ValueError(f"normaliser {name!r} needs points {list(points)}, missing in {bad.size} face(s) "
                         f"(indices {_index_list(bad)}); choose a normaliser those faces have")


def interocular(gt: np.ndarray, boxes: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Distance of the outer eye corners (0-based points 36 and 45) of ``gt`` ``(N, 68, 2)`` -> ``(N,)`` pixels.
    Both corners must be annotated where ``valid`` is given."""
    a, b = OUTER_EYE_CORNERS
    _require_points(valid, (a, b), "interocular")
    gt = np.asarray(gt, np.float64)
    return np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)


def interpupil(gt: np.ndarray, boxes: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Distance of the eye centres (means of points 36-41 and 42-47) of ``gt`` ``(N, 68, 2)`` -> ``(N,)`` pixels.
    All twelve eye points must be annotated where ``valid`` is given (a partial eye moves its centre)."""
    _require_points(valid, range(36, 48), "interpupil")
    gt = np.asarray(gt, np.float64)
    return np.linalg.norm(gt[:, 36:42].mean(axis=1) - gt[:, 42:48].mean(axis=1), axis=-1)


NORMALISERS: dict[str, Callable[..., np.ndarray]] = {
    "box": detection_box_size,
    "interocular": interocular,
    "interpupil": interpupil,
    "gtbox": gt_box_size,
}
"""Normaliser name -> ``f(gt (N, 68, 2), boxes (N, 4) or None, valid (N, 68) bool or None) -> (N,) pixels``. With
``valid``, a normaliser uses annotated points only, and one defined by particular points raises where they are
missing."""


def _normalise(distance: np.ndarray, norm: np.ndarray, broken: np.ndarray, name: str) -> np.ndarray:
    if (norm <= 0).any() or not np.isfinite(norm).all():
        bad = np.flatnonzero((norm <= 0) | ~np.isfinite(norm))
        raise ValueError(f"normaliser {name!r} is zero or invalid for {bad.size} faces (indices {_index_list(bad)})")
    errors = distance / norm
    errors[broken] = np.inf  # nonfinite="fail": a face without a usable prediction is a failure at any threshold
    return errors


# --------------------------------------------------------------------------------------------------- per-face errors
def point_distances(pred: np.ndarray, gt: np.ndarray, *, nonfinite: str = "raise") -> np.ndarray:
    """Euclidean distance of every point: ``(N, 68, 2)`` x2 image pixels -> ``(N, 68)`` pixels.

    With ``nonfinite="fail"`` the distances of a face with a NaN/inf prediction are inf.
    """
    pred, gt, broken = _check_points(pred, gt, nonfinite)
    dist = np.linalg.norm(pred - gt, axis=-1)
    dist[broken] = np.inf
    return dist


def rmse_box(pred: np.ndarray, gt: np.ndarray, boxes: np.ndarray | None = None, *, nonfinite: str = "raise",
             valid: np.ndarray | None = None) -> np.ndarray:
    """RMSE over the 68 points divided by ``sqrt(w*h)`` of the detection box (the original study's metric).

    Args:
        pred, gt: ``(N, 68, 2)`` image pixels.
        boxes: ``(N, 4)`` detection boxes ``(x0, y0, x1, y1)``, pixel edges (required).
        nonfinite: ``"raise"`` (default) on a NaN/inf prediction, or ``"fail"`` to give that face error inf.
        valid: optional ``(N, 68)`` bool mask: the mean runs over each face's valid points only.
    Returns:
        ``(N,)`` float64, ``sqrt(mean_k |p_k - g_k|^2) / sqrt(w*h)``.
    """
    valid = _check_valid(valid, len(np.asarray(gt)))
    pred, gt, broken = _check_points(pred, gt, nonfinite, valid=valid)
    norm = detection_box_size(gt, boxes, valid)
    with np.errstate(invalid="ignore"):
        rmse = np.sqrt(_mean_points(((pred - gt) ** 2).sum(axis=-1), valid))
    return _normalise(rmse, norm, broken, "box")


def _nme(pred, gt, boxes, nonfinite: str, normaliser: str, points: np.ndarray | None = None,
         valid: np.ndarray | None = None) -> np.ndarray:
    valid = _check_valid(valid, len(np.asarray(gt)))
    pred, gt, broken = _check_points(pred, gt, nonfinite, valid=valid)
    norm = NORMALISERS[normaliser](gt, boxes, valid)
    with np.errstate(invalid="ignore"):
        mean_dist = _mean_points(np.linalg.norm(pred - gt, axis=-1), valid, points)
    return _normalise(mean_dist, norm, broken, normaliser)


def nme_scheme(pred, gt, scheme, valid=None, *, nonfinite: str = "raise") -> np.ndarray:
    """Inter-ocular NME of landmarks in any point scheme: mean distance over each face's valid points divided by the
    distance of the scheme's outer eye corners in ``gt`` (which must be valid).

    Args:
        pred, gt: ``(N, P, 2)`` image pixels in ``scheme`` (a :class:`flmlib.point_schemes.PointScheme` or its name).
        valid: optional ``(N, P)`` bool mask of annotated points (default: all).
    Returns:
        ``(N,)`` float64; :func:`valid_counts` gives the number of points behind each value.
    """
    from flmlib.point_schemes import get_scheme

    scheme = get_scheme(scheme)
    valid = _check_valid(valid, len(np.asarray(gt)), scheme.n_points)
    pred, gt, broken = _check_points(pred, gt, nonfinite, scheme.n_points, valid)
    right, left = scheme.outer_eye_corners
    if valid is not None and not (valid[:, right] & valid[:, left]).all():
        bad = np.flatnonzero(~(valid[:, right] & valid[:, left]))
        raise ValueError(f"{bad.size} face(s) lack an outer eye corner, the normaliser's end points "
                         f"(indices {_index_list(bad)})")
    norm = np.linalg.norm(gt[:, right] - gt[:, left], axis=-1)
    with np.errstate(invalid="ignore"):
        mean_dist = _mean_points(np.linalg.norm(pred - gt, axis=-1), valid)
    return _normalise(mean_dist, norm, broken, "interocular")


def nme_interocular(pred, gt, boxes=None, *, nonfinite: str = "raise", valid=None) -> np.ndarray:
    """Mean point-to-point distance / distance of gt points 36 and 45 (outer eye corners).

    ``pred``, ``gt``: ``(N, 68, 2)`` image pixels; ``boxes`` is ignored. Returns ``(N,)`` float64.
    """
    return _nme(pred, gt, boxes, nonfinite, "interocular", valid=valid)


def nme_interpupil(pred, gt, boxes=None, *, nonfinite: str = "raise", valid=None) -> np.ndarray:
    """Mean point-to-point distance / distance of the gt eye centres (means of 36-41 and 42-47).

    ``pred``, ``gt``: ``(N, 68, 2)`` image pixels; ``boxes`` is ignored. Returns ``(N,)`` float64.
    """
    return _nme(pred, gt, boxes, nonfinite, "interpupil", valid=valid)


def nme_gtbox(pred, gt, boxes=None, *, nonfinite: str = "raise", valid=None) -> np.ndarray:
    """Mean point-to-point distance / ``sqrt(w*h)`` of the tight box around the gt points.

    ``pred``, ``gt``: ``(N, 68, 2)`` image pixels; ``boxes`` is ignored. Returns ``(N,)`` float64.
    """
    return _nme(pred, gt, boxes, nonfinite, "gtbox", valid=valid)


def nme_interocular_inner(pred, gt, boxes=None, *, nonfinite: str = "raise", valid=None) -> np.ndarray:
    """Mean distance over the 51 inner-face points (17-67: brows, nose, eyes, mouth; the jaw left out) / distance of
    gt points 36 and 45. The jaw is where label conventions differ (a mesh's face oval, AFLW2000-3D's 3D outline,
    YouTube's labels), so this error compares methods on the points whose definition they share.

    ``pred``, ``gt``: ``(N, 68, 2)`` image pixels; ``boxes`` is ignored. Returns ``(N,)`` float64.
    """
    return _nme(pred, gt, boxes, nonfinite, "interocular", INNER_POINTS, valid)


NORMALISED_ERRORS: dict[str, Callable[..., np.ndarray]] = {
    "rmse_box": rmse_box,
    "nme_interocular": nme_interocular,
    "nme_interocular_inner": nme_interocular_inner,
    "nme_interpupil": nme_interpupil,
    "nme_gtbox": nme_gtbox,
}
"""Error name -> ``f(pred, gt, boxes=None, *, nonfinite="raise", valid=None) -> (N,)``. The first entry is the
primary metric."""

PRIMARY_ERROR = "rmse_box"

ERROR_LABELS: dict[str, str] = {
    "rmse_box": "RMSE / sqrt(w·h) of the face box",
    "nme_interocular": "mean error / inter-ocular distance (points 36-45)",
    "nme_interocular_inner": "mean error of the 51 inner points (17-67) / inter-ocular distance",
    "nme_interpupil": "mean error / inter-pupil distance",
    "nme_gtbox": "mean error / sqrt(w·h) of the ground-truth box",
}
"""Human-readable axis / table labels naming each error's normaliser."""

NORMALISER_LABELS: dict[str, str] = {
    "box": "sqrt(w·h) of the face box",
    "interocular": "inter-ocular distance (points 36-45)",
    "interpupil": "inter-pupil distance",
    "gtbox": "sqrt(w·h) of the ground-truth box",
}
"""Human-readable names of the :data:`NORMALISERS` keys (e.g. for per-region error axes)."""


def all_errors(pred: np.ndarray, gt: np.ndarray, boxes: np.ndarray, *, nonfinite: str = "raise",
               valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every error of :data:`NORMALISED_ERRORS` for the same faces: name -> ``(N,)`` float64.

    ``pred``, ``gt``: ``(N, 68, 2)`` image pixels; ``boxes``: ``(N, 4)`` detection boxes (pixel edges); ``valid``:
    optional ``(N, 68)`` bool mask of annotated points.
    """
    return {name: fn(pred, gt, boxes, nonfinite=nonfinite, valid=valid) for name, fn in NORMALISED_ERRORS.items()}


def region_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    normaliser: str | np.ndarray,
    boxes: np.ndarray | None = None,
    *,
    regions: Mapping[str, Sequence[int]] | None = None,
    nonfinite: str = "raise",
    valid: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Mean normalised point error of each face region, per face.

    Args:
        pred, gt: ``(N, 68, 2)`` image pixels.
        normaliser: a key of :data:`NORMALISERS` (``"box"``, ``"interocular"``, ``"interpupil"``, ``"gtbox"``)
            or an ``(N,)`` array of normalising lengths in pixels.
        boxes: ``(N, 4)`` detection boxes, needed only for ``normaliser="box"``.
        regions: name -> 0-based point indices; default :data:`ERROR_REGIONS` (jaw, brows, nose, eyes, mouth).
        valid: optional ``(N, 68)`` bool mask of annotated points: a region's mean runs over its annotated points,
            and is NaN for a face without any (that face has no error for that region).
    Returns:
        region name -> ``(N,)`` float64: mean over the region's points of ``|p_k - g_k| / normaliser``.
        Average over faces (``np.nanmean`` where ``valid`` leaves regions empty) for the per-region bar chart.
    """
    valid = _check_valid(valid, len(np.asarray(gt)))
    pred, gt, broken = _check_points(pred, gt, nonfinite, valid=valid)
    dist = np.linalg.norm(pred - gt, axis=-1)
    dist[broken] = np.inf
    if isinstance(normaliser, str):
        if normaliser not in NORMALISERS:
            raise ValueError(f"unknown normaliser {normaliser!r}; expected one of {list(NORMALISERS)} or an (N,) array")
        norm = NORMALISERS[normaliser](gt, boxes, valid)
    else:
        norm = np.asarray(normaliser, np.float64)
        if norm.shape != (len(gt),):
            raise ValueError(f"normaliser array has shape {norm.shape}; expected ({len(gt)},) pixels")
    if (norm <= 0).any() or not np.isfinite(norm).all():
        raise ValueError("normaliser is zero, negative or non-finite for some faces")
    regions = ERROR_REGIONS if regions is None else regions
    out = {}
    for name, idx in regions.items():
        idx = np.asarray(idx)
        if valid is None:
            out[name] = dist[:, idx].mean(axis=1) / norm
            continue
        count = valid[:, idx].sum(axis=1)
        total = np.where(valid[:, idx], dist[:, idx], 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(count > 0, total / np.maximum(count, 1), np.nan) / norm
    return out


# --------------------------------------------------------------------------------------------------- aggregates
def ced(errors: np.ndarray, thresholds: np.ndarray | Sequence[float]) -> np.ndarray:
    """Cumulative error distribution: fraction of faces with error <= t.

    Args:
        errors: ``(N,)`` normalised errors (inf = failure, NaN raises).
        thresholds: ``(T,)`` error values (any order).
    Returns:
        ``(T,)`` float64 in [0, 1], non-decreasing in the threshold.
    """
    errors = np.sort(_check_errors(errors))
    thresholds = np.asarray(thresholds, np.float64)
    return np.searchsorted(errors, thresholds, side="right") / errors.size


def auc(errors: np.ndarray, threshold: float) -> float:
    """Area under the CED from 0 to ``threshold``, divided by ``threshold``: in [0, 1], 1 = every error is 0.

    Exact for the step-function CED: ``(1/T) int_0^T CED(x) dx = mean(max(T - e_i, 0)) / T``.
    """
    threshold = _check_threshold(threshold)
    errors = _check_errors(errors)
    return float(_auc_contributions(errors, threshold).mean())


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Share of faces with error strictly above ``threshold`` (``1 - CED(threshold)``)."""
    threshold = _check_threshold(threshold)
    return float((_check_errors(errors) > threshold).mean())


def threshold_key(threshold: float) -> str:
    """``0.08 -> "0.08"``, ``0.1 -> "0.10"``: the threshold as it appears in metric names."""
    return f"{threshold:.2f}" if round(threshold, 2) == threshold else f"{threshold:g}"


def summary(errors: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """Headline numbers of one method on one test set for one error.

    Returns:
        ``{"n_faces", "mean", "median", "auc@0.08", "auc@0.10", "fail@0.08", "fail@0.10"}`` (one auc/fail pair per
        threshold). ``mean`` is inf when some face failed with ``nonfinite="fail"``.
    """
    errors = _check_errors(errors)
    out: dict[str, float] = {"n_faces": int(errors.size), "mean": float(errors.mean()), "median": float(np.median(errors))}
    for t in thresholds:
        out[f"auc@{threshold_key(t)}"] = auc(errors, t)
    for t in thresholds:
        out[f"fail@{threshold_key(t)}"] = failure_rate(errors, t)
    return out


def paired_bootstrap_auc_diff(
    err_a: np.ndarray,
    err_b: np.ndarray,
    threshold: float,
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    level: float = 0.95,
    chunk: int = 256,
    groups: np.ndarray | None = None,
) -> tuple[float, tuple[float, float]]:
    """AUC(a) - AUC(b) on the same faces, with a paired percentile-bootstrap confidence interval.

    Faces are resampled jointly (the same indices for both methods), so the face-to-face variation both methods
    share cancels out of the interval. With ``groups`` (e.g. the person of each face), whole groups are resampled
    (cluster bootstrap): near-duplicate video frames of one person are not independent evidence.

    Args:
        err_a, err_b: ``(N,)`` errors of two methods on the *same* N faces, in the same order.
        threshold: AUC cut-off (e.g. 0.08).
        n_resamples: bootstrap resamples (from params).
        seed: seeds ``numpy.random.default_rng``; the same seed gives the same interval.
        level: confidence level of the interval.
        chunk: resamples drawn per vectorised step (bounds memory to ``chunk * N`` indices).
        groups: ``(N,)`` cluster label per face, or None to resample single faces.
    Returns:
        ``(diff, (lo, hi))``: the observed difference and the interval's ends.
    """
    threshold = _check_threshold(threshold)
    a, b = _check_errors(err_a), _check_errors(err_b)
    if a.shape != b.shape:
        raise ValueError(f"paired errors must cover the same faces; got {a.size} and {b.size}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    # AUC is a mean of per-face contributions, so a resample's AUC difference is the mean of resampled differences.
    contrib = _auc_contributions(a, threshold) - _auc_contributions(b, threshold)
    return float(contrib.mean()), _bootstrap_mean_ci(contrib, n_resamples, seed, level, chunk, groups)


def bootstrap_auc_ci(
    errors: np.ndarray, threshold: float, n_resamples: int = 1000, seed: int = 0, *, level: float = 0.95,
    chunk: int = 256, groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap interval ``(lo, hi)`` of one method's AUC@threshold over ``(N,)`` per-face errors.

    ``groups`` as in :func:`paired_bootstrap_auc_diff` (resample whole clusters, e.g. persons).
    """
    threshold = _check_threshold(threshold)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    return _bootstrap_mean_ci(_auc_contributions(_check_errors(errors), threshold), n_resamples, seed, level, chunk,
                              groups)


def _auc_contributions(errors: np.ndarray, threshold: float) -> np.ndarray:
    """Per-face terms whose mean is the AUC: ``max(T - e, 0) / T``."""
    return np.clip(threshold - errors, 0.0, None) / threshold


def _bootstrap_mean_ci(values: np.ndarray, n_resamples: int, seed: int, level: float, chunk: int,
                       groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` under resampling of faces, or of whole ``groups``."""
    if groups is None:
        groups = np.arange(values.size)
    groups = np.asarray(groups)
    if groups.shape != values.shape:
        raise ValueError(f"groups must give one label per face: {groups.shape} vs {values.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    sums, sizes = np.bincount(inverse, weights=values), np.bincount(inverse).astype(np.float64)
    n_groups = sums.size
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        # How often each group is drawn in a resample of n_groups groups with replacement.
        draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=stop - start).astype(np.float64)
        stats[start:stop] = (draws @ sums) / (draws @ sizes)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------- tables
def error_columns(errors: pd.DataFrame) -> list[str]:
    """The error columns of a tidy per-face frame, in :data:`NORMALISED_ERRORS` order."""
    return [name for name in NORMALISED_ERRORS if name in errors.columns]


def _check_frame(errors: pd.DataFrame) -> list[str]:
    missing = {"test_set", "method", "face_id"} - set(errors.columns)
    if missing:
        raise ValueError(f"errors frame lacks columns {sorted(missing)}; has {list(errors.columns)}")
    cols = error_columns(errors)
    if not cols:
        raise ValueError(f"errors frame has no error column; expected some of {list(NORMALISED_ERRORS)}")
    dup = errors.duplicated(["test_set", "method", "face_id"])
    if dup.any():
        first = errors.loc[dup, ["test_set", "method", "face_id"]].iloc[0].tolist()
        raise ValueError(f"errors frame has {int(dup.sum())} duplicate (test_set, method, face_id) rows, e.g. {first}")
    return cols


def summary_frame(errors: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """Tidy per-face errors -> one :func:`summary` row per (test_set, method, error).

    Args:
        errors: columns ``test_set``, ``method``, ``face_id`` and one column per error name (``rmse_box``, ...).
    Returns:
        DataFrame with columns ``test_set, method, error, n_faces, mean, median, auc@..., fail@...``.
    """
    cols = _check_frame(errors)
    rows = []
    for (test_set, method), group in errors.groupby(["test_set", "method"], sort=False):
        for col in cols:
            rows.append({"test_set": test_set, "method": method, "error": col, **summary(group[col].to_numpy(), thresholds)})
    return pd.DataFrame(rows)


#: Optional column of the per-face frame: the cluster (person) of each face; bootstraps then resample persons.
GROUP_COLUMN = "person"


def _groups_of(frame: pd.DataFrame) -> np.ndarray | None:
    return frame[GROUP_COLUMN].to_numpy() if GROUP_COLUMN in frame.columns else None


def paired_frame(errors: pd.DataFrame, method_a: str, method_b: str, error: str) -> pd.DataFrame:
    """Per-face errors of two methods side by side, per test set, on identical faces.

    Returns:
        DataFrame with columns ``test_set, face_id, a, b`` (and :data:`GROUP_COLUMN` when ``errors`` has it).
    Raises:
        ValueError: a test set where the two methods were not run on exactly the same faces.
    """
    _check_frame(errors)
    wide = []
    for test_set, group in errors.groupby("test_set", sort=False):
        ga = group[group.method == method_a].set_index("face_id")[error]
        gb = group[group.method == method_b].set_index("face_id")[error]
        if ga.empty or gb.empty:
            raise ValueError(f"test set {test_set!r}: no rows for method {method_a if ga.empty else method_b!r}")
        if set(ga.index) != set(gb.index):
            only_a, only_b = set(ga.index) - set(gb.index), set(gb.index) - set(ga.index)
            raise ValueError(
                f"test set {test_set!r}: methods ran on different faces ({len(only_a)} only in {method_a!r}, "
                f"{len(only_b)} only in {method_b!r}, e.g. {sorted(only_a | only_b)[:3]})"
            )
        frame = pd.DataFrame({"test_set": test_set, "face_id": ga.index, "a": ga.to_numpy(), "b": gb.loc[ga.index].to_numpy()})
        if GROUP_COLUMN in group.columns:
            frame[GROUP_COLUMN] = group[group.method == method_a].set_index("face_id")[GROUP_COLUMN].loc[ga.index].to_numpy()
        wide.append(frame)
    return pd.concat(wide, ignore_index=True)


def _selected(errors: pd.DataFrame, error_names: Sequence[str] | None) -> list[str]:
    cols = _check_frame(errors)
    if error_names is None:
        return cols
    missing = [e for e in error_names if e not in cols]
    if missing:
        raise ValueError(f"errors frame has no column(s) {missing}; has {cols}")
    return list(error_names)


def bootstrap_frame(
    errors: pd.DataFrame,
    method_a: str,
    method_b: str,
    thresholds: Sequence[float] = THRESHOLDS,
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    error_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Paired bootstrap of AUC(method_a) - AUC(method_b) for every test set, error and threshold.

    Args:
        errors: tidy per-face frame (``test_set``, ``method``, ``face_id``, error columns).
        error_names: error columns to use (default: all present).
    Returns:
        DataFrame with columns ``test_set, error, threshold, diff, ci_lo, ci_hi, n_faces`` (95% interval).
    """
    rows = []
    for col in _selected(errors, error_names):
        paired = paired_frame(errors, method_a, method_b, col)
        for test_set, group in paired.groupby("test_set", sort=False):
            for t in thresholds:
                diff, (lo, hi) = paired_bootstrap_auc_diff(group.a.to_numpy(), group.b.to_numpy(), t, n_resamples, seed,
                                                           groups=_groups_of(group))
                rows.append({"test_set": test_set, "error": col, "threshold": t, "diff": diff, "ci_lo": lo,
                             "ci_hi": hi, "n_faces": len(group), "n_groups": _n_groups(group)})
    return pd.DataFrame(rows)


def auc_ci_frame(
    errors: pd.DataFrame,
    thresholds: Sequence[float] = THRESHOLDS,
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    error_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Each method's AUC with a bootstrap 95% interval, per test set, error and threshold.

    Returns:
        DataFrame with columns ``test_set, method, error, threshold, auc, ci_lo, ci_hi, n_faces``.
    """
    rows = []
    for col in _selected(errors, error_names):
        for (test_set, method), group in errors.groupby(["test_set", "method"], sort=False):
            e = group[col].to_numpy()
            for t in thresholds:
                lo, hi = bootstrap_auc_ci(e, t, n_resamples, seed, groups=_groups_of(group))
                rows.append({"test_set": test_set, "method": method, "error": col, "threshold": t, "auc": auc(e, t),
                             "ci_lo": lo, "ci_hi": hi, "n_faces": e.size})
    return pd.DataFrame(rows)


def mean_ci_frame(
    errors: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, *, error_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Each method's mean error with a bootstrap 95% interval, per test set and error, over the faces it placed
    (finite errors; an unplaced face has no error to average), resampling persons where known.

    Returns:
        DataFrame with columns ``test_set, method, error, mean, ci_lo, ci_hi, n_faces`` (``n_faces``: placed faces).
    """
    rows = []
    for col in _selected(errors, error_names):
        for (test_set, method), group in errors.groupby(["test_set", "method"], sort=False):
            e = group[col].to_numpy(np.float64)
            placed = np.isfinite(e)
            if not placed.any():
                continue
            groups = _groups_of(group)
            lo, hi = _bootstrap_mean_ci(e[placed], n_resamples, seed, 0.95, 256,
                                        None if groups is None else np.asarray(groups)[placed])
            rows.append({"test_set": test_set, "method": method, "error": col, "mean": float(e[placed].mean()),
                         "ci_lo": lo, "ci_hi": hi, "n_faces": int(placed.sum())})
    return pd.DataFrame(rows)


def _n_groups(frame: pd.DataFrame) -> int:
    """Independent units a bootstrap resamples: distinct persons when known, else faces."""
    return int(frame[GROUP_COLUMN].nunique()) if GROUP_COLUMN in frame.columns else int(len(frame))


def _json_number(value):
    """JSON has no inf/NaN; DVC would refuse such a metrics file, so they become null."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def metrics_dict(
    errors: pd.DataFrame,
    thresholds: Sequence[float] = THRESHOLDS,
    *,
    error_names: Sequence[str] | None = None,
    reference: str | None = None,
    auc_ci: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Every number of one evaluation, nested ``test_set -> {"methods": {method: {"<error>/<metric>": number}},
    "vs_reference": {method: {...}}}``.

    Keys name the normaliser, e.g. ``metrics["test_aflw2000"]["methods"]["onet"]["rmse_box/auc@0.08"]``; each method
    also has ``n_faces``. Non-finite numbers become ``None`` (JSON has no inf). The ``test_set`` column can hold any
    label (a test set, or a test set's subset or yaw bin).

    Args:
        errors: tidy per-face frame (``test_set``, ``method``, ``face_id``, one column per error name).
        thresholds: AUC / failure cut-offs.
        error_names: errors to include (default all present).
        reference: adds ``vs_reference[method]`` for every other method with ``"<error>/auc@<t>/diff"``,
            ``".../ci95_lo"``, ``".../ci95_hi"`` of AUC(method) - AUC(reference) (paired bootstrap,
            :func:`bootstrap_frame`), ``n_resamples`` and the number of resampled groups.
        auc_ci: adds ``"<error>/auc@<t>/ci95_lo"`` and ``".../ci95_hi"`` to each method (:func:`auc_ci_frame`), and
            ``"<error>/mean/ci95_lo"``, ``".../ci95_hi"`` of the mean error over placed faces (:func:`mean_ci_frame`).
        n_resamples, seed: bootstrap settings (from params).
    """
    cols = _selected(errors, error_names)
    table = summary_frame(errors[["test_set", "method", "face_id", *cols]], thresholds)
    metric_cols = [c for c in table.columns if c not in ("test_set", "method", "error", "n_faces")]
    out: dict = {}
    for row in table.to_dict("records"):
        methods = out.setdefault(row["test_set"], {"methods": {}, "vs_reference": {}})["methods"]
        entry = methods.setdefault(row["method"], {"n_faces": int(row["n_faces"])})
        for col in metric_cols:
            entry[f"{row['error']}/{col}"] = _json_number(row[col])
    if auc_ci:
        for row in auc_ci_frame(errors, thresholds, n_resamples, seed, error_names=cols).to_dict("records"):
            entry = out[row["test_set"]]["methods"][row["method"]]
            key = f"{row['error']}/auc@{threshold_key(row['threshold'])}"
            entry[f"{key}/ci95_lo"] = _json_number(row["ci_lo"])
            entry[f"{key}/ci95_hi"] = _json_number(row["ci_hi"])
        for row in mean_ci_frame(errors, n_resamples, seed, error_names=cols).to_dict("records"):
            entry = out[row["test_set"]]["methods"][row["method"]]
            entry[f"{row['error']}/mean/ci95_lo"] = _json_number(row["ci_lo"])
            entry[f"{row['error']}/mean/ci95_hi"] = _json_number(row["ci_hi"])
    if reference is not None:
        for method in [m for m in errors["method"].unique() if m != reference]:
            frame = bootstrap_frame(errors, method, reference, thresholds, n_resamples, seed, error_names=cols)
            for row in frame.to_dict("records"):
                entry = out[row["test_set"]]["vs_reference"].setdefault(method, {
                    "reference": reference, "n_faces": int(row["n_faces"]), "n_resamples": int(n_resamples),
                    "n_resampled_groups": int(row["n_groups"])})
                key = f"{row['error']}/auc@{threshold_key(row['threshold'])}"
                entry[f"{key}/diff"] = _json_number(row["diff"])
                entry[f"{key}/ci95_lo"] = _json_number(row["ci_lo"])
                entry[f"{key}/ci95_hi"] = _json_number(row["ci_hi"])
    return out


def ced_grid(max_threshold: float = max(THRESHOLDS), step: float = 0.0005) -> np.ndarray:
    """Evenly spaced CED thresholds ``0, step, ..., max_threshold`` (inclusive) for tables and DVC plots."""
    n = int(round(max_threshold / step))
    return np.linspace(0.0, n * step, n + 1)


def ced_tables(
    errors: pd.DataFrame,
    error: str = PRIMARY_ERROR,
    thresholds: np.ndarray | None = None,
    *,
    wide: bool = False,
) -> dict[str, pd.DataFrame]:
    """CED curves of every method, one table per test set, ready for ``reports/ced/<test_set>.csv``.

    Args:
        errors: tidy per-face frame (``test_set``, ``method``, ``face_id``, error columns).
        error: which error column the curve is of (its name goes into the column name in wide layout).
        thresholds: ``(T,)`` x values; default :func:`ced_grid` (0 to 0.10 by 0.0005).
        wide: False -> tidy columns ``threshold, method, fraction``; True -> ``threshold`` plus one column per
            method (DVC's built-in templates colour lines by file/column, so wide tables give one line per method
            with ``y: [<method>, ...]``).
    Returns:
        test set -> DataFrame.
    """
    _check_frame(errors)
    if error not in errors.columns:
        raise ValueError(f"errors frame has no column {error!r}; has {error_columns(errors)}")
    thresholds = ced_grid() if thresholds is None else np.asarray(thresholds, np.float64)
    tables = {}
    for test_set, group in errors.groupby("test_set", sort=False):
        parts = [
            pd.DataFrame({"threshold": thresholds, "method": method, "fraction": ced(g[error].to_numpy(), thresholds)})
            for method, g in group.groupby("method", sort=False)
        ]
        tidy = pd.concat(parts, ignore_index=True)
        if wide:
            tidy = tidy.pivot(index="threshold", columns="method", values="fraction").reset_index()
            tidy.columns.name = None
        tables[test_set] = tidy
    return tables


def regions_frame(per_method: Mapping[str, Mapping[str, np.ndarray]], test_set: str, face_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Tidy per-face region errors: ``{method: region_errors(...)}`` -> columns ``test_set, method, face_id, region, error``.

    ``face_ids`` (N,) labels the faces (default ``0..N-1``); the frame feeds :func:`flmlib.plots.region_figure`.
    """
    rows = []
    for method, regions in per_method.items():
        for region, values in regions.items():
            values = np.asarray(values, np.float64)
            ids = np.arange(values.size) if face_ids is None else np.asarray(face_ids)
            scored = ~np.isnan(values)  # NaN: the face has no annotated point in this region
            rows.append(pd.DataFrame({"test_set": test_set, "method": method, "face_id": ids[scored], "region": region,
                                      "error": values[scored]}))
    return pd.concat(rows, ignore_index=True)
