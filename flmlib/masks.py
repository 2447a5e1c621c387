"""Face filters ("flm mask"): a small library of masks drawn by code and warped onto 68 predicted landmarks.

Licence: every mask of this library (the drawing code in this module and the RGBA images it renders) was made by
this project for this project and is under the project's own licence, MIT, like the rest of flmlib. No third-party
artwork, photograph or font is used.

    >>> from flmlib.masks import apply_mask, list_masks
    >>> list_masks()                                   # [(name, one-line description), ...]
    >>> out = apply_mask(image, face.points, "sunglasses")   # image (H, W, 3) uint8 RGB -> new (H, W, 3) uint8

How a mask is made and placed:

* **Canvas and template.** Every mask is drawn on the same RGBA canvas (:data:`CANVAS_SIZE`), in which a canonical
  mean face, :data:`TEMPLATE` (the 68 iBUG points of the HELEN training faces, similarity-aligned, averaged and made
  left-right symmetric), sits with its outer eye corners (points 36 and 45) :data:`TEMPLATE_SCALE` pixels apart.
  Drawing coordinates are *template units*: x to the image right, y down, origin midway between the outer eye
  corners, 1 unit = the outer-eye-corner distance.
* **Anchors.** A mask names the points its warp follows: plain landmarks (0-based iBUG indices; the sunglasses
  follow the eye corners but not the eyelids, so they do not squash when the eyes blink) and *frame points*: a
  template position carried by a nearby landmark and the face's own axes (x = ``p45 - p36``, y = ``p30 - p27``).
  Frame points reach where no landmark is (above the brows, beyond the jaw) so that a mask can be drawn there; each
  is an affine combination of landmarks, so ``Mask.weights`` ``(K, 68)`` (rows summing to 1) gives all K anchors
  at once: ``anchors = weights @ template`` in the mask image and ``weights @ points`` on a face.
* **Triangulation.** The anchors are Delaunay-triangulated once per mask, in the mask image (``cv2.Subdiv2D``).
* **Warp.** Each triangle is mapped affinely onto the same triangle of the face's anchors: every output pixel is
  labelled with the triangle that covers it (one ``cv2.fillConvexPoly`` per triangle, shared edges included, so
  there are no cracks), its source position in the mask comes from that triangle's inverse affine map, and one
  ``cv2.remap`` samples the (premultiplied) mask there. Only the anchors' bounding box clipped to the image is
  processed, so faces cut by the image border work; triangles of (near) zero area on the face are skipped. For a
  small face the mask is sampled from a Gaussian pyramid level, so thin strokes do not alias.
* **Blend.** The warped alpha ``a`` is feathered: ``min(a, GaussianBlur(a))`` fades the mask's edge inwards over
  about 2 sigma (sigma = ``feather`` x the face's outer-eye-corner distance) and never spreads it outwards, so no
  dark halo appears and pixels the mask does not cover stay exactly as they were.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

N_POINTS = 68

#: ``(68, 2) float64``: the canonical mean face in template units (x right, y down; outer eye corners 36 and 45 at
#: (-0.5, 0) and (0.5, 0)). Mean of the 870 HELEN training faces of 300-W after similarity (Procrustes) alignment,
#: averaged with its mirror image so that it is exactly left-right symmetric.
TEMPLATE = np.array([
    [-0.808, 0.026], [-0.799, 0.237], [-0.774, 0.447], [-0.728, 0.650], [-0.643, 0.838], [-0.513, 1.000],
    [-0.356, 1.133], [-0.187, 1.240], [0.000, 1.270], [0.187, 1.240], [0.356, 1.133], [0.513, 1.000],
    [0.643, 0.838], [0.728, 0.650], [0.774, 0.447], [0.799, 0.237], [0.808, 0.026],  # jaw 0-16
    [-0.668, -0.137], [-0.569, -0.233], [-0.425, -0.266], [-0.274, -0.249], [-0.132, -0.198],  # right brow 17-21
    [0.132, -0.198], [0.274, -0.249], [0.425, -0.266], [0.569, -0.233], [0.668, -0.137],  # left brow 22-26
    [0.000, -0.023], [0.000, 0.115], [0.000, 0.249], [0.000, 0.389],  # nose bridge 27-30
    [-0.167, 0.489], [-0.086, 0.515], [0.000, 0.538], [0.086, 0.515], [0.167, 0.489],  # lower nose 31-35
    [-0.500, 0.000], [-0.411, -0.052], [-0.302, -0.051], [-0.210, 0.021], [-0.310, 0.039], [-0.418, 0.038],
    [0.210, 0.021], [0.302, -0.051], [0.411, -0.052], [0.500, 0.000], [0.418, 0.038], [0.310, 0.039],  # eyes
    [-0.312, 0.740], [-0.199, 0.694], [-0.079, 0.667], [0.000, 0.688], [0.079, 0.667], [0.199, 0.694],
    [0.312, 0.740], [0.201, 0.852], [0.085, 0.902], [0.000, 0.911], [-0.085, 0.902], [-0.201, 0.852],  # outer lip
    [-0.266, 0.746], [-0.080, 0.734], [0.000, 0.744], [0.080, 0.734], [0.266, 0.746], [0.081, 0.798],
    [0.000, 0.808], [-0.081, 0.798],  # inner lip 60-67
], dtype=np.float64)
TEMPLATE.flags.writeable = False

#: Mask image size ``(width, height)`` in pixels, and where the template sits in it.
CANVAS_SIZE = (576, 660)
#: Pixels per template unit (the template's outer-eye-corner distance in the mask image).
TEMPLATE_SCALE = 260.0
#: Mask-image pixel of the template origin (midway between the outer eye corners).
TEMPLATE_ORIGIN = (288.0, 262.0)
#: Masks are drawn at this many times the canvas size, then area-averaged down (anti-aliasing).
SUPERSAMPLE = 2
#: Default feather: Gaussian sigma of the alpha blur, as a fraction of the face's outer-eye-corner distance.
DEFAULT_FEATHER = 0.02
#: Largest feather sigma, as a fraction of the image diagonal.
MAX_FEATHER_FRACTION = 0.05
#: Gaussian pyramid levels kept per mask (level L is 2**-L of the mask size; faces down to ~1/32 of it).
PYRAMID_LEVELS = 6
#: Triangles with a vertex this far (pixels) from the processed region are skipped: such points are nonsense, and
#: the fixed-point polygon fill would overflow.
FAR_PX = 1 << 20

# The face's own axes for frame points: landmark pairs whose difference is one template unit along x, and along y
# (scaled by the template's nose length).
_X_AXIS = (36, 45)
_Y_AXIS = (27, 30)

Anchor = int | tuple[int, tuple[float, float]]


def template_pixels() -> np.ndarray:
    """``(68, 2) float64``: :data:`TEMPLATE` in mask-image pixels (0-based, pixel centres at integers)."""
    return np.asarray(TEMPLATE_ORIGIN) + TEMPLATE_SCALE * TEMPLATE


def anchor_weights(anchors: Sequence[Anchor]) -> np.ndarray:
    """``(K, 68) float64`` affine weights of anchor specs: ``i`` is landmark ``i``; ``(i, (x, y))`` is the point at
    template position ``(x, y)`` (template units) carried by landmark ``i`` and the face's axes:
    ``p_i + (x - X_i) * (p45 - p36) / |T45 - T36| + (y - Y_i) * (p30 - p27) / |T30 - T27|``. Rows sum to 1,
    so the anchors move with any affine map of the face."""
    x_len = float(np.linalg.norm(TEMPLATE[_X_AXIS[1]] - TEMPLATE[_X_AXIS[0]]))
    y_len = float(np.linalg.norm(TEMPLATE[_Y_AXIS[1]] - TEMPLATE[_Y_AXIS[0]]))
    rows = np.zeros((len(anchors), N_POINTS))
    for k, spec in enumerate(anchors):
        base, target = (spec, None) if isinstance(spec, (int, np.integer)) else spec
        if not 0 <= int(base) < N_POINTS:
            raise ValueError(f"anchor {k}: landmark index {base} is not in 0..{N_POINTS - 1}")
        rows[k, int(base)] = 1.0
        if target is not None:
            dx, dy = np.asarray(target, float) - TEMPLATE[int(base)]
            rows[k, _X_AXIS[1]] += dx / x_len
            rows[k, _X_AXIS[0]] -= dx / x_len
            rows[k, _Y_AXIS[1]] += dy / y_len
            rows[k, _Y_AXIS[0]] -= dy / y_len
    return rows


def delaunay(points: np.ndarray) -> np.ndarray:
    """``(T, 3) int32`` Delaunay triangles (indices into ``points`` ``(K, 2)``), by ``cv2.Subdiv2D``; triangles
    with a vertex of Subdiv2D's outer bounding triangle, or of (near) zero area, are dropped."""
    points = np.asarray(points, np.float64)
    if len(np.unique(np.round(points, 3), axis=0)) != len(points):
        raise ValueError("anchors must be distinct points")
    x0, y0 = np.floor(points.min(axis=0)) - 1
    x1, y1 = np.ceil(points.max(axis=0)) + 2
    subdiv = cv2.Subdiv2D((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
    for x, y in points:
        subdiv.insert((float(x), float(y)))
    triangles = []
    for tri in subdiv.getTriangleList().reshape(-1, 3, 2):
        dist = np.linalg.norm(points[None, :, :] - tri[:, None, :].astype(np.float64), axis=2)  # (3, K)
        idx = dist.argmin(axis=1)
        if (dist[np.arange(3), idx] > 1e-2).any():  # a vertex of Subdiv2D's virtual outer triangle
            continue
        a, b, c = points[idx]
        if abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])) < 1e-6:
            continue
        triangles.append(idx)
    return np.asarray(triangles, np.int32).reshape(-1, 3)


@dataclass(frozen=True, eq=False)
class Mask:
    """One mask of the library.

    Attributes:
        name, description: library key and one-line description.
        image: ``(h, w, 4) uint8`` RGBA, straight (not premultiplied) alpha; 0 = transparent.
        weights: ``(K, 68) float64`` affine weights of the K anchors over the 68 landmarks (rows sum to 1; a plain
            landmark anchor is a one-hot row), see :func:`anchor_weights`.
        anchors: ``(K, 2) float64`` the anchors in ``image`` pixels (0-based, pixel centres at integers).
        triangles: ``(T, 3) int32`` Delaunay triangles of ``anchors`` (indices into it).
        template: ``(68, 2) float64`` the 68 points of the face the mask was drawn on, ``image`` pixels: warping
            the mask onto these points reproduces ``image``.
    """

    name: str
    description: str
    image: np.ndarray
    weights: np.ndarray
    anchors: np.ndarray
    triangles: np.ndarray
    template: np.ndarray
    _pyramid: list = field(default_factory=list, repr=False, compare=False)

    @property
    def landmarks(self) -> np.ndarray:
        """``(K,) int64``: the landmark each anchor is, or -1 for a frame point (not a landmark itself)."""
        one_hot = (np.isclose(self.weights, 1.0) & (np.count_nonzero(self.weights, axis=1) == 1)[:, None])
        return np.where(one_hot.any(axis=1), one_hot.argmax(axis=1), -1)

    def level(self, level: int) -> np.ndarray:
        """``(h_L, w_L, 4) float32`` premultiplied RGBA in 0..1 at Gaussian pyramid level ``level`` (``cv2.pyrDown``:
        pixel ``x`` of level L sits at pixel ``x * 2**L`` of level 0). Computed once, then cached."""
        if not self._pyramid:
            rgba = self.image.astype(np.float32) / 255.0
            rgba[..., :3] *= rgba[..., 3:]  # premultiply: filtering and interpolation must not bleed colour
            self._pyramid.append(rgba)
        while len(self._pyramid) <= level:
            self._pyramid.append(cv2.pyrDown(self._pyramid[-1]))
        return self._pyramid[level]


def make_mask(name: str, description: str, image: np.ndarray, anchors: Sequence[Anchor]) -> Mask:
    """A :class:`Mask` from an ``(h, w, 4) uint8`` RGBA image drawn on the template canvas (the template face at
    :func:`template_pixels`) and its anchor specs (see :func:`anchor_weights`). Triangulates the anchors."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 4:
        raise ValueError(f"mask image must be (h, w, 4) uint8 RGBA, got {image.shape} {image.dtype}")
    weights = anchor_weights(anchors)
    template = template_pixels()
    points = weights @ template
    if len(points) < 3:
        raise ValueError(f"mask {name!r}: at least 3 anchors are needed, got {len(points)}")
    triangles = delaunay(points)
    if not len(triangles):
        raise ValueError(f"mask {name!r}: the anchors are collinear, no triangle to warp")
    for array in (image, weights, points, triangles, template):
        array.flags.writeable = False
    return Mask(name, description, image, weights, points, triangles, template)


# ------------------------------------------------------------------------------------------------------ warping


def _check_inputs(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (N_POINTS, 2):
        raise ValueError(f"points must be ({N_POINTS}, 2) image pixels, got shape {points.shape}")
    return image, points


def _spread(points: np.ndarray) -> float:
    """RMS distance of ``(K, 2)`` points from their centroid."""
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def _warp_into(out: np.ndarray, points: np.ndarray, mask: Mask, feather: float) -> None:
    """Blend ``mask`` warped onto ``points`` ``(68, 2)`` (finite) into ``out`` ``(H, W, 3) uint8`` in place."""
    height, width = out.shape[:2]
    dst = mask.weights @ points  # (K, 2) anchors on the face, image pixels
    # Size of the face relative to the mask's template: picks the pyramid level and the feather width.
    scale = _spread(dst) / max(_spread(mask.anchors), 1e-9)
    if not math.isfinite(scale) or scale < 1e-6:
        return  # all anchors on one point: nothing to draw
    level = min(PYRAMID_LEVELS - 1, max(0, int(math.floor(math.log2(1.0 / scale))))) if scale < 1 else 0
    source = mask.level(level)
    src = mask.anchors / (2 ** level)  # pyrDown keeps pixel x of level L at pixel x * 2**L of level 0
    sigma = max(0.0, float(feather)) * TEMPLATE_SCALE * scale
    # A face many times the image (or absurd points) would ask for a huge, slow blur that changes nothing visible.
    sigma = min(sigma, MAX_FEATHER_FRACTION * math.hypot(width, height))

    # Processed region: the anchors' bounding box plus the blur's reach, clipped to the image.
    pad = int(math.ceil(3 * sigma)) + 2
    lo = np.floor(dst.min(axis=0)) - pad
    hi = np.ceil(dst.max(axis=0)) + pad + 1
    x0, y0 = int(max(0, min(lo[0], width))), int(max(0, min(lo[1], height)))
    x1, y1 = int(max(0, min(hi[0], width))), int(max(0, min(hi[1], height)))
    if x1 <= x0 or y1 <= y0:
        return  # the face is entirely outside the image
    roi_w, roi_h = x1 - x0, y1 - y0

    # Label every region pixel with the triangle covering it (-1: none), and keep each triangle's inverse affine
    # map (region pixel -> source pixel).
    labels = np.full((roi_h, roi_w), -1, np.int32)
    inverse = np.zeros((len(mask.triangles), 2, 3))
    local = dst - (x0, y0)
    for t, tri in enumerate(mask.triangles):
        d, s = local[tri], src[tri]
        area2 = (d[1, 0] - d[0, 0]) * (d[2, 1] - d[0, 1]) - (d[1, 1] - d[0, 1]) * (d[2, 0] - d[0, 0])
        if abs(area2) < 1e-3:  # degenerate on this face (e.g. a turned face's hidden side): nothing to map
            continue
        if (np.abs(d) > FAR_PX).any():
            continue
        if d[:, 0].max() < -1 or d[:, 1].max() < -1 or d[:, 0].min() > roi_w or d[:, 1].min() > roi_h:
            continue  # outside the region (clipped away by the image border)
        inverse[t] = np.linalg.solve(np.column_stack([d, np.ones(3)]), s).T  # [x, y, 1] -> source (x, y)
        cv2.fillConvexPoly(labels, np.round(d * 16).astype(np.int32), int(t), cv2.LINE_8, 4)
    ys, xs = np.nonzero(labels >= 0)
    if not len(xs):
        return
    t = labels[ys, xs]
    map_x = np.full((roi_h, roi_w), -10.0, np.float32)  # outside every triangle: samples the transparent border
    map_y = np.full((roi_h, roi_w), -10.0, np.float32)
    map_x[ys, xs] = inverse[t, 0, 0] * xs + inverse[t, 0, 1] * ys + inverse[t, 0, 2]
    map_y[ys, xs] = inverse[t, 1, 0] * xs + inverse[t, 1, 1] * ys + inverse[t, 1, 2]
    warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    alpha = np.clip(warped[..., 3], 0.0, 1.0)
    if sigma > 0:
        # Replicate at the region's edges: where the region is cut by the image border the mask goes on beyond it,
        # so it must not fade there; elsewhere the padding holds zeros anyway.
        blurred = cv2.GaussianBlur(alpha, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        feathered = np.minimum(alpha, blurred)  # fade inwards only: never paint where the mask has no colour
    else:
        feathered = alpha
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(alpha > 1e-6, feathered / alpha, 0.0).astype(np.float32)
    colour = warped[..., :3] * (255.0 * gain)[..., None]  # premultiplied colour, rescaled to the feathered alpha
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = region * (1.0 - feathered)[..., None] + colour
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def apply_mask(image: np.ndarray, points: np.ndarray, name: str | Mask, feather: float = DEFAULT_FEATHER
               ) -> np.ndarray:
    """Put mask ``name`` on one face.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        points: ``(68, 2)`` float, the face's iBUG landmarks in 0-based image pixels (pixel centres at integers);
            they may lie outside the image. Any NaN (a face the landmarker could not place): the image is returned
            unchanged (as a copy).
        name: a key of :data:`MASKS` (see :func:`list_masks`), or a :class:`Mask`.
        feather: Gaussian sigma of the alpha blur, as a fraction of the face's outer-eye-corner distance (0: hard
            edge).

    Returns:
        A new ``(H, W, 3) uint8`` RGB image; pixels the mask does not cover are unchanged.

    Raises:
        ValueError: unknown mask name (the message lists the known ones), or wrong image / points shape.
    """
    mask = name if isinstance(name, Mask) else get_mask(name)
    image, points = _check_inputs(image, points)
    out = image.copy()
    if np.isfinite(points).all():
        _warp_into(out, points, mask, feather)
    return out


def apply_masks(image: np.ndarray, points_list: Sequence[np.ndarray], name: str | Mask,
                feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """:func:`apply_mask` on several faces of one image, in order (a later face is drawn over an earlier one);
    ``points_list`` holds one ``(68, 2)`` array per face (faces with NaN points are left as they are)."""
    mask = name if isinstance(name, Mask) else get_mask(name)
    out, _ = _check_inputs(image, np.zeros((N_POINTS, 2)))
    out = out.copy()
    for points in points_list:
        _, points = _check_inputs(out, points)
        if np.isfinite(points).all():
            _warp_into(out, points, mask, feather)
    return out


# ------------------------------------------------------------------------------------------------------ drawing


def _catmull_rom(points: Sequence[Sequence[float]], closed: bool = True, samples: int = 16) -> np.ndarray:
    """Dense ``(N, 2)`` polyline of the Catmull-Rom spline through ``points`` (a smooth curve through hand-placed
    control points)."""
    p = np.asarray(points, np.float64)
    ext = np.vstack([p[-1:], p, p[:2]]) if closed else np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    segments = len(p) if closed else len(p) - 1
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    out = []
    for i in range(segments):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    if not closed:
        out.append(p[-1:])
    return np.vstack(out)


def _mirror(points: Sequence[Sequence[float]]) -> np.ndarray:
    """Left-right mirror image (template x -> -x) of ``(N, 2)`` points, order reversed (a closed outline keeps its
    orientation when the two halves are joined)."""
    return (np.asarray(points, np.float64) * (-1, 1))[::-1]


Colour = tuple[float, float, float] | Callable[[np.ndarray, np.ndarray], np.ndarray]


class _Painter:
    """A premultiplied RGBA float canvas, :data:`SUPERSAMPLE` x the mask size, drawn in template units.

    Every operation rasterises its shape's anti-aliased coverage (OpenCV, 1/16 px fixed point) and composites a
    colour with it ("over", or "erase" to cut holes) inside the shape's bounding box only."""

    def __init__(self):
        self.ss = SUPERSAMPLE
        self.width, self.height = CANVAS_SIZE[0] * self.ss, CANVAS_SIZE[1] * self.ss
        self.rgba = np.zeros((self.height, self.width, 4), np.float32)

    def px(self, uv) -> np.ndarray:
        """Template units -> supersampled pixels (pixel centres at integers at both resolutions)."""
        canvas = np.asarray(TEMPLATE_ORIGIN) + TEMPLATE_SCALE * np.asarray(uv, np.float64)
        return (canvas + 0.5) * self.ss - 0.5

    def units(self, length: float) -> float:
        return length * TEMPLATE_SCALE * self.ss

    def _fixed(self, uv) -> np.ndarray:
        return np.round(self.px(uv) * 16).astype(np.int32).reshape(-1, 1, 2)

    def coverage_fill(self, *polygons) -> np.ndarray:
        """Union of the polygons' coverage (each filled on its own: one fillPoly call would XOR overlaps)."""
        cov = np.zeros((self.height, self.width), np.uint8)
        for polygon in polygons:
            one = np.zeros_like(cov)
            cv2.fillPoly(one, [self._fixed(polygon)], 255, cv2.LINE_AA, 4)
            np.maximum(cov, one, out=cov)
        return cov

    def coverage_line(self, width: float, *polylines, closed: bool = False) -> np.ndarray:
        cov = np.zeros((self.height, self.width), np.uint8)
        thickness = max(1, int(round(self.units(width))))
        cv2.polylines(cov, [self._fixed(p) for p in polylines], closed, 255, thickness, cv2.LINE_AA, 4)
        return cov

    def paint(self, cov: np.ndarray, colour: Colour, opacity: float = 1.0, clip: np.ndarray | None = None,
              erase: bool = False) -> None:
        x, y, w, h = cv2.boundingRect(cov)
        if w == 0 or h == 0:
            return
        sl = np.s_[y : y + h, x : x + w]
        a = cov[sl].astype(np.float32) * (opacity / 255.0)
        if clip is not None:
            a *= clip[sl].astype(np.float32) / 255.0
        a = a[..., None]
        if erase:  # destination-out: cut a hole
            self.rgba[sl] *= 1.0 - a
            return
        if callable(colour):  # a colour field over template units (gradients, shading)
            yy, xx = np.mgrid[y : y + h, x : x + w].astype(np.float64)
            u = ((xx + 0.5) / self.ss - 0.5 - TEMPLATE_ORIGIN[0]) / TEMPLATE_SCALE
            v = ((yy + 0.5) / self.ss - 0.5 - TEMPLATE_ORIGIN[1]) / TEMPLATE_SCALE
            rgb = np.asarray(colour(u, v), np.float32) / 255.0
        else:
            rgb = np.asarray(colour, np.float32).reshape(1, 1, 3) / 255.0
        premult = np.concatenate([np.broadcast_to(rgb, (h, w, 3)), np.ones((h, w, 1), np.float32)], axis=2)
        self.rgba[sl] = self.rgba[sl] * (1.0 - a) + premult * a

    def fill(self, polygon, colour: Colour, opacity: float = 1.0, clip=None) -> np.ndarray:
        cov = self.coverage_fill(polygon)
        self.paint(cov, colour, opacity, clip)
        return cov

    def line(self, polyline, width: float, colour: Colour, opacity: float = 1.0, closed: bool = False, clip=None):
        self.paint(self.coverage_line(width, polyline, closed=closed), colour, opacity, clip)

    def image(self) -> np.ndarray:
        """The canvas at mask size as ``(h, w, 4) uint8`` straight RGBA."""
        small = cv2.resize(self.rgba, CANVAS_SIZE, interpolation=cv2.INTER_AREA)  # premultiplied area average
        alpha = np.clip(small[..., 3:], 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rgb = np.where(alpha > 1e-4, small[..., :3] / alpha, 0.0)
        rgba = np.concatenate([np.clip(rgb, 0, 1), alpha], axis=2)
        return np.rint(rgba * 255).astype(np.uint8)


def _shade(base, dark, centre, radius) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Radial shading: ``base`` at ``centre`` going to ``dark`` at ``radius`` (template units) and beyond."""
    base, dark = np.asarray(base, np.float64), np.asarray(dark, np.float64)

    def colour(u, v):
        r = np.clip(np.hypot(u - centre[0], v - centre[1]) / radius, 0, 1)[..., None] ** 1.5
        return base * (1 - r) + dark * r
    return colour


def _vertical(top, bottom, v0, v1) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Vertical gradient from ``top`` at ``v0`` to ``bottom`` at ``v1`` (template units)."""
    top, bottom = np.asarray(top, np.float64), np.asarray(bottom, np.float64)

    def colour(u, v):
        t = np.clip((v - v0) / (v1 - v0), 0, 1)[..., None]
        return top * (1 - t) + bottom * t
    return colour


def _draw_surgical() -> np.ndarray:
    p = _Painter()
    jaw = TEMPLATE[:17]
    centre = np.array([0.0, 0.42])

    def top(u):  # the upper edge tents over the nose bridge (between points 28 and 29) and drops to the cheeks
        return 0.15 + 0.15 * (np.abs(u) / 0.80) ** 1.7
    # Right half of the outline: along the jaw, pushed out 5 % so the fabric stands off the cheek, then over the
    # chin; the left half is its mirror image.
    side = centre + (jaw[2:9] - centre) * 1.05
    half = np.vstack([[[-0.80, top(-0.80)]], side[:-1], [[0.0, 1.325]]])
    outline = _catmull_rom(np.vstack([half, _mirror(half)[1:],  # down the left, round the chin, up the right
                                      [[0.45, top(0.45)]], [[0.0, top(0.0)]], [[-0.45, top(-0.45)]]]))
    body = p.fill(outline, _shade((186, 222, 236), (128, 178, 204), (0.0, 0.62), 0.95))
    # Pleats: three folds across the mask, each a darker crease with a light fold-over just below it.
    for v in (0.40, 0.60, 0.80):
        crease = _catmull_rom([[-0.95, v + 0.06], [-0.45, v - 0.005], [0.0, v - 0.02], [0.45, v - 0.005],
                               [0.95, v + 0.06]], closed=False)
        p.line(crease + (0, 0.018), 0.022, (236, 248, 252), 0.55, clip=body)
        p.line(crease, 0.010, (96, 146, 174), 0.85, clip=body)
    # Bound edge and the nose wire.
    p.line(outline, 0.022, (150, 196, 218), 1.0, closed=True, clip=body)
    wire = np.array([[u, top(u) + 0.028] for u in np.linspace(-0.22, 0.22, 23)])
    p.line(wire, 0.016, (222, 236, 242), 0.9, clip=body)
    # Ear loops: from the mask's corners back towards the ears, beyond the jaw.
    for s in (-1, 1):
        for start, via, end in (((0.78, 0.29), (0.88, 0.22), (0.93, 0.18)),
                                ((0.69, 0.80), (0.86, 0.62), (0.92, 0.48))):
            loop = _catmull_rom([[s * start[0], start[1]], [s * via[0], via[1]], [s * end[0], end[1]]],
                                closed=False)
            p.line(loop, 0.016, (245, 247, 248), 0.95)
    return p.image()


SURGICAL_ANCHORS: list[Anchor] = [*range(0, 17), *range(27, 36),
                                  # beyond the jaw: room for the fabric's stand-off and the ear loops
                                  (0, (-0.98, 0.10)), (2, (-0.98, 0.47)), (4, (-0.80, 0.95)), (6, (-0.45, 1.30)),
                                  (8, (0.0, 1.42)), (10, (0.45, 1.30)), (12, (0.80, 0.95)), (14, (0.98, 0.47)),
                                  (16, (0.98, 0.10))]


def _draw_sunglasses() -> np.ndarray:
    p = _Painter()
    # Subject's left lens (image right, x > 0); the other is its mirror image.
    lens_right = _catmull_rom([[0.10, -0.105], [0.24, -0.140], [0.42, -0.150], [0.62, -0.160], [0.685, -0.105],
                               [0.66, 0.030], [0.59, 0.150], [0.45, 0.215], [0.30, 0.215], [0.17, 0.165],
                               [0.105, 0.065]])
    lenses = [lens_right, _mirror(lens_right)]
    tint = _vertical((22, 24, 30), (70, 78, 96), -0.16, 0.22)
    for lens in lenses:
        glass = p.fill(lens, tint, 0.90)
        # Reflections: a broad soft sheen and a thin bright streak across the upper part of the lens.
        cx = lens[:, 0].mean()
        sheen = np.array([[cx - 0.20, -0.05], [cx - 0.05, -0.15], [cx + 0.07, -0.15], [cx - 0.12, 0.08]])
        p.fill(_catmull_rom(sheen), (210, 220, 240), 0.18, clip=glass)
        streak = np.array([[cx + 0.02, 0.17], [cx + 0.20, -0.03]])
        p.line(streak, 0.018, (235, 240, 255), 0.35, clip=glass)
    frame = (18, 18, 20)
    for lens in lenses:
        p.line(lens, 0.040, frame, 1.0, closed=True)
        top_rim = lens[(lens[:, 1] < -0.09)]  # a heavier brow bar, as on wayfarer frames
        p.line(top_rim[np.argsort(top_rim[:, 0])], 0.062, frame, 1.0)
    bridge = _catmull_rom([[-0.115, -0.085], [-0.06, -0.115], [0.0, -0.122], [0.06, -0.115], [0.115, -0.085]],
                          closed=False)
    p.line(bridge, 0.042, frame, 1.0)
    for s in (-1, 1):  # the temples, running back to the ears
        arm = np.array([[s * 0.665, -0.125], [s * 0.75, -0.118], [s * 0.86, -0.100]])
        p.line(arm, 0.040, frame, 1.0)
        p.fill(np.array([[s * 0.655, -0.135], [s * 0.700, -0.145], [s * 0.700, -0.125], [s * 0.655, -0.110]]),
               (140, 140, 150), 0.9)  # hinge rivet
    return p.image()


SUNGLASSES_ANCHORS: list[Anchor] = [36, 39, 42, 45, 27, 28, 29, 30, 0, 1, 15, 16,
                                    # above the eyes and beyond the jaw: room for the frame and the temples
                                    (0, (-0.95, -0.25)), (36, (-0.55, -0.30)), (39, (-0.20, -0.30)),
                                    (27, (0.0, -0.28)), (42, (0.20, -0.30)), (45, (0.55, -0.30)),
                                    (16, (0.95, -0.25)), (0, (-0.95, 0.05)), (16, (0.95, 0.05))]


def _draw_moustache() -> np.ndarray:
    p = _Painter()
    rng = np.random.default_rng(7)  # fixed seed: the hair texture is part of the artwork, the same on every run
    # Subject's right half (image left, x < 0) along a spine from the philtrum out to a curled-up tip.
    spine = _catmull_rom([[0.0, 0.610], [-0.12, 0.615], [-0.25, 0.650], [-0.36, 0.685], [-0.45, 0.665],
                          [-0.51, 0.610], [-0.50, 0.555], [-0.46, 0.540]], closed=False, samples=12)
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(spine, axis=0), axis=1))])
    s /= s[-1]
    thick = 0.026 + 0.100 * np.sin(np.pi * np.clip(s / 0.9, 0, 1) ** 0.8)  # full in the middle, tapering out
    thick[s < 0.08] = np.maximum(thick[s < 0.08], 0.085)  # bushy at the philtrum
    tangent = np.gradient(spine, axis=0)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    upper, lower = spine - normal * thick[:, None] * 0.55, spine + normal * thick[:, None] * 0.45
    # One closed outline (two filled halves would leave an anti-aliasing seam where they meet): the upper edge
    # from the right tip to the left tip, then the lower edge back.
    outline = np.vstack([upper[::-1], (upper * (-1, 1))[1:], (lower * (-1, 1))[::-1], lower[1:]])
    hair = p.coverage_fill(outline)
    p.paint(hair, _vertical((78, 50, 32), (48, 30, 20), 0.56, 0.72))
    # Hair strokes: short strands running out from the philtrum and down, in three shades, kept inside the shape.
    for shade, opacity in (((30, 18, 10), 0.7), ((112, 78, 52), 0.55), ((150, 110, 78), 0.35)):
        strands = []
        for _ in range(140):
            k = rng.uniform(0.0, 0.97)
            i = int(k * (len(spine) - 1))
            across = rng.uniform(-0.5, 0.5) * thick[i]
            start = spine[i] + normal[i] * across
            direction = tangent[i] / np.linalg.norm(tangent[i]) + normal[i] * 0.6
            direction /= np.linalg.norm(direction)
            length = rng.uniform(0.03, 0.07)
            for sign in (1, -1):
                a = start * (sign, 1)
                b = (start + direction * length) * (sign, 1)
                strands.append(np.array([a, b]))
        p.paint(p.coverage_line(0.006, *strands), shade, opacity, clip=hair)
    return p.image()


MOUSTACHE_ANCHORS: list[Anchor] = [30, *range(31, 36), *range(48, 55), 2, 3, 13, 14,
                                   # just below the upper lip (not the lower lip: the moustache must not stretch
                                   # when the mouth opens) and beyond the curled tips
                                   (48, (-0.36, 0.79)), (49, (-0.20, 0.75)), (51, (0.0, 0.745)),
                                   (53, (0.20, 0.75)), (54, (0.36, 0.79)),
                                   (2, (-0.62, 0.50)), (14, (0.62, 0.50))]


def _draw_carnival() -> np.ndarray:
    p = _Painter()
    # Venetian eye mask: the subject's right half (x < 0) from the nose bridge, under the eye, out to an upswept
    # wing and back over the brow; the left half is its mirror image.
    half = [[0.0, 0.135], [-0.10, 0.175], [-0.28, 0.235], [-0.48, 0.205], [-0.66, 0.115], [-0.79, -0.02],
            [-0.88, -0.20], [-0.93, -0.40], [-0.80, -0.35], [-0.62, -0.35], [-0.42, -0.38], [-0.20, -0.33],
            [0.0, -0.27]]
    outline = _catmull_rom(np.vstack([half, _mirror(half)[1:-1]]))
    body = p.fill(outline, _shade((150, 30, 118), (70, 12, 92), (0.0, -0.05), 0.95))
    gold, gold_dark = (226, 186, 72), (160, 118, 30)
    # Gold filigree: a scroll over each brow and dots along the lower edge.
    for s in (-1, 1):
        scroll = _catmull_rom([[s * 0.10, -0.20], [s * 0.28, -0.28], [s * 0.50, -0.27], [s * 0.66, -0.20],
                               [s * 0.74, -0.10], [s * 0.68, -0.04], [s * 0.62, -0.10]], closed=False)
        p.line(scroll, 0.016, gold, 0.95, clip=body)
        for u, v in ((0.16, 0.18), (0.30, 0.205), (0.44, 0.19), (0.57, 0.14)):
            c = np.array([s * u, v]) + 0.017 * np.column_stack([np.cos(np.linspace(0, 2 * np.pi, 24)),
                                                                np.sin(np.linspace(0, 2 * np.pi, 24))])
            p.fill(c, (250, 240, 210), 0.95, clip=body)
    # Eye holes (almond shaped, a little larger than the eye), cut out, then rimmed in gold.
    holes = []
    for s in (-1, 1):
        hole = _catmull_rom([[s * 0.15, 0.025], [s * 0.25, -0.075], [s * 0.38, -0.110], [s * 0.51, -0.085],
                             [s * 0.585, -0.005], [s * 0.49, 0.075], [s * 0.34, 0.095], [s * 0.22, 0.075]])
        holes.append(hole)
        p.paint(p.coverage_fill(hole), (0, 0, 0), erase=True)
    for hole in holes:
        p.line(hole, 0.026, gold, 1.0, closed=True)
        p.line(hole, 0.008, gold_dark, 0.8, closed=True)
    p.line(outline, 0.026, gold, 1.0, closed=True)
    p.line(outline, 0.008, gold_dark, 0.8, closed=True)
    # Feathers fanning up from the subject's left temple (image right).
    feathers = (((0.62, -0.30), (0.70, -0.86), (28, 158, 168)), ((0.70, -0.28), (0.92, -0.80), (210, 40, 150)),
                ((0.56, -0.30), (0.44, -0.84), (226, 186, 72)), ((0.76, -0.24), (1.02, -0.60), (110, 40, 160)))
    for base, tip, colour in feathers:
        base, tip = np.array(base), np.array(tip)
        axis = tip - base
        side = np.array([-axis[1], axis[0]]) / np.linalg.norm(axis)
        t = np.linspace(0, 1, 40)[:, None]
        bend = np.sin(np.pi * t) * 0.04 * side  # a gentle curve
        width = (0.075 * np.sin(np.pi * t ** 0.7) ** 0.8)
        centre = base + axis * t + bend
        vane = np.vstack([centre + side * width, (centre - side * width)[::-1]])
        p.fill(vane, _vertical(np.array(colour) * 0.55, colour, base[1], tip[1]), 0.97)
        barbs = [np.array([centre[i], centre[i] + (side * sgn * 0.9 + axis / np.linalg.norm(axis) * 0.6)
                           * width[i]]) for i in range(4, 38, 3) for sgn in (-1, 1)]
        p.paint(p.coverage_line(0.005, *barbs), np.array(colour) * 0.4, 0.6, clip=p.coverage_fill(vane))
        p.line(centre, 0.010, (245, 235, 215), 0.9)  # the quill
    jewel = 0.035 * np.column_stack([np.cos(np.linspace(0, 2 * np.pi, 32)), np.sin(np.linspace(0, 2 * np.pi, 32))])
    p.fill(jewel + (0.62, -0.28), gold_dark)
    p.fill(jewel * 0.7 + (0.62, -0.28), (60, 200, 210))
    return p.image()


CARNIVAL_ANCHORS: list[Anchor] = [36, 39, 42, 45, 27, 28, 29, 0, 1, 15, 16,
                                  # the forehead, the wings and the feathers are beyond every landmark
                                  (0, (-1.00, 0.05)), (0, (-1.00, -0.48)), (36, (-0.55, -0.45)),
                                  (27, (0.0, -0.40)), (45, (0.45, -0.92)), (16, (0.80, -0.92)),
                                  (16, (1.08, -0.66)), (16, (1.00, 0.05)), (39, (-0.20, -0.42)),
                                  (36, (-0.45, 0.33)), (45, (0.45, 0.33))]


# ------------------------------------------------------------------------------------------------------ library

#: name -> (description, drawing function, anchor specs).
_SPECS: dict[str, tuple[str, Callable[[], np.ndarray], list[Anchor]]] = {
    "surgical": ("light-blue pleated surgical mask over nose, mouth and chin, with ear loops",
                 _draw_surgical, SURGICAL_ANCHORS),
    "sunglasses": ("black wayfarer-style sunglasses with tinted lenses", _draw_sunglasses, SUNGLASSES_ANCHORS),
    "moustache": ("brown handlebar moustache on the upper lip", _draw_moustache, MOUSTACHE_ANCHORS),
    "carnival": ("purple and gold Venetian carnival eye mask with feathers", _draw_carnival, CARNIVAL_ANCHORS),
}


class _Library(Mapping):
    """name -> :class:`Mask`; each mask is drawn and triangulated on first use, then kept."""

    def __init__(self, specs):
        self._specs = specs
        self._masks: dict[str, Mask] = {}

    def __getitem__(self, name: str) -> Mask:
        if name not in self._specs:
            raise KeyError(name)
        if name not in self._masks:
            description, draw, anchors = self._specs[name]
            self._masks[name] = make_mask(name, description, draw(), anchors)
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def description(self, name: str) -> str:
        return self._specs[name][0]


#: The mask library: name -> :class:`Mask` (a read-only mapping; masks are rendered on first access).
MASKS: Mapping[str, Mask] = _Library(_SPECS)


def list_masks() -> list[tuple[str, str]]:
    """``[(name, one-line description), ...]`` of the library, in library order (draws nothing)."""
    return [(name, MASKS.description(name)) for name in MASKS]


def get_mask(name: str) -> Mask:
    """The library's mask ``name``; ``ValueError`` naming the known masks if there is none."""
    if not isinstance(name, str) or name not in MASKS:
        raise ValueError(f"unknown mask {name!r}; known masks: {', '.join(MASKS)}")
    return MASKS[name]


__all__ = ["CANVAS_SIZE", "DEFAULT_FEATHER", "MASKS", "Mask", "TEMPLATE", "TEMPLATE_ORIGIN", "TEMPLATE_SCALE",
           "anchor_weights", "apply_mask", "apply_masks", "delaunay", "get_mask", "list_masks", "make_mask",
           "template_pixels"]
