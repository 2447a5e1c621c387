"""What every landmarker shares: its spec, the input checks, and the registry that builds one from its id.

A **landmarker** (a compared *method*) is any object with

* ``spec``: a :class:`MethodSpec` (id, point scheme, whether it needs a box, training data, caveats);
* ``name``: the method id (``spec.id``), used as the key of its predictions and metrics;
* ``predict(image, boxes)``: ``(H, W, 3) uint8`` RGB image and ``(K, 4)`` float face boxes, ``(x0, y0, x1, y1)``
  edges in image pixels (:mod:`flmlib.crops`) -> ``(K, 68, 2) float32`` landmarks in 0-based image pixels
  (pixel centres at integers) in the iBUG 68-point order. A face the method could not place is all NaN.
* ``predict_batch(images, boxes_list)``: many images, each with its ``(K_i, 4)`` boxes -> list of
  ``(K_i, 68, 2) float32``.

Methods are configuration: ``params.yaml`` lists them under ``methods:`` and :func:`build_method` builds one from its
entry. The entry's ``kind`` names a module of this package (``dlib_predictor``, ``cnn``, ``mediapipe_mesh``, ...)
whose ``build(spec, **options)`` returns the landmarker, so a new method is a new module plus a params entry; nothing
else in the study changes.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

N_POINTS = 68
#: Point schemes a method can report in. ``ibug68``: the 68 iBUG points themselves; ``mapped``: points mapped from
#: another scheme (e.g. a 468-vertex mesh), so some rows follow another definition (the face oval is not iBUG's jaw).
POINT_SCHEMES = ("ibug68", "mapped")
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MethodSpec:
    """A compared method, as ``params.yaml`` describes it (``methods.<id>``).

    Attributes:
        id: the method id (key of its predictions, metrics and figures).
        kind: module of :mod:`flmlib.landmarkers` that builds it (its ``build(spec, **options)``).
        points: :data:`POINT_SCHEMES` entry.
        needs_box: whether it places points inside a given face box (every method here does; the comparison gives
            every method the same box).
        trained_on: where its training data came from, in words (shown in the report).
        caveats: sentences the report prints next to this method's numbers.
        model: id of the study-trained model it runs (``models.<id>`` in params.yaml), if any.
        options: keyword arguments for the kind's ``build``.
    """

    id: str
    kind: str
    points: str = "ibug68"
    needs_box: bool = True
    trained_on: str = ""
    caveats: tuple[str, ...] = ()
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not _KIND.match(self.kind):
            raise ValueError(f"method {self.id!r}: kind={self.kind!r} must be a module name of flmlib.landmarkers")
        if self.points not in POINT_SCHEMES:
            raise ValueError(f"method {self.id!r}: points={self.points!r}; choose one of {POINT_SCHEMES}")

    @property
    def mapped(self) -> bool:
        """True when the points are mapped from another scheme (report rows are flagged 'mapped')."""
        return self.points == "mapped"


class Landmarker(Protocol):
    """The landmarker interface (module docstring)."""

    spec: MethodSpec

    @property
    def name(self) -> str: ...

    def predict(self, image: np.ndarray, boxes) -> np.ndarray: ...

    def predict_batch(self, images: Sequence[np.ndarray], boxes_list: Sequence) -> list[np.ndarray]: ...


def build_method(spec: MethodSpec, **overrides) -> Landmarker:
    """The landmarker of ``spec``: ``flmlib.landmarkers.<spec.kind>.build(spec, **(spec.options | overrides))``.

    Raises:
        ValueError: no module of that kind, or it has no ``build`` (the message names the method and the kind).
    """
    try:
        module = importlib.import_module(f"flmlib.landmarkers.{spec.kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"flmlib.landmarkers.{spec.kind}":
            raise
        raise ValueError(f"method {spec.id!r}: kind {spec.kind!r} is not a module of flmlib.landmarkers") from exc
    if not callable(getattr(module, "build", None)):
        raise ValueError(f"method {spec.id!r}: flmlib.landmarkers.{spec.kind} has no build(spec, **options)")
    return module.build(spec, **{**spec.options, **overrides})


# ------------------------------------------------------------------------------------------------- input checks


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``(H, W, 3) uint8`` RGB as a C-contiguous array; anything else raises ``ValueError`` naming ``what``."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} must be an (H, W, 3) uint8 RGB array, got {desc}")
    return np.ascontiguousarray(image)


def check_boxes(boxes, what: str = "boxes") -> np.ndarray:
    """``(K, 4)`` finite boxes with positive width and height as float32; else ``ValueError`` naming the box."""
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim == 1 and boxes.shape == (4,):
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must be (K, 4) box edges (x0, y0, x1, y1), got shape {boxes.shape}")
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}[{i}] = {boxes[i].tolist()} is not a box with finite edges and positive size")
    return boxes


def check_batch(images: Sequence, boxes_list: Sequence) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check ``predict_batch`` arguments: equal lengths, every image and box array valid (errors name the index)."""
    if len(images) != len(boxes_list):
        raise ValueError(f"{len(images)} images but {len(boxes_list)} box arrays")
    return ([check_image(im, f"image {i}") for i, im in enumerate(images)],
            [check_boxes(b, f"boxes of image {i}") for i, b in enumerate(boxes_list)])
