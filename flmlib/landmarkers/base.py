"""What every landmarker shares: its spec, the input checks, and the registry that builds one from its id.

A **landmarker** (a compared *method*) is any object with

* ``spec``: a :class:`MethodSpec` (id, point scheme, whether it needs a box, training data, caveats);
* ``name``: the method id (``spec.id``), used as the key of its predictions and metrics;
* ``predict(image, boxes)``: ``(H, W, 3) uint8`` RGB image and ``(K, 4)`` float face boxes, ``(x0, y0, x1, y1)``
  edges in image pixels (:mod:`flmlib.crops`) -> ``(K, 68, 2) float32`` landmarks in 0-based image pixels
  (pixel centres at integers) in the iBUG 68-point order. A face the method could not place is all NaN.
* ``predict_batch(images, boxes_list)``: many images, each with its ``(K_i, 4)`` boxes -> list of
  ``(K_i, 68, 2) float32``.

Methods are configuration: ``params.yaml`` lists them under ``methods:`` (and the study's trained ``models:``) and
:func:`build_method` builds one from its entry. The entry's ``kind`` names a module of this package (``dlib_predictor``,
``cnn``, ``mediapipe_mesh``, ...) or, with a dotted path, a module of another package, whose ``build(spec, **options)``
returns the landmarker. A new method is a new module plus a params entry; nothing else in the study changes.
"""
from __future__ import annotations

import importlib
from typing import Protocol, Sequence

import numpy as np

# The spec is configuration (params.yaml builds it); it lives with the loader so that reading the configuration
# never imports a landmarker.
from flmlib.config import POINT_SCHEMES, MethodSpec  # noqa: F401  (re-exported)

N_POINTS = 68

#: Images per forward pass unless a caller sets ``batch_size``. Larger passes spill the activations of the study's
#: networks out of a 2-core CPU's caches: on an AVX2-only CPU, 64 images per pass ran O-Net 1.7-1.9x and the two-pass
#: O-Net 1.3-1.4x faster per face than 256 (`make bench`, reports/bench_batch.json), with identical points; on an
#: AVX-512 CPU the compiled bf16 O-Net was flat from 16 to 256.
DEFAULT_BATCH_SIZE = 64


class Landmarker(Protocol):
    """The landmarker interface (module docstring)."""

    spec: MethodSpec

    @property
    def name(self) -> str: ...

    def predict(self, image: np.ndarray, boxes) -> np.ndarray: ...

    def predict_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> list[np.ndarray]: ...


def kind_module(kind: str) -> str:
    """The module a method kind names: ``cnn`` -> ``flmlib.landmarkers.cnn``; a dotted path is taken as it is."""
    return kind if "." in kind else f"flmlib.landmarkers.{kind}"


def build_method(spec: MethodSpec, **overrides) -> Landmarker:
    """The landmarker of ``spec``: ``<kind module>.build(spec, **(spec.options | overrides))``.

    Raises:
        ValueError: no module of that kind, or it has no ``build`` (the message names the method and the kind).
    """
    name = kind_module(spec.kind)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not name.startswith(exc.name):
            raise
        raise ValueError(f"method {spec.id!r}: kind {spec.kind!r} names no module ({name} not found)") from exc
    if not callable(getattr(module, "build", None)):
        raise ValueError(f"method {spec.id!r}: {name} has no build(spec, **options)")
    return module.build(spec, **{**spec.options, **overrides})


# ------------------------------------------------------------------------------------------------- input checks


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``(H, W, 3) uint8`` RGB with H, W >= 1 as a C-contiguous array; anything else raises ``ValueError`` naming
    ``what``."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} must be an (H, W, 3) uint8 RGB array, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:  # no pixel to crop a face from
        raise ValueError(f"{what} is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def box_array(boxes, what: str = "boxes") -> np.ndarray:
    """``boxes`` as a ``(K, 4) float32`` array (a single ``(4,)`` box becomes ``(1, 4)``, nothing becomes ``(0, 4)``);
    any other shape raises ``ValueError`` naming ``what``. The values are not checked (:func:`check_boxes` does)."""
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim == 1 and boxes.shape == (4,):
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must be (K, 4) box edges (x0, y0, x1, y1), got shape {boxes.shape}")
    return boxes


def bad_boxes(boxes: np.ndarray) -> np.ndarray:
    """``(K,) bool``: which of ``(K, 4)`` boxes have an edge that is not finite or no positive width and height."""
    return ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])


def box_error(boxes: np.ndarray, i: int, what: str) -> ValueError:
    return ValueError(f"{what}[{i}] = {boxes[i].tolist()} is not a box with finite edges and positive size")


def check_boxes(boxes, what: str = "boxes") -> np.ndarray:
    """``(K, 4)`` finite boxes with positive width and height as float32; else ``ValueError`` naming the box."""
    boxes = box_array(boxes, what)
    bad = bad_boxes(boxes)
    if bad.any():
        raise box_error(boxes, int(np.flatnonzero(bad)[0]), what)
    return boxes


def check_batch(images: Sequence, boxes_list: Sequence) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check ``predict_batch`` arguments: equal lengths, every image and box array valid (errors name the index).

    The box values of all images are checked in one pass (a batch of one-face images costs microseconds, not a
    numpy round per image); the error names the same image and box as :func:`check_boxes` on each would.
    """
    if len(images) != len(boxes_list):
        raise ValueError(f"{len(images)} images but {len(boxes_list)} box arrays")
    images = [check_image(im, f"image {i}") for i, im in enumerate(images)]
    boxes_list = [box_array(b, f"boxes of image {i}") for i, b in enumerate(boxes_list)]
    if boxes_list:
        bad = bad_boxes(np.concatenate(boxes_list))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            image = int(np.searchsorted(np.cumsum([len(b) for b in boxes_list]), first, side="right"))
            raise box_error(boxes_list[image], first - sum(len(b) for b in boxes_list[:image]),
                            f"boxes of image {image}")
    return images, boxes_list
