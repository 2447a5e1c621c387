"""Similarity alignment of faces for a second landmark pass.

A first landmarker's points give, for each face, the similarity transform (rotation, uniform scale, translation)
that maps its inner points (brows, nose, eyes, mouth: 17-67; the jaw is the least reliable region) onto a mean
shape by least squares. A second network, trained on faces aligned the same way from their annotated points, then
sees every face upright, at one scale and position, and only has to correct the remaining error.

Frames: image pixels are 0-based with pixel centres at integers (:mod:`flmlib.crops`). An aligned crop is a
``size x size`` context crop whose *mean-shape box* (the box the mean shape is expressed in) sits where a context
crop puts its face box: edges at ``size / 2 * (1 -+ 1 / context_factor) - 0.5``. So an aligned crop feeds a network
through the same crop geometry as a detected face's context crop, and box units mean the same in both.
"""
from __future__ import annotations

import numpy as np

from flmlib.crops import crop_affine, image_to_box_units
from flmlib.landmarks68 import N_POINTS, REGIONS

# Points the similarity is fitted on: every region but the jaw (68-point iBUG numbering).
INNER_POINTS = np.setdiff1d(np.arange(N_POINTS), REGIONS["jaw"])


def mean_shape(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean face in box units: ``(N, 68, 2)`` image pixels and their ``(N, 4)`` boxes -> ``(68, 2) float64``.

    The boxes (the detector's, as at test time) set the scale and position an aligned face gets.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 3 or points.shape[1:] != (N_POINTS, 2) or len(points) == 0:
        raise ValueError(f"points must be (N >= 1, {N_POINTS}, 2), got {points.shape}")
    units = image_to_box_units(points, boxes)
    if not np.isfinite(units).all():
        raise ValueError("points or boxes hold NaN/inf, or a box has no area")
    return units.mean(axis=0)


def box_in_crop(size: int, context_factor: float) -> np.ndarray:
    """``(4,) float64`` edges of the mean-shape box in an aligned crop's pixels (as a context crop's face box)."""
    inner = size / context_factor
    edge = (size - inner) / 2 - 0.5
    return np.array([edge, edge, edge + inner, edge + inner])


def similarity_matrices(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms mapping each face's points onto ``targets`` (Umeyama, no reflection).

    Args:
        points: ``(N, K, 2)`` source points (image pixels).
        targets: ``(K, 2)`` destination points, the same for every face.
    Returns:
        ``(N, 2, 3) float64`` matrices ``[[a, -b, tx], [b, a, ty]]`` (source -> destination).
    Raises:
        ValueError: a face whose points are not finite or all coincide (no scale to fit); the message names it.
    """
    src = np.asarray(points, np.float64)
    dst = np.asarray(targets, np.float64)
    if src.ndim != 3 or src.shape[1:] != dst.shape or dst.shape[-1] != 2:
        raise ValueError(f"points {src.shape} and targets {dst.shape} must be (N, K, 2) and (K, 2)")
    src_mean, dst_mean = src.mean(axis=1), dst.mean(axis=0)
    s, d = src - src_mean[:, None], dst - dst_mean
    # In complex numbers the fit is d ~ z * s with z = a + ib: z = sum(conj(s) d) / sum(|s|^2).
    s_c, d_c = s[..., 0] + 1j * s[..., 1], d[:, 0] + 1j * d[:, 1]
    spread = (np.abs(s_c) ** 2).sum(axis=1)
    bad = ~np.isfinite(spread) | (spread <= 1e-12)
    if bad.any():
        raise ValueError(f"face index {int(np.flatnonzero(bad)[0])} (of {len(src)}): its points are not finite or "
                         "all coincide, so no similarity can be fitted")
    z = (np.conj(s_c) * d_c).sum(axis=1) / spread
    a, b = z.real, z.imag
    linear = np.stack([np.stack([a, -b], axis=-1), np.stack([b, a], axis=-1)], axis=1)
    shift = dst_mean - np.einsum("nij,nj->ni", linear, src_mean)
    return np.concatenate([linear, shift[:, :, None]], axis=2)


def alignment_matrices(points: np.ndarray, mean: np.ndarray, size: int, context_factor: float) -> np.ndarray:
    """``(N, 2, 3) float64`` image -> aligned-crop matrices for ``(N, 68, 2)`` image points.

    Each face's inner points are fitted onto ``mean`` (box units, :func:`mean_shape`) placed in the crop's
    mean-shape box (:func:`box_in_crop`).
    """
    box = box_in_crop(size, context_factor)
    targets = box[:2] + np.asarray(mean, np.float64) * (box[2:] - box[:2])
    return similarity_matrices(np.asarray(points)[:, INNER_POINTS], targets[INNER_POINTS])


def invert_matrices(matrices: np.ndarray) -> np.ndarray:
    """Inverses of ``(N, 2, 3)`` affine maps, ``(N, 2, 3) float64``."""
    matrices = np.asarray(matrices, np.float64)
    full = np.concatenate([matrices, np.broadcast_to([0.0, 0.0, 1.0], (len(matrices), 1, 3))], axis=1)
    return np.linalg.inv(full)[:, :2]


def map_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """``(N, K, 2)`` points through each face's ``(N, 2, 3)`` affine -> ``(N, K, 2) float64``."""
    matrices = np.asarray(matrices, np.float64)
    return np.einsum("nij,nkj->nki", matrices[:, :, :2], np.asarray(points, np.float64)) + matrices[:, None, :, 2]


def aligned_crops(images, matrices: np.ndarray, size: int) -> np.ndarray:
    """``(N, size, size, 3) uint8`` anti-aliased crops (:func:`flmlib.crops.crop_affine`), one per face.

    Args:
        images: one ``(H, W, 3) uint8`` RGB image per face (the same array may repeat for faces of one image).
        matrices: ``(N, 2, 3)`` image -> crop maps (:func:`alignment_matrices`).
    """
    if len(images) != len(matrices):
        raise ValueError(f"{len(images)} images but {len(matrices)} matrices")
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, (image, matrix) in enumerate(zip(images, matrices)):
        out[i] = crop_affine(image, matrix, size)
    return out
