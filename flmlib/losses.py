"""Landmark regression losses, chosen by name from params.

All losses compare ``(B, 136)`` (or ``(B, 68, 2)``) predictions and targets in **box units** (0 and 1 at the face
box's edges) and return a scalar: the **sum over the 136 coordinates, averaged over the faces** (the scale of
Caffe's Euclidean loss, times 2, and of the Wing paper's sum over points). The reduction sets the gradient scale
plain SGD sees, and it decides whether the original study's SGD at lr 0.01 learns at all. Measured here on the
prepared data: with the mean over all coordinates (PyTorch's ``nn.MSELoss()`` default), SGD at lr 0.01 stayed at the
mean shape (validation NME 0.16 inter-ocular after 113 epochs); with this sum, starting from the mean shape
(:func:`flmlib.models.init_mean_shape`), it trains. Adam-type optimizers are nearly invariant to the scale.

Faces with missing points pass ``valid``, a ``(B, P)`` bool mask of the annotated points: the loss is then the
**mean over the valid points** of each point's (x + y) loss, times P, so that a fully annotated batch gives exactly
the unmasked value and a missing point contributes neither loss nor gradient (whatever placeholder its target holds).

Lengths that the losses take as parameters (SmoothL1's ``beta``, Wing's ``w`` and ``epsilon``) are in box units:
with a 48-pixel box, 0.01 box units is about half a pixel.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def _reduce(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    if valid is None:
        return values.reshape(values.shape[0], -1).sum(1).mean()
    n_points = valid.shape[1]
    per_point = values.reshape(values.shape[0], n_points, -1).sum(-1)
    # where(), not multiplication: a missing point's placeholder target may be anything, even NaN.
    kept = torch.where(valid, per_point, torch.zeros((), dtype=per_point.dtype, device=per_point.device))
    return kept.sum() / valid.sum().clamp(min=1) * n_points


def _check(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
    if pred.shape[0] != target.shape[0] or pred.numel() != target.numel():
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} do not match")
    if valid is not None and (valid.dtype != torch.bool or valid.ndim != 2 or valid.shape[0] != target.shape[0]
                              or target.numel() != valid.numel() * 2):
        raise ValueError(f"valid must be a (B, P) bool mask of the target's {tuple(target.shape)} points, "
                         f"got {valid.dtype} {tuple(valid.shape)}")


def _masked_target(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The target with each missing point replaced by the (detached) prediction: zero loss and, unlike a NaN
    placeholder behind ``where``, a finite zero gradient."""
    if valid is None:
        return target
    keep = valid.reshape(valid.shape[0], valid.shape[1], 1).expand(-1, -1, 2).reshape(target.shape)
    return torch.where(keep, target, pred.detach().reshape(target.shape).to(target.dtype))


def mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error (the original study's loss): ``mean_faces sum_coords (p - t)^2``."""
    _check(pred, target, valid)
    target = _masked_target(pred, target, valid)
    return _reduce((pred.reshape(target.shape) - target) ** 2, valid)


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
              beta: float = 0.02) -> torch.Tensor:
    """Huber-style loss: ``0.5 x^2 / beta`` for ``|x| < beta`` (box units), else ``|x| - 0.5 beta``."""
    _check(pred, target, valid)
    target = _masked_target(pred, target, valid)
    return _reduce(F.smooth_l1_loss(pred.reshape(target.shape), target, reduction="none", beta=beta), valid)


def wing(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, w: float = 0.1,
         epsilon: float = 0.02) -> torch.Tensor:
    """Wing loss (Feng et al., CVPR 2018): ``w ln(1 + |x|/epsilon)`` for ``|x| < w``, else ``|x| - C``.

    ``C = w - w ln(1 + w/epsilon)`` joins the two pieces. ``w`` and ``epsilon`` are in box units; the paper's
    ``w = 10, epsilon = 2`` pixels of a 64-pixel input are about 0.16 and 0.03 of the image, and the defaults here
    (0.1 and 0.02 of the face box) keep the same ratio ``w / epsilon = 5``.
    """
    _check(pred, target, valid)
    target = _masked_target(pred, target, valid)
    if not (w > 0 and epsilon > 0):
        raise ValueError(f"wing loss needs w > 0 and epsilon > 0, got w={w}, epsilon={epsilon}")
    x = (pred.reshape(target.shape) - target).abs()
    c = w - w * math.log1p(w / epsilon)
    return _reduce(torch.where(x < w, w * torch.log1p(x / epsilon), x - c), valid)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mse": mse, "smooth_l1": smooth_l1, "wing": wing}


def build_loss(name: str, **kwargs) -> Callable[..., torch.Tensor]:
    """The loss ``name`` with its parameters bound, e.g. ``build_loss("wing", w=0.1, epsilon=0.02)``; call it as
    ``loss(pred, target)`` or ``loss(pred, target, valid)``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {sorted(LOSSES)}")
    fn = LOSSES[name]
    fn(torch.zeros(1, 2), torch.zeros(1, 2), **kwargs)  # fail now, not mid-training, on a wrong keyword or value
    return lambda pred, target, valid=None: fn(pred, target, valid, **kwargs)
