"""A MobileNet (v1, Howard et al. 2017, arXiv 1704.04861) of the 88-point project's kind: width multiplier 0.3 and
a shallow trunk (the five repeated 512-channel blocks left out), about 3 MB there at 160 px input.

Depthwise-separable blocks (depthwise conv3x3 + BN + ReLU6, pointwise conv1x1 + BN + ReLU6) with the paper's widths
times ``alpha`` and strides 2 at 64, 128, 256, 512 and 1024 channels. The last feature map is flattened (``pool:
flatten``, keeps where things are, which a regressor needs at small inputs) or averaged (``pool: avg``).
"""
from __future__ import annotations

from torch import nn

from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE, LandmarkNet, feature_size

#: (output channels before alpha, stride) of MobileNet v1's separable blocks; the five 512/1 blocks are the deep part.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))
DEEP_BLOCKS = ((512, 1),) * 5
TAIL_BLOCKS = ((1024, 2), (1024, 1))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True)]


class MobileNet(LandmarkNet):
    """MobileNet v1 trunk + landmark head. Input ``(B, 3, S, S)`` RGB 0..255; output ``(B, 2 * n_points)``."""

    def __init__(self, input_size: int = 160, alpha: float = 0.3, shallow: bool = True, pool: str = "flatten",
                 in_channels: int = 3, pixel_mean=PIXEL_MEAN, pixel_scale=PIXEL_SCALE, n_points: int = 68):
        super().__init__(input_size, in_channels, pixel_mean, pixel_scale, n_points)
        if pool not in ("flatten", "avg"):
            raise ValueError(f"pool={pool!r}; choose flatten or avg")
        width = lambda c: max(8, int(round(c * alpha / 8)) * 8)  # noqa: E731 - multiples of 8 vectorise best
        layers, channels = _conv_bn(in_channels, width(32), 3, 2), width(32)
        for out, stride in BLOCKS + (() if shallow else DEEP_BLOCKS) + TAIL_BLOCKS:
            layers += _conv_bn(channels, channels, 3, stride, groups=channels) + _conv_bn(channels, width(out), 1, 1)
            channels = width(out)
        self.features = nn.Sequential(*layers)
        self.pool = pool
        c, h, w = feature_size(self.features, in_channels, input_size)
        self.head = nn.Linear(c * h * w if pool == "flatten" else c, self.n_outputs)
        self.finish()

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return features.mean((2, 3)) if self.pool == "avg" else features.flatten(1)


build = MobileNet
