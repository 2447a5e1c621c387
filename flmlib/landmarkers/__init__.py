"""Landmarkers: given an image and face boxes, return 68 points per face in image pixels.

The interface, the method spec and the registry are in :mod:`flmlib.landmarkers.base`; each other module of this
package is one kind of method with a ``build(spec, **options)``:

* :mod:`~flmlib.landmarkers.cnn`: a CNN trained by the study (O-Net and the zoo), PyTorch or ONNX Runtime;
* :mod:`~flmlib.landmarkers.dlib_predictor`: dlib's shape predictor;
* :mod:`~flmlib.landmarkers.mediapipe_mesh`: MediaPipe Face Mesh (468 vertices mapped to 68), in its own environment.

:func:`build_landmarker` builds a method by its id in ``params.yaml``.
"""
from __future__ import annotations

from pathlib import Path

from flmlib.landmarkers.base import (N_POINTS, Landmarker, MethodSpec, build_method, check_batch, check_boxes,
                                     check_image)


def build_landmarker(method_id: str, params_path: str | Path | None = None, **overrides) -> Landmarker:
    """The method ``method_id`` as ``params.yaml`` (or ``params_path``) describes it; ``overrides`` replace its
    options (e.g. ``checkpoint=``, ``backend=``, ``device=`` for a trained model).

    Raises:
        KeyError: an id that params.yaml does not list (the message lists the known ones).
    """
    from flmlib.config import DEFAULT_PARAMS, load_config

    study = load_config(params_path or DEFAULT_PARAMS)
    return build_method(study.method_spec(method_id), **overrides)


__all__ = ["N_POINTS", "Landmarker", "MethodSpec", "build_method", "build_landmarker", "check_batch", "check_boxes",
           "check_image"]
