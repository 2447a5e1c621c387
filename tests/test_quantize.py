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
