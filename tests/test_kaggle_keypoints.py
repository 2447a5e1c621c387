"""Kaggle's facial-keypoints CSV layout, and the 15 Kaggle points taken from the 68."""
import numpy as np
import pytest

from flmlib.kaggle_keypoints import (FROM_IBUG68, IMAGE_SIDE, KEYPOINTS, USUAL_FOUR, kaggle15_from_ibug68,
                                     read_kaggle_csv, write_kaggle_csv)
from flmlib.point_schemes import KAGGLE15, KAGGLE4, get_scheme
from flmlib.landmarks68 import MIRROR


def _faces(n=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, IMAGE_SIDE, IMAGE_SIDE)).astype(np.uint8)
    points = rng.uniform(10, 85, (n, 15, 2)).astype(np.float32)
    points[1:, [k for k in range(15) if k not in USUAL_FOUR]] = np.nan  # most faces keep the usual 4, as in Kaggle
    return images, points


def test_csv_round_trip_keeps_images_points_and_missing_cells(tmp_path):
    images, points = _faces()
    path = write_kaggle_csv(tmp_path / "training.csv", images, points)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:4] == ["left_eye_center_x", "left_eye_center_y", "right_eye_center_x", "right_eye_center_y"]
    assert header[-1] == "Image" and len(header) == 31
    faces = read_kaggle_csv(path)
    assert len(faces) == 5 and faces.images.dtype == np.uint8 and np.array_equal(faces.images, images)
    assert faces.valid.shape == (5, 15) and faces.valid[0].all() and faces.valid[1:].sum(axis=1).tolist() == [4] * 4
    assert np.allclose(faces.points[faces.valid], points[faces.valid], atol=1e-3)
    assert np.isnan(faces.points[~faces.valid]).all() and faces.complete().tolist() == [True] + [False] * 4
    assert len(read_kaggle_csv(path, limit=2)) == 2


def test_test_csv_without_keypoints_reads_images_and_ids(tmp_path):
    images, _ = _faces(2)
    lines = ["ImageId,Image"] + [f"{i + 1}," + " ".join(map(str, im.ravel())) for i, im in enumerate(images)]
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    faces = read_kaggle_csv(tmp_path / "test.csv")
    assert faces.image_id.tolist() == [1, 2] and not faces.valid.any()


@pytest.mark.parametrize("corrupt, message", [
    (lambda t: t.replace(",Image", ",Picture", 1), "no 'Image' column"),
    (lambda t: t.rsplit(" ", 1)[0], "row 4: Image has 9215 values"),
    (lambda t: t.replace(" 7 ", " 700 ", 1) if " 7 " in t else t.replace(" ", " 700 ", 1), "integers 0..255"),
])
def test_bad_files_name_the_file_and_row(tmp_path, corrupt, message):
    images, points = _faces()
    path = write_kaggle_csv(tmp_path / "training.csv", images, points)
    path.write_text(corrupt(path.read_text().rstrip("\n")) + "\n")
    with pytest.raises(ValueError, match=message) as info:
        read_kaggle_csv(path)
    assert "training.csv" in str(info.value)


def test_a_point_with_one_coordinate_or_outside_the_image_is_rejected(tmp_path):
    images, points = _faces(2)
    points[0, 10, 1] = np.nan  # nose tip with x only
    path = write_kaggle_csv(tmp_path / "half.csv", images, points)
    with pytest.raises(ValueError, match="half.csv: row 0: nose_tip has only one of x and y"):
        read_kaggle_csv(path)
    images, points = _faces(2)
    points[1, 0] = (120.0, 30.0)
    path = write_kaggle_csv(tmp_path / "out.csv", images, points)
    with pytest.raises(ValueError, match="row 1: left_eye_center .* outside"):
        read_kaggle_csv(path)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_kaggle_csv(tmp_path / "nowhere.csv")


def test_15_points_from_68_follow_the_kaggle_definitions():
    points68 = np.random.default_rng(0).uniform(0, 100, (3, 68, 2))
    k15 = kaggle15_from_ibug68(points68)
    assert k15.shape == (3, 15, 2)
    assert np.allclose(k15[:, 0], points68[:, 42:48].mean(axis=1))  # left eye centre: the subject's left eye
    assert np.allclose(k15[:, 3], points68[:, 45]) and np.allclose(k15[:, 5], points68[:, 36])  # outer corners
    assert np.allclose(k15[:, 14], points68[:, 57]) and np.allclose(k15[:, 10], points68[:, 30])
    assert len(FROM_IBUG68) == len(KEYPOINTS) == KAGGLE15.n_points
    with pytest.raises(ValueError, match="not \\(..., 68, 2\\)"):
        kaggle15_from_ibug68(np.zeros((2, 67, 2)))


def test_kaggle_flip_permutation_agrees_with_the_68_point_one():
    """Mirroring 68 points and then taking the 15 equals taking the 15 and mirroring with the Kaggle permutation."""
    points68 = np.random.default_rng(1).uniform(0, 100, (4, 68, 2))
    mirrored68 = points68[:, MIRROR] * [-1, 1]
    assert np.allclose(kaggle15_from_ibug68(mirrored68), kaggle15_from_ibug68(points68)[:, KAGGLE15.mirror] * [-1, 1])
    four = kaggle15_from_ibug68(points68)[:, list(USUAL_FOUR)]
    assert np.allclose(four[:, KAGGLE4.mirror] * [-1, 1], kaggle15_from_ibug68(mirrored68)[:, list(USUAL_FOUR)])
    assert get_scheme("kaggle15") is KAGGLE15
