"""MTCNN's O-Net (Zhang et al. 2016, arXiv 1604.02878) with a landmark head: the original write-up's network."""
from __future__ import annotations

from torch import nn

from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE, LandmarkNet


class ONet(LandmarkNet):
    """O-Net: conv3x3-32, maxpool 3/2, conv3x3-64, maxpool 3/2, conv3x3-64, maxpool 2/2, conv2x2-128, fc-256, PReLU
    after every conv and the fc. Pools round up (``ceil_mode``) as in the Caffe original, which gives the paper's
    3x3x128 = 1152 features before the fc for a 48x48 input.

    Input ``(B, 3, 48, 48)`` float RGB 0..255; output ``(B, 2 * n_points)`` box units. The layer names
    (``features``, ``fc``, ``head``) are those of the study's model files since the first O-Net.
    """

    def __init__(self, dropout: float = 0.0, pixel_mean=PIXEL_MEAN, pixel_scale=PIXEL_SCALE, n_points: int = 68):
        super().__init__(48, 3, pixel_mean, pixel_scale, n_points)
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(64, 128, 2), nn.PReLU(128),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, 256), nn.Dropout(dropout), nn.PReLU(256))
        self.head = nn.Linear(256, self.n_outputs)
        self.finish()

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return self.fc(features)

build = ONet
