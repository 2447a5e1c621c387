import pytest
import torch

from flmlib.models import N_OUTPUTS, ONet, architectures, build_model


def test_onet_output_shape_and_units():
    model = build_model("onet").eval()
    out = model(torch.rand(5, 3, 48, 48) * 255)
    assert out.shape == (5, N_OUTPUTS) == (5, 136)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_onet_layers_follow_the_paper():
    model = ONet()
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (3, 3)), (64, (3, 3)), (64, (3, 3)), (128, (2, 2))]
    assert sum(isinstance(m, torch.nn.PReLU) for m in model.modules()) == 5
    # ceil-mode pools give the Caffe O-Net's 3x3x128 = 1152 features in front of the fc-256
    assert model.features(torch.zeros(1, 3, 48, 48)).shape == (1, 128, 3, 3)
    assert model.fc[1].in_features == 1152 and model.fc[1].out_features == 256


def test_onet_normalises_its_input_itself():
    model = ONet().eval()
    # A mid-grey image is all zeros after (x - 127.5) / 128, so the first conv sees only its bias.
    x = torch.full((1, 3, 48, 48), 127.5)
    first = model.features[0](((x - 127.5) / 128))
    assert torch.allclose(first, model.features[0].bias.view(1, -1, 1, 1).expand_as(first), atol=1e-6)
    scaled = model(x)
    manual = model.head(model.fc(model.features(torch.zeros(1, 3, 48, 48))))
    assert torch.allclose(scaled, manual, atol=1e-6)


def test_onet_rejects_wrong_input_size():
    with pytest.raises(ValueError, match="48"):
        ONet()(torch.zeros(1, 3, 64, 64))


def test_registry():
    assert {"onet", "naimishnet", "net2", "mobilenet", "resnet", "efficientnet"} <= set(architectures())
    assert "base" not in architectures()
    assert build_model("onet", dropout=0.3).fc[2].p == 0.3
    with pytest.raises(ValueError, match="unknown architecture 'vgg'.*onet"):
        build_model("vgg")
    with pytest.raises(ValueError, match="architecture 'onet'.*depth"):
        build_model("onet", depth=3)


def test_init_mean_shape_starts_predictions_at_the_mean_shape():
    from flmlib.models import init_mean_shape

    torch.manual_seed(0)
    mean = torch.rand(68, 2)
    model = init_mean_shape(build_model("onet"), mean).eval()
    pred = model(torch.rand(8, 3, 48, 48) * 255).reshape(8, 68, 2)
    plain = build_model("onet").eval()(torch.rand(8, 3, 48, 48) * 255).reshape(8, 68, 2)
    assert (pred - mean).abs().mean() < 0.2 * (plain - mean).abs().mean()
    with pytest.raises(ValueError, match="10 values.*136 outputs"):
        init_mean_shape(build_model("onet"), torch.zeros(10))
