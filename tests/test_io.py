import cv2
import numpy as np
import pandas as pd
import pytest

from flmlib.io import DataError, read_image, read_keypoints_csv, read_pts, write_json
from tests.conftest import write_pts


def test_pts_is_converted_from_1_based_to_0_based(tmp_path):
    points = np.arange(136, dtype=np.float32).reshape(68, 2) + 1.0  # 1-based, as in 300-W
    landmarks = read_pts(write_pts(tmp_path / "face.pts", points))
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    np.testing.assert_allclose(landmarks, points - 1.0)


def test_real_pts_file_is_inside_its_image(data_root):
    pts = sorted((data_root / "300w/helen/testset").glob("*.pts"))[0]
    landmarks = read_pts(pts)
    height, width = read_image(pts.with_suffix(".jpg")).shape[:2]
    assert (landmarks >= -1).all() and (landmarks[:, 0] <= width).all() and (landmarks[:, 1] <= height).all()


def test_pts_with_67_points_names_the_file(tmp_path):
    path = write_pts(tmp_path / "short.pts", np.ones((67, 2)))
    with pytest.raises(DataError, match=r"short\.pts.*n_points is 67"):
        read_pts(path)


def test_pts_whose_body_disagrees_with_header(tmp_path):
    path = write_pts(tmp_path / "liar.pts", np.ones((67, 2)), header_n=68)
    with pytest.raises(DataError, match=r"liar\.pts: has 67 points"):
        read_pts(path)


def test_pts_with_non_numeric_coordinate(tmp_path):
    path = write_pts(tmp_path / "bad.pts", np.ones((68, 2)))
    path.write_text(path.read_text().replace("1.000 1.000", "1.000 abc", 1))
    with pytest.raises(DataError, match=r"bad\.pts: non-numeric"):
        read_pts(path)


def test_pts_without_braces(tmp_path):
    path = tmp_path / "junk.pts"
    path.write_text("hello\n")
    with pytest.raises(DataError, match=r"junk\.pts: not a \.pts file"):
        read_pts(path)


def _csv(path, rows):
    columns = [""] + [str(i) for i in range(136)]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def test_keypoint_csv_reads_0_based_pixels(tmp_path):
    coords = list(np.arange(136, dtype=float))
    table, skipped = read_keypoints_csv(_csv(tmp_path / "k.csv", [["A_B_01.jpg", *coords]]))
    assert skipped == []
    assert list(table["name"]) == ["A_B_01.jpg"]
    np.testing.assert_array_equal(table["landmarks"][0], np.arange(136, dtype=np.float32).reshape(68, 2))


def test_keypoint_csv_row_with_missing_value_is_named(tmp_path):
    coords = list(np.arange(136, dtype=float))
    broken = list(coords)
    broken[7] = None
    path = _csv(tmp_path / "k.csv", [["good_01.jpg", *coords], ["broken_02.jpg", *broken]])
    with pytest.raises(DataError, match=r"k\.csv: row 3 \('broken_02\.jpg'\)"):
        read_keypoints_csv(path)
    table, skipped = read_keypoints_csv(path, skip_bad_rows=True)
    assert table["name"].tolist() == ["good_01.jpg"]
    assert len(skipped) == 1 and "row 3 ('broken_02.jpg')" in skipped[0]


def test_keypoint_csv_with_wrong_column_count(tmp_path):
    path = tmp_path / "narrow.csv"
    pd.DataFrame({"name": ["a.jpg"], "x": [1.0]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"narrow\.csv: has 2 columns"):
        read_keypoints_csv(path)


def test_unreadable_and_missing_images_are_named(tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"fake\.jpg: not a readable image"):
        read_image(fake)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jpg: not a readable image"):
        read_image(empty)
    with pytest.raises(DataError, match=r"gone\.jpg: image file not found"):
        read_image(tmp_path / "gone.jpg")


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"x": float("nan")})
    assert write_json(tmp_path / "sub" / "m.json", {"x": 1}).read_text().strip().endswith("}")


def test_image_size_is_checked_before_decoding(tmp_path, monkeypatch):
    from conftest import write_png_bomb

    from flmlib.io import read_image

    bomb = write_png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    with pytest.raises(DataError, match=r"bomb\.png: 60000 x 60000 pixels is more than the limit.*FLM_MAX_IMAGE_PIXELS"):
        read_image(bomb)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((30, 40, 3), np.uint8))
    assert read_image(small).shape == (30, 40, 3)
    monkeypatch.setenv("FLM_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match="40 x 30 pixels is more than the limit of 1,000"):
        read_image(small)
    monkeypatch.setenv("FLM_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="FLM_MAX_IMAGE_PIXELS='lots'"):
        read_image(small)
