"""The model zoo's registry: builds a landmark network by its architecture name, and reads trained model files.

An architecture name (``models.<id>.architecture`` in params.yaml) is a module of :mod:`flmlib.nets` whose ``build``
makes the network from the entry's ``architecture_kwargs`` (``onet``, ``naimishnet``, ``net2``, ``mobilenet``,
``resnet``, ``efficientnet``, ``efficientnet_lite``). Every network takes ``(B, 3, S, S) float32`` **RGB pixels in
0..255** (``S = input_size``) and normalises them itself (:class:`flmlib.nets.base.LandmarkNet`), so callers
(training, inference, ONNX export) cannot disagree about the normalisation. The model file records it
(:func:`flmlib.train.model_config`) and :func:`load_trained` rebuilds the model with it.
A network returns ``(B, 2 * n_points) float32``: the points as ``x0, y0, x1, y1, ...`` in **box units** (0 and 1
at the face box's edges; see :mod:`flmlib.crops`).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import torch
from torch import nn

import flmlib.nets
from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE, LandmarkNet  # noqa: F401 - re-exported for callers
from flmlib.nets.onet import ONet  # noqa: F401 - the study's first network, imported by name in places

N_OUTPUTS = 136
#: Modules of flmlib.nets that are not architectures.
_NOT_ARCHITECTURES = {"base"}


def architectures() -> list[str]:
    """Names of the architectures in :mod:`flmlib.nets` (one module each)."""
    return sorted(m.name for m in pkgutil.iter_modules(flmlib.nets.__path__) if m.name not in _NOT_ARCHITECTURES)


@torch.no_grad()
def init_mean_shape(model: nn.Module, mean_shape: torch.Tensor, weight_scale: float = 0.1) -> nn.Module:
    """Start a model from the mean shape: head bias = ``mean_shape`` ``(n_points, 2)`` box units, head weights scaled down.

    The first predictions are then the mean training shape give or take a little, instead of PyTorch's default
    init scattering them about 0. This spares the first epochs the large errors that made plain SGD on the summed
    loss diverge to NaN here. Needs a ``head`` ``nn.Linear`` with ``2 * n_points`` outputs (every network of the zoo).
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no linear 'head' to initialise")
    mean_shape = torch.as_tensor(mean_shape, dtype=head.bias.dtype).reshape(-1)
    if mean_shape.numel() != head.out_features:
        raise ValueError(f"mean_shape holds {mean_shape.numel()} values, the head has {head.out_features} outputs")
    head.bias.copy_(mean_shape.to(head.bias.device))
    head.weight.mul_(weight_scale)
    return model


def build_model(name: str, **kwargs) -> nn.Module:
    """A fresh network of architecture ``name`` (a module of :mod:`flmlib.nets`), e.g.
    ``build_model("resnet", depth=18, input_size=64)``.

    Raises:
        ValueError: unknown name (the message lists the known ones), or kwargs the architecture does not take.
    """
    known = architectures()
    if name not in known:
        raise ValueError(f"unknown architecture {name!r}; known architectures: {known}")
    build = importlib.import_module(f"flmlib.nets.{name}").build
    try:
        return build(**kwargs)
    except TypeError as exc:
        raise ValueError(f"architecture {name!r}: {exc}") from None


def load_trained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from a file written by :func:`flmlib.train.save_model` (e.g. ``models/onet.pt``).

    Returns:
        the model in eval mode and its config dict (model name and kwargs, input size, crop size, context factor,
        pixel normalisation, output units, training configuration and validation result).
    """
    return build_from_blob(read_model_file(path, map_location), str(path))


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A model file's ``{"state_dict", "config", ...}`` dict, checked; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trained model file not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - random bytes, a truncated file, a pickle with code: all unreadable
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: not a readable model file ({type(exc).__name__}: {reason})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
        raise ValueError(f"{path}: not a flmlib model file (needs 'state_dict' and 'config')")
    return blob


def build_from_blob(blob: dict, source: str) -> tuple[nn.Module, dict]:
    """The model (eval mode) and config of a model file's ``{"state_dict", "config"}`` dict (``source`` names it
    in errors): the model file's own architecture, kwargs and input statistics."""
    config = blob["config"]
    norm = config.get("normalisation") or {}
    if norm:  # the model file's own input statistics (files before this key existed used the defaults)
        norm = {"pixel_mean": norm["mean"], "pixel_scale": norm["scale"]}
    if "n_points" in config and "n_points" not in config.get("model_kwargs", {}):
        norm["n_points"] = int(config["n_points"])  # a model trained on another point scheme than the 68 points
    try:
        model = build_model(config["model"], **{**config.get("model_kwargs", {}), **norm})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: cannot rebuild its {config['model']!r} model ({exc})") from exc
    model.load_state_dict(blob["state_dict"])
    return model.eval(), config


def write_two_pass_model(first: str | Path, second: str | Path, out: str | Path) -> Path:
    """Write the two-pass model file of ``first`` (any model file on face boxes) and ``second`` (trained on
    aligned crops: its config has ``alignment``) to ``out``; returns ``out``.

    Raises:
        ValueError: ``second`` was not trained on aligned crops, ``first`` was (or is itself a two-pass file), or
            either is not a 68-point model.
    """
    first_blob, second_blob = read_model_file(first), read_model_file(second)
    if "alignment" not in second_blob["config"]:
        raise ValueError(f"{second}: not trained on aligned crops (training_crops --aligned), so it cannot be a "
                         "second pass")
    if "alignment" in first_blob["config"] or "first_pass" in first_blob:
        raise ValueError(f"{first}: a first pass must work on face boxes, not on aligned crops")
    for path, blob in ((first, first_blob), (second, second_blob)):
        if int(blob["config"].get("n_points", 68)) != 68:
            raise ValueError(f"{path}: a two-pass method needs 68-point models (alignment uses points 17-67)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # first and second are read whole before out is replaced
    tmp = out.with_suffix(".tmp")
    torch.save({**second_blob, "first_pass": {"state_dict": first_blob["state_dict"],
                                              "config": first_blob["config"]}}, tmp)
    os.replace(tmp, out)
    return out
