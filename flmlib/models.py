"""Landmark regressors and a registry that builds them by name (the name comes from params.yaml).

Every model here takes ``(B, 3, S, S) float32`` **RGB pixels in 0..255** (``S = input_size``, 48 for O-Net) and
normalises them itself, ``(x - pixel_mean) / pixel_scale``, so callers (training, inference, ONNX export) cannot
disagree about the normalisation. The model file records the values (:func:`flmlib.train.model_config`) and
:func:`load_trained` rebuilds the model with them, so a network trained on other input statistics loads as it was
trained.
It returns ``(B, 136) float32``: 68 points as ``x0, y0, x1, y1, ...`` in **box units** (0 and 1 at the face box's
edges; see :mod:`flmlib.crops`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

N_OUTPUTS = 136

#: Default pixel normalisation inside a model: ``(x - PIXEL_MEAN) / PIXEL_SCALE`` (MTCNN's own: x -> about -1..1).
PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0


class ONet(nn.Module):
    """MTCNN's O-Net (Zhang et al. 2016, arXiv 1604.02878) with a 136-value landmark head.

    Layers: conv3x3-32, maxpool 3/2, conv3x3-64, maxpool 3/2, conv3x3-64, maxpool 2/2, conv2x2-128, fc-256,
    PReLU after every conv and the fc. Pools round up (``ceil_mode``) as in the Caffe original, which gives the
    paper's 3x3x128 = 1152 features before the fc for a 48x48 input.

    Input ``(B, 3, 48, 48)`` float RGB 0..255; output ``(B, 136)`` box units.
    """

    input_size = 48

    def __init__(self, dropout: float = 0.0, pixel_mean: float = PIXEL_MEAN, pixel_scale: float = PIXEL_SCALE):
        super().__init__()
        if not (pixel_scale > 0):
            raise ValueError(f"pixel_scale={pixel_scale!r} must be > 0")
        self.pixel_mean, self.pixel_scale = float(pixel_mean), float(pixel_scale)
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(64, 128, 2), nn.PReLU(128),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, 256), nn.Dropout(dropout), nn.PReLU(256))
        self.head = nn.Linear(256, N_OUTPUTS)
        # Channels-last convolutions and pools are markedly faster on the CPU here (measured ~1.4x per training
        # step with oneDNN) and are at least as fast on a GPU; load_state_dict keeps this layout.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (3, self.input_size, self.input_size):
            raise ValueError(f"ONet expects (B, 3, {self.input_size}, {self.input_size}) input, got {tuple(x.shape)}")
        x = ((x - self.pixel_mean) / self.pixel_scale).contiguous(memory_format=torch.channels_last)
        features = self.features(x)
        # Under bf16 autocast only the convolutions run in bf16: bf16 keeps 8 bits of mantissa, about 0.004 box
        # units near 0.5, too coarse for the regressed coordinates, while the fc and head cost next to nothing.
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(self.fc(features.float()))


MODELS: dict[str, Callable[..., nn.Module]] = {"onet": ONet}


@torch.no_grad()
def init_mean_shape(model: nn.Module, mean_shape: torch.Tensor, weight_scale: float = 0.1) -> nn.Module:
    """Start a model from the mean shape: head bias = ``mean_shape`` ``(68, 2)`` box units, head weights scaled down.

    The first predictions are then the mean training shape give or take a little, instead of PyTorch's default
    init scattering them about 0. This spares the first epochs the large errors that made plain SGD on the summed
    loss diverge to NaN here. Needs a ``head`` ``nn.Linear`` with 136 outputs (every model of the registry).
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.out_features != N_OUTPUTS:
        raise ValueError(f"{type(model).__name__} has no 136-output linear 'head' to initialise")
    mean_shape = torch.as_tensor(mean_shape, dtype=head.bias.dtype).reshape(-1)
    if mean_shape.numel() != N_OUTPUTS:
        raise ValueError(f"mean_shape must hold 68 x 2 values, got {mean_shape.numel()}")
    head.bias.copy_(mean_shape.to(head.bias.device))
    head.weight.mul_(weight_scale)
    return model


def build_model(name: str, **kwargs) -> nn.Module:
    """A fresh model from the registry, e.g. ``build_model("onet", dropout=0.1)``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def load_trained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from a file written by :func:`flmlib.train.save_model` (e.g. ``models/onet.pt``).

    Returns:
        the model in eval mode and its config dict (model name and kwargs, input size, crop size, context factor,
        pixel normalisation, output units, training configuration and validation result).
    """
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
    config = blob["config"]
    norm = config.get("normalisation") or {}
    if norm:  # the model file's own input statistics (files before this key existed used the defaults)
        norm = {"pixel_mean": float(norm["mean"]), "pixel_scale": float(norm["scale"])}
    try:
        model = build_model(config["model"], **{**config.get("model_kwargs", {}), **norm})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot rebuild its {config['model']!r} model ({exc})") from exc
    model.load_state_dict(blob["state_dict"])
    return model.eval(), config
