"""Two-pass landmarkers: a first model's points align the face for a second model trained on aligned crops."""
import types

import numpy as np
import pytest
import torch
from conftest import constant_onet, save_model_file

from flmlib.alignment import box_in_crop, invert_matrices, map_points
from flmlib.landmarkers.base import MethodSpec
from flmlib.landmarkers.cnn import CNNLandmarker, build
from flmlib.landmarkers.two_pass import TwoPassLandmarker
from flmlib.models import build_model, read_model_file, write_two_pass_model
from flmlib.train import TrainConfig, model_config


def _mean_face() -> np.ndarray:
    """A face-like mean shape in box units: 68 points spread over the box, no two alike."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.15, 0.85, size=(68, 2))


@pytest.fixture
def files(tmp_path):
    mean = _mean_face()
    first = save_model_file(tmp_path / "first.pt", build_model("onet").eval())
    second = save_model_file(tmp_path / "second.pt", constant_onet(mean), mean)
    return first, second, mean


def test_the_two_pass_file_holds_both_models_and_opens_as_one_method(files, tmp_path):
    first, second, _ = files
    out = write_two_pass_model(first, second, tmp_path / "two.pt")
    assert "first_pass" in read_model_file(out) and "first_pass" not in read_model_file(first)
    landmarker = build(MethodSpec(id="two", kind="cnn"), out, device="cpu")
    assert isinstance(landmarker, TwoPassLandmarker) and landmarker.name == "two"
    image = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    boxes = [np.array([[40.0, 30.0, 140.0, 130.0]]), np.zeros((0, 4)), np.array([[150, 40, 250, 140], [10, 10, 90, 90.0]])]
    points = landmarker.predict_batch([image, image, image], boxes)
    assert [p.shape for p in points] == [(1, 68, 2), (0, 68, 2), (2, 68, 2)]
    assert all(np.isfinite(p).all() and p.dtype == np.float32 for p in points)


def test_second_pass_geometry_maps_its_output_back_through_the_alignment(files):
    """A second network that always answers the mean shape returns, in the image, the mean shape placed by the inverse
    alignment: for a face that *is* the mean shape turned and scaled, exactly the face's points."""
    _, second, mean = files
    box = box_in_crop(96, 2.0)
    in_crop = box[:2] + mean * (box[2:] - box[:2])
    a = np.deg2rad(25)
    image_to_crop = np.array([[0.6 * np.cos(a), -0.6 * np.sin(a), 5.0], [0.6 * np.sin(a), 0.6 * np.cos(a), -20.0]])
    face = map_points(in_crop[None], invert_matrices(image_to_crop[None]))  # (1, 68, 2) image pixels
    landmarker = TwoPassLandmarker(first=None, second=CNNLandmarker.from_checkpoint(second, device="cpu"),
                                   spec=MethodSpec(id="two", kind="cnn"))
    image = np.zeros((300, 300, 3), np.uint8)
    np.testing.assert_allclose(landmarker.refine([image], face), face, atol=1e-3)


def test_a_second_pass_must_be_trained_on_aligned_crops(files, tmp_path):
    first, second, _ = files
    with pytest.raises(ValueError, match="not trained on aligned crops"):
        write_two_pass_model(first, first, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="first pass must work on face boxes"):
        write_two_pass_model(second, second, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="aligned crops"):
        TwoPassLandmarker(first=None, second=CNNLandmarker.from_checkpoint(first, device="cpu"))
    with pytest.raises(ValueError, match="not a two-pass model file"):
        TwoPassLandmarker.from_file(first)


def test_speed_counts_both_networks_of_a_two_pass_method(files, tmp_path):
    from flmlib.speed import images_per_pass, model_size, runtime_of

    first, second, _ = files
    out = write_two_pass_model(first, second, tmp_path / "two.pt")
    spec = MethodSpec(id="two", kind="cnn", options={"checkpoint": str(out)})
    landmarker = build(spec, out, device="cpu")
    one = sum(p.numel() for p in build_model("onet").parameters())
    assert model_size(spec, landmarker)["parameters"] == 2 * one
    flipped = build(spec, out, device="cpu", flip_test=True, precision="bf16")
    assert runtime_of(flipped) == "torch, bf16, flip test" and runtime_of(landmarker) == "torch, fp32"
    assert images_per_pass(build(spec, out, device="cpu", batch_size=16)) == 16
    assert images_per_pass(types.SimpleNamespace(batch_size=64)) is None  # MediaPipe's requests are not CNN passes


def test_unmirror_renumbers_and_reflects_so_a_symmetric_face_is_its_own_mirror_image():
    from flmlib.landmarkers.cnn import unmirror_box_units

    face = _mean_face()[None].astype(np.float32)
    np.testing.assert_allclose(unmirror_box_units(unmirror_box_units(face)), face, atol=1e-6)  # an involution
    symmetric = (face + unmirror_box_units(face)) / 2
    np.testing.assert_allclose(unmirror_box_units(symmetric), symmetric, atol=1e-6)
    assert unmirror_box_units(face)[0, 36, 0] == pytest.approx(1 - face[0, 45, 0])  # outer eye corners swap sides


def test_flip_test_averages_a_prediction_with_its_mirror_image(files):
    """A network that answers one face for every input sees that face mirrored in the mirrored input, so the flip
    test returns the face's symmetric part; a symmetric face comes back unchanged."""
    from flmlib.landmarkers.cnn import unmirror_box_units

    _, _, mean = files
    image = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[30.0, 20.0, 90.0, 80.0], [70.0, 30.0, 150.0, 110.0]])
    symmetric = (mean + unmirror_box_units(mean[None].astype(np.float32))[0]) / 2
    config = model_config(TrainConfig(), types.SimpleNamespace(crop_size=96, context_factor=2.0, align_mean=None),
                          build_model("onet"))
    for units, expected in ((mean, symmetric), (symmetric, symmetric)):
        plain = CNNLandmarker.from_model(constant_onet(units), config, device="cpu")
        flip = CNNLandmarker.from_model(constant_onet(units), config, device="cpu", flip_test=True, batch_size=1)
        crops = plain.input_tensor(plain.input_crops(image, boxes))
        np.testing.assert_allclose(plain.run_network(crops), np.broadcast_to(units, (2, 68, 2)), atol=1e-6)
        np.testing.assert_allclose(flip.run_network(crops), np.broadcast_to(expected, (2, 68, 2)), atol=1e-6)


def test_flip_test_passes_carry_at_most_batch_size_images():
    """With the flip test each chunk travels with its mirror image, so chunks are half the batch size: a forward
    pass never carries more than batch_size images, and chunking does not change the answer."""
    config = model_config(TrainConfig(), types.SimpleNamespace(crop_size=96, context_factor=2.0, align_mean=None),
                          build_model("onet"))
    torch.manual_seed(0)
    model = build_model("onet").eval()
    inputs = torch.rand(11, 3, 48, 48) * 255
    whole = CNNLandmarker.from_model(model, config, device="cpu", flip_test=True, batch_size=64).run_network(inputs)
    for batch_size in (1, 2, 4, 5):
        landmarker = CNNLandmarker.from_model(model, config, device="cpu", flip_test=True, batch_size=batch_size)
        passes, runtime = [], landmarker.runtime
        landmarker.runtime = lambda x, runtime=runtime: passes.append(len(x)) or runtime(x)
        np.testing.assert_allclose(landmarker.run_network(inputs), whole, atol=1e-4)
        assert max(passes) <= max(2, batch_size) and sum(passes) == 2 * len(inputs), (batch_size, passes)


def test_a_two_pass_flip_test_runs_on_the_second_network_only(files, tmp_path):
    first, second, _ = files
    out = write_two_pass_model(first, second, tmp_path / "two.pt")
    landmarker = build(MethodSpec(id="two", kind="cnn"), out, device="cpu", flip_test=True)
    assert landmarker.second.flip_test and not landmarker.first.flip_test
    image = np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert landmarker.predict(image, np.array([[40.0, 30.0, 140.0, 130.0]])).shape == (1, 68, 2)


def _mean_face_onet(mean: np.ndarray, seed: int):
    """An O-Net with random convolutions whose head answers ``mean`` ``(68, 2)`` box units plus an input-dependent
    part: its points depend on the pixels, yet stay face-like enough to align a face."""
    torch.manual_seed(seed)
    model = build_model("onet").eval()
    with torch.no_grad():
        model.head.weight.mul_(10.0)
        model.head.bias.copy_(torch.as_tensor(mean.reshape(-1), dtype=torch.float32))
    return model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_a_two_pass_method_on_the_gpu_places_the_points_it_places_on_the_cpu(tmp_path):
    mean = _mean_face()
    first = save_model_file(tmp_path / "first.pt", _mean_face_onet(mean, 0))
    second = save_model_file(tmp_path / "second.pt", _mean_face_onet(mean, 1), mean)
    out = write_two_pass_model(first, second, tmp_path / "two.pt")
    spec = MethodSpec(id="two", kind="cnn")
    image = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[40.0, 30.0, 140.0, 130.0], [150.0, 60.0, 250.0, 160.0], [200.0, 20.0, 300.0, 120.0]])
    on_cpu = build(spec, out, device="cpu", flip_test=True).predict(image, boxes)
    gpu = build(spec, out, device="cuda", flip_test=True)
    assert all(next(net.parameters()).is_cuda for net in gpu.networks)
    on_gpu = gpu.predict(image, boxes)
    assert on_gpu.dtype == np.float32 and np.isfinite(on_gpu).all()
    assert np.abs(on_cpu[0] - on_cpu[0].mean(0) - (on_cpu[1] - on_cpu[1].mean(0))).max() > 1.0  # not a constant
    # cuDNN's TF32 convolutions keep 10 mantissa bits: on 100 px boxes the points agree to a fraction of a pixel
    assert np.abs(on_gpu - on_cpu).max() < 0.5
    # precision auto is bf16 on a GPU that has it (8 significant bits: about a pixel on these boxes, never more)
    auto = build(spec, out, device="cuda", flip_test=True, precision="auto")
    assert auto.second.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert np.abs(auto.predict(image, boxes) - on_cpu).max() < 2.0
