"""EfficientNet-b0 (Tan & Le 2019) from torchvision, trained from scratch, with a landmark head: the 68-point
YouTube-Faces project's network (ImageNet-pretrained there; ImageNet weights cannot be downloaded here, see
:mod:`flmlib.nets.efficientnet_lite` for the pretrained variant the study can use).

The trunk is torchvision's ``features`` (1280 channels out); the last feature map is averaged, dropped out and
regressed linearly. Any ``input_size`` from 32 px.
"""
from __future__ import annotations

from torch import nn

from flmlib.nets.base import IMAGENET_MEAN, IMAGENET_SCALE, LandmarkNet


class EfficientNetB0(LandmarkNet):
    """EfficientNet-b0 trunk + landmark head. Input ``(B, 3, S, S)`` RGB 0..255; output ``(B, 2 * n_points)``."""

    def __init__(self, input_size: int = 224, dropout: float = 0.2, pixel_mean=IMAGENET_MEAN,
                 pixel_scale=IMAGENET_SCALE, n_points: int = 68):
        super().__init__(input_size, 3, pixel_mean, pixel_scale, n_points)
        from torchvision.models import efficientnet_b0

        net = efficientnet_b0(weights=None)
        self.features = net.features
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(1280, self.n_outputs)
        self.finish()

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return self.drop(features.mean((2, 3)))


build = EfficientNetB0
