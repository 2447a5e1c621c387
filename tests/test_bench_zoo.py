"""The full-zoo training-time benchmark: timed epochs on synthetic faces, extrapolated to each recipe."""
import json

import numpy as np
import pytest

from flmlib import bench_zoo
from flmlib.train import load_training_split


def test_timing_split_has_the_requested_shape(tmp_path):
    path = bench_zoo.write_timing_split(tmp_path / "s.npz", n=150, crop_size=64, context_factor=2.0, seed=0)
    split = load_training_split(path)
    assert len(split) == 150 and split.crop_size == 64
    assert tuple(split.crops.shape) == (150, 3, 64, 64)
    assert len(set(split.face_id)) == 150  # repeated pool faces still get their own ids


def test_estimate_extrapolates_the_recipe(tmp_path):
    report = bench_zoo.main(["--models", "onet", "net2", "--epochs", "2", "--train-faces", "40", "--val-faces", "8",
                             "--out", str(tmp_path / "bz")])
    saved = json.loads((tmp_path / "bz.json").read_text())
    assert [row["model"] for row in saved["models"]] == ["onet", "net2"]
    for row in saved["models"]:
        seconds = row["epoch_seconds"]
        assert len(seconds) == 2 and all(s > 0 for s in seconds)
        expected = sum(seconds) + (row["recipe_epochs"] - 2) * seconds[1]
        assert row["estimated_minutes"] == pytest.approx(expected / 60)
    # zoo.yaml gives O-Net the original 600-epoch recipe and Net2 the Kaggle project's 100 epochs
    assert {r["model"]: r["recipe_epochs"] for r in saved["models"]} == {"onet": 600, "net2": 100}
    assert saved["total_minutes"] == pytest.approx(sum(r["estimated_minutes"] for r in saved["models"]))
    assert report["total_minutes"] == saved["total_minutes"]
    assert "| net2 | 96 | kaggle | 100 |" in (tmp_path / "bz.md").read_text()


def test_unknown_model_and_too_few_epochs_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        bench_zoo.main(["--models", "no_such_model", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        bench_zoo.main(["--epochs", "1", "--out", str(tmp_path / "x")])
    assert not np.any([p.exists() for p in (tmp_path / "x.json", tmp_path / "x.md")])


def test_whole_recipe_is_measured_not_extrapolated(tmp_path):
    report = bench_zoo.main(["--models", "onet_youtube_jaw_masked", "--params", "params.yaml", "--zoo", "",
                             "--epochs", "1000", "--train-faces", "16", "--val-faces", "4", "--out",
                             str(tmp_path / "bz")])
    (row,) = report["models"]
    assert row["epochs_timed"] == row["recipe_epochs"] == 40
    assert row["estimated_minutes"] == pytest.approx(sum(row["epoch_seconds"]) / 60)


def test_split_sizes_default_to_the_prepared_splits(tmp_path, monkeypatch):
    """Without --train-faces/--val-faces the sizes come from prepared/*.npz; without those files the flag is named."""
    import argparse

    parser = argparse.ArgumentParser()
    path = bench_zoo.write_timing_split(tmp_path / "train.npz", n=37, crop_size=32, context_factor=2.0, seed=0)
    assert bench_zoo.split_size(path, parser, "train_faces") == 37
    with pytest.raises(SystemExit):
        bench_zoo.split_size(tmp_path / "missing.npz", parser, "val_faces")
