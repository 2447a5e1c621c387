"""flmlib.bench_batch: each method is built at each forward-pass size, timed against the reference in one run, and
the points of every size are compared; methods come from the study's configuration."""
import numpy as np
import pytest

from flmlib import bench_batch
from flmlib.bench_batch import cnn_methods, main, markdown, sweep
from flmlib.config import load_config
from flmlib.paths import PROJECT_ROOT

PARAMS = PROJECT_ROOT / "params.yaml"


class _Recorded:
    """A landmarker that records the batch_size it was built with and places every point at the box's corner."""

    def __init__(self, batch_size=None, shift=0.0):
        self.batch_size, self.shift = batch_size, shift

    def predict_batch(self, images, boxes_list):
        return [np.tile(np.asarray(b, np.float32)[:, None, :2] + self.shift, (1, 68, 1)) for b in boxes_list]


def test_every_method_is_built_at_every_size_and_timed_beside_the_reference(monkeypatch, tmp_path):
    built = []

    def build_method(spec, **overrides):
        built.append((spec.id, overrides.get("batch_size")))
        # the 16-image build of onet_half_40 places its points 0.5 px off: the sweep must report it
        shift = 0.5 if (spec.id, overrides.get("batch_size")) == ("onet_half_40", 16) else 0.0
        return _Recorded(overrides.get("batch_size"), shift)

    images = [np.zeros((8, 8, 3), np.uint8)] * 3
    boxes = np.array([[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]], np.float32)
    monkeypatch.setattr(bench_batch, "build_method", build_method)
    monkeypatch.setattr(bench_batch, "load_faces", lambda prepared: (images, boxes, ["a", "b", "c"]))
    result = sweep(["onet", "onet_half_40"], [64, 16], tmp_path, PARAMS, faces=5, rounds=2)
    study = load_config(PARAMS)
    assert built[0] == (study.reference, None)  # the reference method as the study defines it
    assert built[1:] == [("onet", 64), ("onet", 16), ("onet_half_40", 64), ("onet_half_40", 16)]
    assert result["sizes"] == [64, 16] and result["faces_per_call"] == 5 and result["reference"] == study.reference
    assert set(result["methods"]["onet"]["sizes"]) == {"64", "16"}
    assert result["methods"]["onet"]["largest_point_difference_px"] == 0.0
    assert result["methods"]["onet_half_40"]["largest_point_difference_px"] == pytest.approx(0.5)
    assert all(r["ms_per_face"] > 0 for m in result["methods"].values() for r in m["sizes"].values())


def test_by_default_every_cnn_method_of_the_leaderboard_and_nothing_else():
    study = load_config(PARAMS)
    methods = cnn_methods(study)
    assert methods and set(methods) <= set(study.leaderboard_ids)
    assert all(study.method_spec(m).kind == "cnn" for m in methods)
    assert study.reference not in methods  # dlib has no forward passes


def test_a_method_that_is_not_a_cnn_or_not_in_the_study_is_named(tmp_path, capsys):
    study = load_config(PARAMS)
    with pytest.raises(ValueError, match=study.reference):
        cnn_methods(study, [study.reference])
    assert main(["--methods", "no_such_method", "--params", str(PARAMS), "--prepared", str(tmp_path),
                 "--out", str(tmp_path / "b.json")]) == 2
    assert "no_such_method" in capsys.readouterr().err


def test_bad_sizes_and_missing_prepared_data_exit_with_a_message(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["--sizes", "0", "--params", str(PARAMS), "--prepared", str(tmp_path), "--out", str(out)]) == 2
    assert "sizes=[0]" in capsys.readouterr().err
    assert main(["--params", str(PARAMS), "--prepared", str(tmp_path / "absent"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert not out.exists()


def test_the_table_has_a_column_per_size_and_names_the_fastest():
    result = {"sizes": [256, 64], "faces_per_call": 256, "reference": "dlib", "reference_ms_per_face": 1.5,
              "rounds": 7, "torch_threads": 2, "environment": {"cpu": "Some CPU", "vector_isa": ["avx2"]},
              "methods": {"onet": {"sizes": {"256": {"ms_per_face": 0.7}, "64": {"ms_per_face": 0.37}},
                                   "fastest_size": 64, "largest_point_difference_px": 0.0}}}
    table = markdown(result)
    assert "| landmarker | 256 / pass | 64 / pass | fastest |" in table
    assert "| onet | 0.700 | 0.370 | 64 | 0.0000 |" in table
    assert "dlib: 1.500 ms per face" in table and "Some CPU (avx2)" in table
