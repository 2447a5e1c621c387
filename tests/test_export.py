import types

import numpy as np
import onnx
import pytest
import torch

from flmlib.export import export_onnx, max_difference, onnx_bytes, onnx_config, onnx_session
from flmlib.io import read_image
from flmlib.landmarkers import build_landmarker
from flmlib.landmarkers.cnn import CNNLandmarker as ONetLandmarker
from flmlib.models import build_model, load_trained
from flmlib.train import TrainConfig, model_config, save_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model("onet")
    with torch.no_grad():  # larger head weights, so that outputs differ clearly between faces
        model.head.weight.mul_(20)
    path = tmp_path_factory.mktemp("export") / "onet.pt"
    save_model(path, model, model_config(TrainConfig(), types.SimpleNamespace(crop_size=96, context_factor=2.0), model))
    return path


def test_onnx_runtime_matches_torch_on_random_batches(checkpoint):
    model, config = load_trained(checkpoint)
    session = onnx_session(onnx_bytes(model, config))
    for batch in (1, 7):  # the batch dimension is dynamic
        images = torch.rand(batch, 3, 48, 48, generator=torch.Generator().manual_seed(batch)) * 255
        expected = model(images).detach().numpy()
        got = session.run(None, {"images": images.numpy()})[0]
        assert got.shape == (batch, 136)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert max_difference(model, session) < 1e-4


def test_onnx_file_carries_the_model_config(checkpoint, tmp_path):
    model, config = load_trained(checkpoint)
    path = export_onnx(model, config, tmp_path / "sub" / "onet.onnx")
    onnx.checker.check_model(str(path))
    assert onnx_config(path) == config
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match="flmlib_config"):
        onnx_config(bare)


def test_onnx_backend_gives_the_same_points_as_torch(checkpoint, tmp_path, data_root):
    image = read_image(next(iter(sorted((data_root / "300w/helen/testset").glob("*.jpg")))))
    boxes = np.array([[20, 30, 120, 130], [50, 40, 200, 190]], np.float32)
    torch_lm = ONetLandmarker.from_checkpoint(checkpoint, device="cpu")
    onnx_lm = ONetLandmarker.from_checkpoint(checkpoint, backend="onnx")
    expected = torch_lm.predict(image, boxes)
    assert np.ptp(expected) > 1  # the check below means something only if the points are spread out
    np.testing.assert_allclose(onnx_lm.predict(image, boxes), expected, atol=1e-3)
    model, config = load_trained(checkpoint)
    path = export_onnx(model, config, tmp_path / "onet.onnx")
    from_file = build_landmarker("onet", checkpoint=path, batch_size=1)
    assert from_file.backend == "onnx"
    np.testing.assert_allclose(from_file.predict(image, boxes), expected, atol=1e-3)
