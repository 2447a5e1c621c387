"""Every architecture of the zoo: builds, maps RGB 0..255 input to (N, 2 * n_points), normalises and converts its
input itself, exports to ONNX, and can learn (overfits a handful of faces in a few seconds)."""
import numpy as np
import pytest
import torch

from flmlib.models import architectures, build_model, init_mean_shape
from flmlib.nets.base import IMAGENET_MEAN, IMAGENET_SCALE, LandmarkNet

@pytest.fixture(autouse=True)
def one_thread():
    """These tests train and run small networks: one torch thread. Two threads on a core that another process is
    using (a training run, a parallel CI job) made the overfitting tests tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: One small variant of each architecture (kwargs), so the tests stay fast on a 2-core CPU.
SMALL = {
    "onet": {},
    "naimishnet": {"input_size": 48},
    "net2": {"input_size": 48},
    "mobilenet": {"input_size": 64},
    "resnet": {"depth": 18, "input_size": 32},
    "efficientnet": {"input_size": 32},
    "efficientnet_lite": {"input_size": 32},
}


def test_every_architecture_is_covered_here():
    assert set(architectures()) <= set(SMALL), f"add a small variant of {set(architectures()) - set(SMALL)}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_maps_a_batch_to_points_in_box_units(name):
    if name not in architectures():
        pytest.skip(f"{name} is not in this checkout's flmlib/nets")
    torch.manual_seed(0)
    model = build_model(name, **SMALL[name]).eval()
    assert isinstance(model, LandmarkNet)
    s = model.input_size
    out = model(torch.rand(3, 3, s, s) * 255)
    assert out.shape == (3, 136) and out.dtype == torch.float32 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=f"\\(B, 3, {s}, {s}\\)"):
        model(torch.zeros(1, 3, s + 1, s + 1))


@pytest.mark.parametrize("name", ["net2", "mobilenet"])
def test_other_point_counts(name):
    model = build_model(name, **SMALL[name], n_points=98).eval()
    s = model.input_size
    assert model(torch.rand(2, 3, s, s) * 255).shape == (2, 196)


def test_grey_networks_convert_rgb_to_luma_inside():
    model = build_model("net2", input_size=48, in_channels=1).eval()
    x = torch.rand(2, 3, 48, 48) * 255
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    assert torch.allclose(model.normalise(x), (grey - 127.5) / 128, atol=1e-4)
    # the same luma in all three channels gives the same output as any colour with that luma
    assert torch.allclose(model(grey.expand(-1, 3, -1, -1)), model(x), atol=1e-4)


def test_per_channel_normalisation():
    model = build_model("mobilenet", input_size=64, pixel_mean=list(IMAGENET_MEAN), pixel_scale=list(IMAGENET_SCALE))
    x = torch.rand(1, 3, 64, 64) * 255
    expected = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_SCALE).view(1, 3, 1, 1)
    assert torch.allclose(model.normalise(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="one value or one per input channel"):
        build_model("mobilenet", input_size=64, pixel_mean=[1.0, 2.0])
    with pytest.raises(ValueError, match="pixel_scale"):
        build_model("mobilenet", input_size=64, pixel_scale=0)


@pytest.mark.parametrize("name", ["net2", "mobilenet", "resnet"])
def test_onnx_export_matches_torch(name):
    ort = pytest.importorskip("onnxruntime")
    from flmlib.export import onnx_bytes

    model = build_model(name, **SMALL[name]).eval()
    s = model.input_size
    config = {"model": name, "input_size": s, "crop_size": 2 * s, "context_factor": 2.0}
    session = ort.InferenceSession(onnx_bytes(model, config), providers=["CPUExecutionProvider"])
    x = torch.rand(4, 3, s, s) * 255
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_overfits_a_handful_of_faces(name):
    """Eight random 'faces' with their own target shapes: a working network drives the error well down."""
    if name not in architectures():
        pytest.skip(f"{name} is not in this checkout's flmlib/nets")
    torch.manual_seed(0)
    model = build_model(name, **SMALL[name])
    for module in model.modules():  # memorising needs every unit: dropout off (it is a regulariser, not the net)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    s = model.input_size
    images = torch.rand(8, 3, s, s) * 255
    targets = 0.5 + 0.4 * (torch.rand(8, 136) - 0.5)
    init_mean_shape(model, targets.mean(0).reshape(68, 2))
    mean_shape_error = float((targets - targets.mean(0)).abs().mean())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):
        loss = (model(images) - targets).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():  # train mode still: batch statistics, as fitted
        final = float((model(images) - targets).abs().mean())
    assert final < 0.25 * mean_shape_error, (mean_shape_error, final)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_model_file_round_trips_through_the_landmarker_and_onnx(name, tmp_path):
    """A model file of each architecture loads as the landmarker it was saved as, and its ONNX export places the
    same points on a real face (the model file's input spec, normalisation and channels travel with it)."""
    import types

    from flmlib.export import export_onnx
    from flmlib.landmarkers.cnn import CNNLandmarker
    from flmlib.models import load_trained
    from flmlib.train import TrainConfig, model_config, save_model

    if name not in architectures():
        pytest.skip(f"{name} is not in this checkout's flmlib/nets")
    torch.manual_seed(0)
    model = build_model(name, **SMALL[name]).eval()
    s = model.input_size
    config = model_config(TrainConfig(model=name, model_params=SMALL[name]),
                          types.SimpleNamespace(crop_size=2 * s, context_factor=2.0), model)
    save_model(tmp_path / "m.pt", model, config)
    again, saved = load_trained(tmp_path / "m.pt")
    assert saved["in_channels"] == model.in_channels and saved["input_size"] == s
    x = torch.rand(2, 3, s, s) * 255
    assert torch.equal(again(x), model(x))
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[40.0, 30.0, 100.0, 90.0]], np.float32)
    from_pt = CNNLandmarker.from_checkpoint(tmp_path / "m.pt", device="cpu").predict(image, boxes)
    export_onnx(again, saved, tmp_path / "m.onnx")
    from_onnx = CNNLandmarker.from_onnx(tmp_path / "m.onnx").predict(image, boxes)
    assert from_pt.shape == (1, 68, 2)
    np.testing.assert_allclose(from_onnx, from_pt, atol=1e-2)  # pixels; float reassociation only


def test_onet_defaults_are_mtcnns_onet():
    """width 1 and 48 px are the original layers, names and shapes (the study's O-Net model files load unchanged)."""
    shapes = {k: tuple(v.shape) for k, v in build_model("onet").state_dict().items()}
    assert shapes["features.0.weight"] == (32, 3, 3, 3) and shapes["features.9.weight"] == (128, 64, 2, 2)
    assert shapes["fc.1.weight"] == (256, 1152) and shapes["head.weight"] == (136, 256)
    assert sum(p.numel() for p in build_model("onet").parameters()) == 419_880


@pytest.mark.parametrize("width, size", [(0.5, 40), (0.75, 40), (1.0, 32), (1.0, 64)])
def test_onet_width_and_input_size(width, size):
    model = build_model("onet", width=width, input_size=size).eval()
    assert model.input_size == size
    assert model.features[0].out_channels == round(32 * width)
    assert model(torch.rand(2, 3, size, size) * 255).shape == (2, 136)


def test_onet_refuses_bad_width_and_size():
    with pytest.raises(ValueError, match="width"):
        build_model("onet", width=0)
    with pytest.raises(ValueError, match="input_size"):
        build_model("onet", input_size=24)


def test_mtcnn_weights_refuse_a_slim_onet():
    from flmlib.pretrained.mtcnn_onet import initialise

    with pytest.raises(ValueError, match="do not fit|shapes"):
        initialise(build_model("onet", width=0.5))
