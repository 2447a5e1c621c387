"""Many faces' crops at once: the geometry of :func:`flmlib.crops.crop_affine`, computed for a whole batch.

:func:`flmlib.crops.crop_affine` cuts one crop: it works out, with a dozen small numpy calls, the power-of-two
pre-shrink ``k``, the image region the crop reads (on the ``k``-grid) and the warp that finishes the crop; then it
slices, halves and warps with OpenCV. For a landmarker's batch that per-face arithmetic costs as much as the OpenCV
calls. :func:`plan_crops` does it for every face in a few array operations, and :func:`cut_planned` runs only the
OpenCV part, so each face costs its pixels. The two give the **same pixels** as ``crop_affine`` for every finite,
invertible map (the tests compare them exactly); a map that is not raises ``ValueError`` naming its face, where
``crop_affine`` fails in its integer arithmetic. ``crop_affine`` stays the reference that training data were cut with.

Frames as in :mod:`flmlib.crops`: image pixels 0-based with pixel centres at integers; a ``(2, 3)`` matrix maps image
pixels to crop pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropPlans:
    """Where each of ``N`` crops reads the image and how it resamples it.

    Attributes:
        shrink: ``(N,) int64`` power-of-two pre-shrink ``k`` (a ``k x k`` box average before the warp).
        regions: ``(N, 4) int64`` ``(x0, y0, x1, y1)`` image region read, on the ``k``-grid (may run past the image
            by less than ``k`` on the right and bottom: those pixels repeat the edge).
        warps: ``(N, 2, 3) float64`` shrunk-region pixels -> crop pixels.
        size: the crops' side, pixels.
    """

    shrink: np.ndarray
    regions: np.ndarray
    warps: np.ndarray
    size: int


def context_matrices(boxes: np.ndarray, size: int, context_factor: float) -> np.ndarray:
    """``(N, 4)`` boxes -> ``(N, 2, 3) float64`` image -> context-crop maps, as :func:`flmlib.crops.context_matrix`
    makes one by one (same arithmetic, so the same bits). Raises ``ValueError`` naming a box with no area
    (its index and edges)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = boxes.T
    w, h = x1 - x0, y1 - y0
    bad = ~((w > 0) & (h > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"box {i} {tuple(float(v) for v in boxes[i])} has no area")
    sx, sy = size / (context_factor * w), size / (context_factor * h)
    left, top = (x0 + x1) / 2 - context_factor * w / 2, (y0 + y1) / 2 - context_factor * h / 2
    out = np.zeros((len(boxes), 2, 3))
    out[:, 0, 0], out[:, 0, 2] = sx, -sx * left - 0.5
    out[:, 1, 1], out[:, 1, 2] = sy, -sy * top - 0.5
    return out


def check_crop_matrices(matrices: np.ndarray) -> np.ndarray:
    """``(N, 2, 3)`` image -> crop maps as float64, or ``ValueError`` naming the first face whose map is not finite or
    not invertible (no crop can be cut through it)."""
    matrices = np.asarray(matrices, np.float64).reshape(-1, 2, 3)
    det = matrices[:, 0, 0] * matrices[:, 1, 1] - matrices[:, 0, 1] * matrices[:, 1, 0]
    bad = ~np.isfinite(matrices).all(axis=(1, 2)) | ~np.isfinite(det) | (det == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"face {i}: its image -> crop map {matrices[i].tolist()} is not finite or not invertible")
    return matrices


def plan_crops(image_shapes: np.ndarray, matrices: np.ndarray, size: int) -> CropPlans:
    """The plans of ``N`` crops (module docstring).

    Args:
        image_shapes: ``(N, 2)`` ``(height, width)`` of each face's image, pixels.
        matrices: ``(N, 2, 3)`` image -> crop maps (scalings or similarities).
        size: crop side, pixels.
    Raises:
        ValueError: a map that is not finite or not invertible (:func:`check_crop_matrices`), or counts that differ.
    """
    matrices = check_crop_matrices(matrices)
    shapes = np.asarray(image_shapes, np.int64).reshape(-1, 2)
    if len(shapes) != len(matrices):
        raise ValueError(f"{len(shapes)} image shapes but {len(matrices)} matrices")
    n = len(matrices)
    linear = matrices[:, :, :2]
    h, w = shapes[:, 0], shapes[:, 1]
    axis_aligned = (linear[:, 0, 1] == 0) & (linear[:, 1, 0] == 0)
    # the scale along the most-shrunk direction: the smaller axis scale, or the smallest singular value
    scale = np.minimum(linear[:, 0, 0], linear[:, 1, 1])
    if (~axis_aligned).any():
        scale[~axis_aligned] = np.linalg.svd(linear[~axis_aligned], compute_uv=False).min(axis=1)
    # k: the smallest power of two with scale * k >= 0.5, at most min(h, w) (flmlib.crops.shrink_factor)
    shrink = np.ones(n, np.int64)
    max_factor = np.minimum(h, w)
    grow = (scale * shrink < 0.5) & (2 * shrink <= max_factor)
    while grow.any():
        shrink[grow] *= 2
        grow = (scale * shrink < 0.5) & (2 * shrink <= max_factor)
    # the crop's edges in image pixels
    left, top = np.empty(n), np.empty(n)
    right, bottom = np.empty(n), np.empty(n)
    a = axis_aligned
    sx, sy, tx, ty = matrices[a, 0, 0], matrices[a, 1, 1], matrices[a, 0, 2], matrices[a, 1, 2]
    left[a], top[a] = (-0.5 - tx) / sx, (-0.5 - ty) / sy
    right[a], bottom[a] = left[a] + size / sx, top[a] + size / sy
    if (~a).any():
        full = np.concatenate([matrices[~a], np.broadcast_to([0.0, 0.0, 1.0], ((~a).sum(), 1, 3))], axis=1)
        inverse = np.linalg.inv(full)[:, :2]
        edge = [-0.5, size - 0.5]
        corners = np.array([[x, y] for x in edge for y in edge])
        # stacked matmul: bit for bit the per-face ``points @ linear.T + shift`` of flmlib.crops.apply_affine
        mapped = np.matmul(corners[None], np.transpose(inverse[:, :, :2], (0, 2, 1))) + inverse[:, None, :, 2]
        left[~a], top[~a] = mapped[:, :, 0].min(axis=1), mapped[:, :, 1].min(axis=1)
        right[~a], bottom[~a] = mapped[:, :, 0].max(axis=1), mapped[:, :, 1].max(axis=1)
    # widened by 2 shrunk pixels for the bilinear footprint, snapped to the k-grid, clipped to the image rounded up
    k = shrink
    grid_w, grid_h = -(-w // k) * k, -(-h // k) * k

    def in_cells(edge: np.ndarray, grid: np.ndarray) -> np.ndarray:
        # edge / k, held to [-4, grid / k + 4]: the clamps below give the same region for any edge beyond that, and
        # the cast to int64 cannot overflow for a crop placed absurdly far away (crop_affine's Python ints cannot)
        return np.clip(edge / k, -4.0, grid / k + 4.0)

    x0 = np.minimum(np.maximum(np.floor(in_cells(left, grid_w)).astype(np.int64) * k - 2 * k, 0), grid_w - k)
    y0 = np.minimum(np.maximum(np.floor(in_cells(top, grid_h)).astype(np.int64) * k - 2 * k, 0), grid_h - k)
    x1 = np.minimum(np.maximum(np.ceil(in_cells(right, grid_w)).astype(np.int64) * k + 2 * k, x0 + k), grid_w)
    y1 = np.minimum(np.maximum(np.ceil(in_cells(bottom, grid_h)).astype(np.int64) * k + 2 * k, y0 + k), grid_h)
    # Shrunk pixel s covers image pixels x0 + k*s .. x0 + k*s + k - 1, centred on x = k * (s + 1/2) - 1/2 + x0.
    origin = np.stack([k * 0.5 - 0.5 + x0, k * 0.5 - 0.5 + y0], axis=1)
    shift = np.matmul(linear, origin[:, :, None])[:, :, 0] + matrices[:, :, 2]  # bit for bit crop_affine's linear @ origin
    warps = np.concatenate([linear * k[:, None, None], shift[:, :, None]], axis=2)
    return CropPlans(shrink, np.stack([x0, y0, x1, y1], axis=1), warps, int(size))


def cut_planned(image: np.ndarray, plans: CropPlans, i: int) -> np.ndarray:
    """Crop ``i`` of ``plans`` from its ``(H, W, C)`` image -> ``(size, size, C)``, the image's dtype."""
    k = int(plans.shrink[i])
    x0, y0, x1, y1 = (int(v) for v in plans.regions[i])
    source = image[y0:y1, x0:x1]
    pad_x, pad_y = (x1 - x0) - source.shape[1], (y1 - y0) - source.shape[0]
    if pad_x or pad_y:  # the last grid cell sticks out of the image: fill it with the image's edge pixels
        source = cv2.copyMakeBorder(source, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
    for _ in range(k.bit_length() - 1):  # log2(k) halvings: OpenCV's fast path for an exact 2x2 mean
        source = cv2.resize(source, (source.shape[1] // 2, source.shape[0] // 2), interpolation=cv2.INTER_AREA)
    size = plans.size
    return cv2.warpAffine(source, plans.warps[i], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
