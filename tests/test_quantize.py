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
    from pathlib import Path

    from flmlib import quantize, speed
    from flmlib.config import load_config
    from flmlib.paths import PROJECT_ROOT

    seen = {}
    timings = {"methods": {}}  # what flmlib.speed.run returns; landmarker_speed hands it on

    def fake_run(method_ids, prepared, params_path, rounds=5, **kwargs):
        study = load_config(params_path)  # the temporary copy must be a valid study configuration
        seen.update(ids=list(method_ids), spec=study.method_spec(method_ids[-1]), rounds=rounds,
                    params=Path(params_path))
        return timings

    monkeypatch.setattr(speed, "run", fake_run)
    onnx_file = tmp_path / "onet.int8.onnx"
    params = PROJECT_ROOT / "params.yaml"
    before = params.read_text()
    result = quantize.landmarker_speed(params, "onet", onnx_file, tmp_path, rounds=3)
    assert seen["ids"] == ["dlib", "onet", "onet_int8"] and seen["rounds"] == 3
    assert seen["spec"].kind == "cnn" and seen["spec"].options["checkpoint"] == str(onnx_file.resolve())
    assert result is timings
    # the int8 method lived in a copy that is gone afterwards; the study's params.yaml is untouched
    assert seen["params"] != params and not seen["params"].exists() and params.read_text() == before


def _trained_onet(tmp_path, epochs=1):
    train = write_synthetic_split(tmp_path / "train.npz", 64, seed=0)
    val = write_synthetic_split(tmp_path / "val.npz", 16, seed=1)
    config = T.TrainConfig(epochs=epochs, batch_size=16, threads=1, device="cpu")
    T.train(config, train, val, tmp_path / "onet.pt", tmp_path / "ckpt", progress=False)
    return tmp_path / "onet.pt"


def _int8_weights(path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
            if t.data_type == onnx.TensorProto.INT8]


def test_int8_weights_use_7_bits_unless_full_range_is_asked_for(tmp_path):
    model = _trained_onet(tmp_path)
    calibration = network_inputs(synthetic_arrays(64, seed=2), 48)
    portable, _ = quantize_model(model, calibration, tmp_path / "portable.onnx")
    full, _ = quantize_model(model, calibration, tmp_path / "full.onnx", full_range=True)
    portable_peak = max(int(np.abs(w.astype(int)).max()) for w in _int8_weights(portable))
    full_peak = max(int(np.abs(w.astype(int)).max()) for w in _int8_weights(full))
    assert portable_peak <= 64 < full_peak  # 7 bits: products of uint8 activations cannot saturate 16-bit pair sums


def test_int8_model_agrees_with_float_where_full_range_weights_would_saturate(tmp_path):
    """A first convolution whose weights are all alike and positive: with 8-bit weights, the pair sums of uint8
    activations times int8 weights overflow 16 bits on an x86 CPU without VNNI (AVX2), and the points go wrong
    there (this test then fails for full-range weights; on a CPU with VNNI both pass). The default file must agree
    with float within the tolerance on any CPU."""
    import torch

    blob = torch.load(_trained_onet(tmp_path), weights_only=True)
    first_conv = next(k for k, v in blob["state_dict"].items() if v.ndim == 4)
    blob["state_dict"][first_conv] = torch.full_like(blob["state_dict"][first_conv], 0.1)
    torch.save(blob, tmp_path / "alike.pt")
    int8_path, float_bytes = quantize_model(tmp_path / "alike.pt", network_inputs(synthetic_arrays(64, seed=2), 48),
                                            tmp_path / "alike.int8.onnx")
    images = network_inputs(synthetic_arrays(32, seed=3), 48)
    difference = np.abs(run_session(onnx_session(int8_path), images) - run_session(onnx_session(float_bytes), images))
    assert difference.max() < TOLERANCE_BOX_UNITS, difference.max()
