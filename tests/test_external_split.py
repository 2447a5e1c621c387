"""Splits from a user's Kaggle CSV or WFLW list train like the study's own (synthetic files in those layouts)."""
import cv2
import numpy as np
import pytest

from flmlib import train as T
from flmlib.external_split import kaggle_split, main, wflw_split
from flmlib.kaggle_keypoints import write_kaggle_csv
from flmlib.models import load_trained
from flmlib.point_schemes import get_scheme

TRAIN = dict(epochs=1, batch_size=8, threads=1, device="cpu")


def _kaggle_faces(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 96, 96), dtype=np.uint8)
    points = rng.uniform(25, 70, (n, 15, 2)).astype(np.float32)
    points[n // 2 :, 4:] = np.nan            # half the faces carry the usual 4 points only
    return images, points


def test_a_kaggle_csv_becomes_a_masked_15_point_split_that_trains(tmp_path):
    csv = write_kaggle_csv(tmp_path / "training.csv", *_kaggle_faces(24))
    train_path, val_path = kaggle_split(csv, tmp_path / "external" / "kaggle", val_share=0.25)
    split = T.load_training_split(train_path)
    assert split.scheme.name == "kaggle15" and len(split) == 18 and not split.complete
    assert set(split.source_of()) == {"kaggle"} and split.crops.shape == (18, 3, 96, 96)
    with np.load(train_path) as data:  # the box is the image's central square of side 96 / 1.5 = 64 px
        np.testing.assert_allclose(data["boxes"][0], [15.5, 15.5, 79.5, 79.5])
    with np.load(val_path) as data:  # validation scores inter-ocular NME: its faces have both outer eye corners
        assert data["valid"][:, list(get_scheme("kaggle15").outer_eye_corners)].all()
    T.train(T.TrainConfig(**TRAIN), train_path, val_path, tmp_path / "k.pt", tmp_path / "ck", progress=False)
    _, config = load_trained(tmp_path / "k.pt")
    assert config["n_points"] == 15 and config["point_scheme"] == "kaggle15"


def test_a_test_csv_without_keypoints_is_refused(tmp_path):
    images, points = _kaggle_faces(4)
    csv = write_kaggle_csv(tmp_path / "test.csv", images, np.full_like(points, np.nan))
    assert main(["kaggle", str(csv), "--out", str(tmp_path / "out")]) == 2


def _wflw_files(tmp_path, n: int = 12):
    """n images of 160 px with a 98-point face each, in WFLW's list layout."""
    rng = np.random.default_rng(1)
    root = tmp_path / "WFLW_images"
    (root / "0--Parade").mkdir(parents=True)
    lines = []
    base = np.column_stack([np.linspace(40, 120, 98), 60 + 30 * np.sin(np.linspace(0, 6, 98))])
    for i in range(n):
        name = f"0--Parade/face_{i}.jpg"
        cv2.imwrite(str(root / name), rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
        points = base + rng.normal(0, 1, base.shape)
        fields = [f"{v:.3f}" for v in points.ravel()] + ["35", "25", "125", "125"] + ["0"] * 6 + [name]
        lines.append(" ".join(fields))
    path = tmp_path / "list_98pt_rect_attr_train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, root


@pytest.mark.parametrize("scheme, n_points", [("ibug68", 68), ("wflw98", 98)])
def test_a_wflw_list_becomes_a_split_in_either_scheme_that_trains(tmp_path, scheme, n_points):
    list_path, root = _wflw_files(tmp_path)
    train_path, val_path = wflw_split(list_path, root, tmp_path / "external" / scheme, scheme=scheme, val_share=0.25)
    split = T.load_training_split(train_path)
    assert split.scheme.name == scheme and split.points.shape == (9, n_points, 2) and split.complete
    assert set(split.source_of()) == {"wflw"}
    T.train(T.TrainConfig(**TRAIN), train_path, val_path, tmp_path / "w.pt", tmp_path / "ck", progress=False)
    _, config = load_trained(tmp_path / "w.pt")
    assert config["n_points"] == n_points and config["point_scheme"] == scheme
