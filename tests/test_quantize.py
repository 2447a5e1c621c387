"""int8 quantization of a trained model: the quantized and float models agree within a stated tolerance."""
import numpy as np

from flmlib import train as T
from flmlib.bench_train import synthetic_arrays, write_synthetic_split
from flmlib.export import onnx_session
from flmlib.quantize import TOLERANCE_BOX_UNITS, network_inputs, quantize_model, run_session


def test_int8_model_agrees_with_float_within_the_tolerance(tmp_path):
    train = write_synthetic_split(tmp_path / "train.npz", 64, seed=0)
    val = write_synthetic_split(tmp_path / "val.npz", 16, seed=1)
    config = T.TrainConfig(epochs=2, batch_size=16, threads=1, device="cpu")
    T.train(config, train, val, tmp_path / "onet.pt", tmp_path / "ckpt", progress=False)
    calibration = network_inputs(synthetic_arrays(64, seed=2), 48)
    int8_path, float_bytes = quantize_model(tmp_path / "onet.pt", calibration, tmp_path / "onet.int8.onnx")
    assert int8_path.stat().st_size < len(float_bytes) / 2  # int8 weights: about a quarter of the float file
    images = network_inputs(synthetic_arrays(32, seed=3), 48)  # faces the calibration did not see
    got = run_session(onnx_session(int8_path), images)
    expected = run_session(onnx_session(float_bytes), images)
    assert got.shape == expected.shape == (32, 136) and np.isfinite(got).all()
    difference = np.abs(got - expected).max()
    assert difference < TOLERANCE_BOX_UNITS, difference
    assert difference > 0  # it is a different (quantized) model, not the float one again


def test_landmarker_speed_times_float_int8_and_reference_in_one_run(tmp_path, monkeypatch):
    """The int8 model joins a temporary params copy as a cnn method on the .onnx file, next to the float model and
    the reference method, and all three go to one flmlib.speed run."""
    from flmlib import quantize, speed
    from flmlib.config import load_config
    from flmlib.paths import PROJECT_ROOT

    seen = {}

    def fake_run(method_ids, prepared, params_path, rounds=5, **kwargs):
        study = load_config(params_path)  # the temporary copy must be a valid study configuration
        seen.update(ids=list(method_ids), spec=study.method_spec(method_ids[-1]), rounds=rounds)
        return {"methods": {m: {} for m in method_ids}}

    monkeypatch.setattr(speed, "run", fake_run)
    onnx_file = tmp_path / "onet.int8.onnx"
    result = quantize.landmarker_speed(PROJECT_ROOT / "params.yaml", "onet", onnx_file, tmp_path, rounds=3)
    assert seen["ids"] == ["dlib", "onet", "onet_int8"] and seen["rounds"] == 3
    assert seen["spec"].kind == "cnn" and seen["spec"].options["checkpoint"] == str(onnx_file.resolve())
    assert set(result["methods"]) == {"dlib", "onet", "onet_int8"}
