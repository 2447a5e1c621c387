"""flmlib.bench_batch: the forward-pass size reaches every network of a landmarker, and the table reads its result."""
from types import SimpleNamespace

import pytest

from flmlib.bench_batch import main, markdown, set_batch_size


def test_the_size_reaches_both_networks_of_a_two_pass_method_and_a_single_network():
    two_pass = SimpleNamespace(first=SimpleNamespace(batch_size=256), second=SimpleNamespace(batch_size=256))
    set_batch_size(two_pass, 64)
    assert two_pass.first.batch_size == two_pass.second.batch_size == 64
    single = SimpleNamespace(batch_size=256)
    set_batch_size(single, 32)
    assert single.batch_size == 32


def test_a_method_without_networks_is_named():
    with pytest.raises(ValueError, match="no forward-pass size"):
        set_batch_size(SimpleNamespace(predict_batch=None), 64)


def test_bad_sizes_and_missing_prepared_data_exit_with_a_message(tmp_path, capsys):
    assert main(["--sizes", "0", "--prepared", str(tmp_path), "--out", str(tmp_path / "b.json")]) == 2
    assert "sizes=[0]" in capsys.readouterr().err
    assert main(["--prepared", str(tmp_path / "absent"), "--out", str(tmp_path / "b.json")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_the_table_has_a_column_per_size_and_names_the_fastest():
    result = {"sizes": [256, 64], "faces_per_call": 256, "reference": "dlib", "reference_ms_per_face": 1.5,
              "rounds": 7, "torch_threads": 2, "environment": {"cpu": "Some CPU", "vector_isa": ["avx2"]},
              "methods": {"onet": {"sizes": {"256": {"ms_per_face": 0.7}, "64": {"ms_per_face": 0.37}},
                                   "fastest_size": 64, "largest_point_difference_px": 0.0}}}
    table = markdown(result)
    assert "| landmarker | 256 / pass | 64 / pass | fastest |" in table
    assert "| onet | 0.700 | 0.370 | 64 | 0.0000 |" in table
    assert "dlib: 1.500 ms per face" in table and "Some CPU (avx2)" in table
