"""ResNet-18 / ResNet-50 (He et al. 2016) trunks from torchvision, trained from scratch, with a landmark head: the
WFLW-98 project's network (ResNet-50 + Wing loss at 224 px there) and a smaller variant.

The trunk is torchvision's (stem, four stages) without its classifier; the last feature map is averaged and a linear
head regresses the points. Any ``input_size`` from 32 px (the trunk downsamples 32 times).
"""
from __future__ import annotations

from torch import nn

from flmlib.nets.base import PIXEL_MEAN, PIXEL_SCALE, LandmarkNet

DEPTHS = (18, 34, 50)


class ResNet(LandmarkNet):
    """ResNet trunk + landmark head. Input ``(B, 3, S, S)`` RGB 0..255; output ``(B, 2 * n_points)``."""

    def __init__(self, depth: int = 18, input_size: int = 224, in_channels: int = 3, pixel_mean=PIXEL_MEAN,
                 pixel_scale=PIXEL_SCALE, n_points: int = 68):
        super().__init__(input_size, in_channels, pixel_mean, pixel_scale, n_points)
        if depth not in DEPTHS:
            raise ValueError(f"depth={depth!r}; choose one of {DEPTHS}")
        from torchvision.models import resnet18, resnet34, resnet50

        net = {18: resnet18, 34: resnet34, 50: resnet50}[depth](weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.features = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                      net.layer4)
        self.head = nn.Linear(net.fc.in_features, self.n_outputs)
        self.finish()

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return features.mean((2, 3))


build = ResNet
