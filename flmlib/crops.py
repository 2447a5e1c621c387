"""Face boxes, context crops and the coordinate frames that connect them.

Conventions used across flmlib:

* **Image pixels**: 0-based, pixel centres at integers (a landmark at ``(0, 0)`` sits on the centre of the top-left
  pixel; the image spans ``[-0.5, W - 0.5]``).
* **Box**: ``(x0, y0, x1, y1)`` float, the box's *edges* in image pixels, so ``w = x1 - x0``. A dlib rectangle
  ``left..right`` (inclusive pixels) becomes ``(left - 0.5, top - 0.5, right + 0.5, bottom + 0.5)``.
* **Context crop**: a ``size x size`` image of the region ``context_factor`` times the box, centred on the box.
  With the defaults (factor 2, 96 px) the box itself is the central 48 x 48 pixels, and the margin lets
  rotation / scale / shift augmentation sample real pixels instead of padding.
* **Box units**: ``t = (x - x0) / w``, ``(y - y0) / h``: 0 and 1 are the box edges. This is what a model regresses;
  it does not depend on the crop's resolution.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def box_from_dlib(rect) -> np.ndarray:
    """A dlib ``rectangle`` as a ``(4,) float32`` box of pixel edges (see module docstring)."""
    return np.array([rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5], np.float32)


def box_to_dlib(box: np.ndarray):
    """Inverse of :func:`box_from_dlib` (rounded to whole pixels, as dlib needs)."""
    import dlib

    x0, y0, x1, y1 = (float(v) for v in box)
    return dlib.rectangle(int(round(x0 + 0.5)), int(round(y0 + 0.5)), int(round(x1 - 0.5)), int(round(y1 - 0.5)))


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Tight box around landmarks: ``(..., 68, 2)`` pixels -> ``(..., 4)`` float32 ``(x0, y0, x1, y1)``."""
    points = np.asarray(points, np.float32)
    return np.concatenate([points.min(axis=-2), points.max(axis=-2)], axis=-1)


def box_size(boxes: np.ndarray) -> np.ndarray:
    """``sqrt(w * h)`` of ``(..., 4)`` boxes, in pixels: the study's original normaliser."""
    boxes = np.asarray(boxes, np.float64)
    return np.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one ``(4,)`` box with ``(K, 4)`` boxes -> ``(K,)`` float in [0, 1]."""
    box = np.asarray(box, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def context_matrix(box: np.ndarray, size: int, context_factor: float) -> np.ndarray:
    """Affine ``(2, 3)`` float64 map from image pixels to context-crop pixels for one box.

    The context region (``context_factor`` times the box, same centre) is mapped onto the ``size x size`` crop,
    edge to edge, so the box's edges land at ``size / 2 * (1 -+ 1 / context_factor) - 0.5``.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if not (w > 0 and h > 0):
        raise ValueError(f"box {tuple(box)} has no area")
    sx, sy = size / (context_factor * w), size / (context_factor * h)
    left, top = (x0 + x1) / 2 - context_factor * w / 2, (y0 + y1) / 2 - context_factor * h / 2
    return np.array([[sx, 0.0, -sx * left - 0.5], [0.0, sy, -sy * top - 0.5]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine map."""
    full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map ``(..., 2)`` points with a ``(2, 3)`` affine; float64 in, float64 out (callers cast)."""
    points = np.asarray(points, np.float64)
    matrix = np.asarray(matrix, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_context(image: np.ndarray, box: np.ndarray, size: int, context_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut the context crop of one face.

    Args:
        image: ``(H, W, 3) uint8`` RGB (float32 works too: the tests use coordinate ramps).
        box: ``(4,)`` box edges in image pixels.
        size: side of the square crop, pixels.
        context_factor: the crop covers this many times the box's width and height, centred on the box.
    Returns:
        crop ``(size, size, 3) uint8`` and the ``(2, 3)`` image->crop matrix (:func:`context_matrix`), cut by
        :func:`crop_affine`.
    """
    matrix = context_matrix(box, size, context_factor)
    return crop_affine(image, matrix, size), matrix


def crop_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``(size, size, 3)`` crop that a ``(2, 3)`` image->crop affine ``matrix`` (a scaling, or a similarity that
    also rotates) makes of ``image``, anti-aliased. Where the crop reaches past the image border, edge pixels are
    replicated (no black fill).

    Only the part of the image the crop covers is read, so the cost does not grow with the photo's size. A
    downscale stronger than 2x is split in two. First comes a ``k x k`` box average with ``k`` a power of two:
    repeated 2x2 ``cv2.INTER_AREA`` halvings (each rounds to the image's dtype) on a grid aligned to image pixels
    ``0, k, 2k, ...``, which removes the detail that would alias. Then the bilinear warp, whose remaining scale along
    the most-shrunk direction is in ``[0.5, 1)`` (below 0.5 only when ``k`` is capped by a tiny image).
    """
    matrix = np.asarray(matrix, np.float64)
    linear = matrix[:, :2]
    h, w = image.shape[:2]
    axis_aligned = linear[0, 1] == 0 and linear[1, 0] == 0
    # the scale along the most-shrunk direction: the smaller axis scale, or the smallest singular value
    scale = min(linear[0, 0], linear[1, 1]) if axis_aligned else float(np.linalg.svd(linear, compute_uv=False).min())
    k = shrink_factor(scale, max_factor=min(h, w))
    # The crop's edges in image pixels (crop pixel edges -0.5 and size - 0.5 mapped back), widened by 2 shrunk
    # pixels for the bilinear footprint, snapped to the k-grid and clipped to the image rounded up to it.
    if axis_aligned:  # the context crops' path, kept exact: their crops do not move by a rounding
        (sx, _, tx), (_, sy, ty) = matrix
        left, top = (-0.5 - tx) / sx, (-0.5 - ty) / sy
        right, bottom = left + size / sx, top + size / sy
    else:
        edge = [-0.5, size - 0.5]
        corners = apply_affine(np.array([[x, y] for x in edge for y in edge]), invert_affine(matrix))
        (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
    grid_w, grid_h = -(-w // k) * k, -(-h // k) * k
    x0 = min(max(math.floor(left / k) * k - 2 * k, 0), grid_w - k)
    y0 = min(max(math.floor(top / k) * k - 2 * k, 0), grid_h - k)
    x1 = min(max(math.ceil(right / k) * k + 2 * k, x0 + k), grid_w)
    y1 = min(max(math.ceil(bottom / k) * k + 2 * k, y0 + k), grid_h)
    source = image[y0:y1, x0:x1]
    pad_x, pad_y = (x1 - x0) - source.shape[1], (y1 - y0) - source.shape[0]
    if pad_x or pad_y:  # the last grid cell sticks out of the image: fill it with the image's edge pixels
        source = cv2.copyMakeBorder(source, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
    for _ in range(k.bit_length() - 1):  # log2(k) halvings: OpenCV's fast path for an exact 2x2 mean
        source = cv2.resize(source, (source.shape[1] // 2, source.shape[0] // 2), interpolation=cv2.INTER_AREA)
    # Source pixel s covers image pixels x0 + k*s .. x0 + k*s + k - 1, centred on x = k * (s + 1/2) - 1/2 + x0.
    origin = np.array([k * 0.5 - 0.5 + x0, k * 0.5 - 0.5 + y0])
    warp = np.concatenate([linear * k, (linear @ origin + matrix[:, 2])[:, None]], axis=1)
    return cv2.warpAffine(source, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def shrink_factor(scale: float, max_factor: int) -> int:
    """Power-of-two pre-shrink ``k >= 1`` for a resample by ``scale`` (output px per input px): the smallest ``k``
    with ``scale * k >= 0.5``, so bilinear sampling afterwards never skips source pixels; at most ``max_factor``."""
    k = 1
    while scale * k < 0.5 and 2 * k <= max_factor:
        k *= 2
    return k


def crop_to_box_units(points: np.ndarray, size: int, context_factor: float) -> np.ndarray:
    """Context-crop pixels ``(..., 2)`` -> box units (0 and 1 at the box edges)."""
    inner = size / context_factor
    edge = (size - inner) / 2 - 0.5
    return (np.asarray(points, np.float64) - edge) / inner


def box_units_to_image(units: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Box units ``(N, 68, 2)`` with boxes ``(N, 4)`` -> image pixels ``(N, 68, 2)`` float64."""
    boxes = np.asarray(boxes, np.float64)[:, None, :]
    units = np.asarray(units, np.float64)
    return boxes[..., :2] + units * (boxes[..., 2:] - boxes[..., :2])


def image_to_box_units(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Image pixels ``(N, 68, 2)`` with boxes ``(N, 4)`` -> box units ``(N, 68, 2)`` float64."""
    boxes = np.asarray(boxes, np.float64)[:, None, :]
    return (np.asarray(points, np.float64) - boxes[..., :2]) / (boxes[..., 2:] - boxes[..., :2])
