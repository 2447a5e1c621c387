"""The Kaggle facial-keypoints project's smaller CNN ("Net2"; grey 96x96 input there, trained with SmoothL1), with a
landmark head here.

Four blocks of conv3x3 + batch norm + ReLU + max-pool 2 + dropout with 32, 64, 128 and 256 filters, then fc 1024 and
fc 256. Any ``input_size``: the first fc is sized from the trunk's output.
"""
from __future__ import annotations

from torch import nn

from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE, LandmarkNet, feature_size


class Net2(LandmarkNet):
    """The Kaggle project's "Net2". Input ``(B, 3, S, S)`` RGB 0..255 (grey inside by default); output
    ``(B, 2 * n_points)``."""

    def __init__(self, input_size: int = 96, in_channels: int = 1, pixel_mean=PIXEL_MEAN, pixel_scale=PIXEL_SCALE,
                 n_points: int = 68, dropout: float = 0.1):
        super().__init__(input_size, in_channels, pixel_mean, pixel_scale, n_points)
        layers, channels = [], in_channels
        for width in (32, 64, 128, 256):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2), nn.Dropout(dropout)]
            channels = width
        self.features = nn.Sequential(*layers)
        c, h, w = feature_size(self.features, in_channels, input_size)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 1024), nn.ReLU(inplace=True), nn.Dropout(2 * dropout),
                                nn.Linear(1024, 256), nn.ReLU(inplace=True))
        self.head = nn.Linear(256, self.n_outputs)
        self.finish()

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return self.fc(features)


build = Net2
