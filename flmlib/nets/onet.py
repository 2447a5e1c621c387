"""MTCNN's O-Net (Zhang et al. 2016, arXiv 1604.02878) with a landmark head: the original write-up's network."""
from __future__ import annotations

import math

from torch import nn

from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE, LandmarkNet


class ONet(LandmarkNet):
    """O-Net: conv3x3-32, maxpool 3/2, conv3x3-64, maxpool 3/2, conv3x3-64, maxpool 2/2, conv2x2-128, fc-256, PReLU
    after every conv and the fc. Pools round up (``ceil_mode``) as in the Caffe original, which gives the paper's
    3x3x128 = 1152 features before the fc for a 48x48 input.

    Input ``(B, 3, input_size, input_size)`` float RGB 0..255; output ``(B, 2 * n_points)`` box units. The layer names
    (``features``, ``fc``, ``head``) are those of the study's model files since the first O-Net.

    ``width`` scales every layer's channels (0.5: 16, 32, 32, 64 and an fc of 128) and ``input_size`` the input
    (at least 32); the defaults, 1.0 and 48, are MTCNN's O-Net. Multiply-adds per face: 12.9 M at the defaults,
    8.2 M at 40 px, 2.4 M at width 0.5 and 40 px.
    """

    def __init__(self, dropout: float = 0.0, pixel_mean=PIXEL_MEAN, pixel_scale=PIXEL_SCALE, n_points: int = 68,
                 width: float = 1.0, input_size: int = 48):
        if not (0 < width <= 4):
            raise ValueError(f"width={width!r} must be in (0, 4]")
        if not (isinstance(input_size, int) and input_size >= 32):
            raise ValueError(f"input_size={input_size!r} must be an integer >= 32 (O-Net's pools need it)")
        super().__init__(input_size, 3, pixel_mean, pixel_scale, n_points)
        c1, c2, c3, c4, fc = (max(4, round(c * width)) for c in (32, 64, 64, 128, 256))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 3), nn.PReLU(c1), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(c1, c2, 3), nn.PReLU(c2), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(c2, c3, 3), nn.PReLU(c3), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(c3, c4, 2), nn.PReLU(c4),
        )
        side = self._trunk_side(input_size)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c4 * side * side, fc), nn.Dropout(dropout), nn.PReLU(fc))
        self.head = nn.Linear(fc, self.n_outputs)
        self.finish()

    @staticmethod
    def _trunk_side(size: int) -> int:
        """Side of the last feature map for an input of ``size`` pixels (3 for 48)."""
        size = math.ceil((size - 2 - 3) / 2) + 1   # conv 3x3, maxpool 3/2 (ceil)
        size = math.ceil((size - 2 - 3) / 2) + 1   # conv 3x3, maxpool 3/2 (ceil)
        size = math.ceil((size - 2 - 2) / 2) + 1   # conv 3x3, maxpool 2/2 (ceil)
        return size - 1                            # conv 2x2

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return self.fc(features)

build = ONet
