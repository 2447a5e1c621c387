"""What every landmark network of the zoo shares: its input contract, pixel normalisation and regression head.

A :class:`LandmarkNet` takes ``(B, 3, S, S) float32`` **RGB pixels 0..255** (``S = input_size``) whatever it runs
on inside, so training, inference and ONNX export feed every architecture the same way:

* a grey network (``in_channels = 1``) converts to luma inside (ITU-R BT.601 weights, as OpenCV's RGB2GRAY);
* the pixels are normalised inside, ``(x - pixel_mean) / pixel_scale``, with one value or one per channel (ImageNet
  statistics for ImageNet-pretrained trunks). The model file records them and :func:`flmlib.models.load_trained`
  rebuilds the network with them.

A subclass defines ``trunk(x) -> (B, C, h, w) or (B, F)`` (convolutions; may run under bf16 autocast) and ``neck(f)
-> (B, F)`` (flatten, pooling, fully connected layers: always fp32), and sets ``self.head = nn.Linear(F, 2 *
n_points)``. The output is ``(B, 2 * n_points)``: the points as ``x0, y0, x1, y1, ...`` in box units (0 and 1 at
the face box's edges).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: MTCNN's own normalisation, x -> about -1..1: the default of the study's networks trained from scratch.
PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0
#: ImageNet channel statistics in 0..255 pixels, for trunks pretrained on ImageNet (RGB order).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_SCALE = (0.229 * 255, 0.224 * 255, 0.225 * 255)
#: RGB -> luma weights (ITU-R BT.601, the weights of OpenCV's COLOR_RGB2GRAY).
LUMA = (0.299, 0.587, 0.114)


def _channel_values(value: float | Sequence[float], channels: int, name: str) -> list[float]:
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if len(values) not in (1, channels):
        raise ValueError(f"{name}={value!r}: give one value or one per input channel ({channels})")
    return values * channels if len(values) == 1 else values


class LandmarkNet(nn.Module):
    """Base of the zoo's networks: input check, grey conversion, normalisation and the fp32 head.

    Args:
        input_size: side ``S`` of the square input, pixels.
        in_channels: 3 (RGB) or 1 (grey; converted inside from the RGB input).
        pixel_mean, pixel_scale: normalisation, a number or one per channel of ``in_channels``, in 0..255 units.
        n_points: landmarks regressed (68 for the iBUG scheme, 98 for WFLW's).
    """

    #: Set by subclasses that use channels-last convolutions (faster with oneDNN on the CPU).
    channels_last = True

    def __init__(self, input_size: int, in_channels: int = 3, pixel_mean: float | Sequence[float] = PIXEL_MEAN,
                 pixel_scale: float | Sequence[float] = PIXEL_SCALE, n_points: int = 68):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels={in_channels!r} must be 1 (grey) or 3 (RGB)")
        if not (isinstance(input_size, int) and input_size >= 16):
            raise ValueError(f"input_size={input_size!r} must be an integer >= 16")
        if not (isinstance(n_points, int) and n_points >= 1):
            raise ValueError(f"n_points={n_points!r} must be a positive integer")
        mean = _channel_values(pixel_mean, in_channels, "pixel_mean")
        scale = _channel_values(pixel_scale, in_channels, "pixel_scale")
        if not all(s > 0 for s in scale):
            raise ValueError(f"pixel_scale={pixel_scale!r} must be > 0")
        self.input_size, self.in_channels, self.n_points = input_size, in_channels, n_points
        # As given (a number or a list): the model file records them in this form.
        self.pixel_mean = mean[0] if len(set(mean)) == 1 else mean
        self.pixel_scale = scale[0] if len(set(scale)) == 1 else scale
        # Not in the state dict: the model file's config carries them and the constructor rebuilds them.
        self.register_buffer("_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_scale", torch.tensor(scale).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    @property
    def n_outputs(self) -> int:
        return 2 * self.n_points

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` RGB 0..255 -> ``(B, in_channels, S, S)`` normalised network input."""
        if x.ndim != 4 or x.shape[-3:] != (3, self.input_size, self.input_size):
            raise ValueError(f"{type(self).__name__} expects (B, 3, {self.input_size}, {self.input_size}) RGB input,"
                             f" got {tuple(x.shape)}")
        if self.in_channels == 1:
            x = (x * self._luma).sum(1, keepdim=True)
        x = (x - self._mean) / self._scale
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def neck(self, features: torch.Tensor) -> torch.Tensor:
        return torch.flatten(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk(self.normalise(x))
        # Under bf16 autocast only the trunk runs in bf16: bf16 keeps 8 bits of mantissa, about 0.004 box units
        # near 0.5, too coarse for the regressed coordinates, while the neck and head cost little.
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(self.neck(features.float()))

    def finish(self) -> "LandmarkNet":
        """Call at the end of a subclass's ``__init__``: puts the weights in the trunk's memory layout."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        return self


def feature_size(trunk: nn.Module, in_channels: int, input_size: int) -> tuple[int, ...]:
    """Shape ``(C, h, w)`` of ``trunk``'s output for one ``input_size`` input (a dry run on zeros)."""
    with torch.no_grad():
        was_training = trunk.training
        out = trunk.eval()(torch.zeros(1, in_channels, input_size, input_size))
        trunk.train(was_training)
    return tuple(out.shape[1:])
