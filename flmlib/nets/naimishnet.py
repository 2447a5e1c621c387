"""NaimishNet (Agarwal et al. 2017, arXiv 1710.00977), the Kaggle facial-keypoints project's first network (grey
96x96 input there, 30 outputs), with a landmark head here.

Four conv blocks with kernels 4, 3, 2, 1 and 32, 64, 128, 256 filters, each ELU + max-pool 2 + dropout (0.1 ... 0.4),
then fc 1000, fc 1000 (dropout 0.5, 0.6). Any ``input_size``: the first fc is sized from the trunk's output.
"""
from __future__ import annotations

from torch import nn

from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE, LandmarkNet, feature_size


class NaimishNet(LandmarkNet):
    """NaimishNet. Input ``(B, 3, S, S)`` RGB 0..255 (grey inside by default); output ``(B, 2 * n_points)``."""

    def __init__(self, input_size: int = 96, in_channels: int = 1, pixel_mean=PIXEL_MEAN, pixel_scale=PIXEL_SCALE,
                 n_points: int = 68, fc_width: int = 1000):
        super().__init__(input_size, in_channels, pixel_mean, pixel_scale, n_points)
        layers, channels = [], in_channels
        for width, kernel, drop in zip((32, 64, 128, 256), (4, 3, 2, 1), (0.1, 0.2, 0.3, 0.4)):
            layers += [nn.Conv2d(channels, width, kernel), nn.ELU(), nn.MaxPool2d(2), nn.Dropout(drop)]
            channels = width
        self.features = nn.Sequential(*layers)
        c, h, w = feature_size(self.features, in_channels, input_size)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, fc_width), nn.ELU(), nn.Dropout(0.5),
                                nn.Linear(fc_width, fc_width), nn.ELU(), nn.Dropout(0.6))
        self.head = nn.Linear(fc_width, self.n_outputs)
        self.finish()

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return self.fc(features)


build = NaimishNet
