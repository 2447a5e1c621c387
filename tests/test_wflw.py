"""WFLW annotation lists (flmlib.wflw) and the point schemes that travel with them (flmlib.point_schemes)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flmlib import landmarks68
from flmlib.io import DataError
from flmlib.point_schemes import SCHEMES, WFLW98, PointScheme, get_scheme, to_ibug68
from flmlib.wflw import ATTRIBUTES, _parse_fast, _parse_slow, read_wflw_annotations, wflw_to_ibug68

# ---------------------------------------------------------------------------------------------------------- schemes


def flip(points: np.ndarray, mirror: np.ndarray, width: float) -> np.ndarray:
    """Landmarks of the horizontally flipped image (width ``width``, 0-based pixel centres: x -> width - 1 - x)."""
    out = np.array(points, dtype=np.float64)[..., mirror, :]
    out[..., 0] = width - 1 - out[..., 0]
    return out


@pytest.mark.parametrize("name", ["ibug68", "wflw98"])
def test_mirror_is_an_involution(name):
    scheme = get_scheme(name)
    assert scheme.mirror.shape == (scheme.n_points,) and scheme.mirror.dtype == np.int64
    np.testing.assert_array_equal(scheme.mirror[scheme.mirror], np.arange(scheme.n_points))
    assert not scheme.mirror.flags.writeable


def test_ibug68_scheme_reuses_landmarks68():
    scheme = SCHEMES["ibug68"]
    np.testing.assert_array_equal(scheme.mirror, landmarks68.MIRROR)
    assert scheme.outer_eye_corners == landmarks68.OUTER_EYE_CORNERS
    np.testing.assert_array_equal(scheme.to_ibug68, np.arange(68))


def test_mapping_commutes_with_flipping_for_any_face():
    """to_ibug68(flip98(p)) == flip68(to_ibug68(p)): the 98 -> 68 map and the two mirror tables agree."""
    p98 = np.random.default_rng(0).uniform(0, 400, size=(5, 98, 2))
    width = 400
    left = to_ibug68(flip(p98, WFLW98.mirror, width), "wflw98")
    right = flip(to_ibug68(p98, "wflw98"), landmarks68.MIRROR, width)
    np.testing.assert_array_equal(left, right)


def test_symmetric_98_point_face_maps_to_symmetric_68_point_face():
    # Build a face symmetric about x = c: one point of each mirror pair is random, the other its reflection; the
    # points that are their own mirror image sit on the axis.
    rng = np.random.default_rng(1)
    c = 150.0
    p98 = rng.uniform(0, 300, size=(98, 2))
    for k, m in enumerate(WFLW98.mirror):
        if m == k:
            p98[k, 0] = c
        elif k < m:
            p98[m] = (2 * c - p98[k, 0], p98[k, 1])
    width = 2 * c + 1  # the flip x -> width - 1 - x reflects about c
    np.testing.assert_allclose(flip(p98, WFLW98.mirror, width), p98)
    p68 = to_ibug68(p98, "wflw98")
    np.testing.assert_allclose(flip(p68, landmarks68.MIRROR, width), p68)


def test_outer_eye_corners_map_to_ibug_outer_eye_corners():
    assert WFLW98.outer_eye_corners == (60, 72)
    mapped = [int(np.flatnonzero(WFLW98.to_ibug68 == i)[0]) for i in WFLW98.outer_eye_corners]
    assert tuple(mapped) == landmarks68.OUTER_EYE_CORNERS == (36, 45)


def test_to_ibug68_maps_points_and_validity_mask():
    points = np.arange(2 * 98 * 2, dtype=np.float32).reshape(2, 98, 2)
    valid = np.ones((2, 98), bool)
    valid[1, 16] = False  # WFLW's chin, iBUG's 8
    valid[1, 62] = False  # a dropped eye-lid point: leaves no trace
    p68, v68 = to_ibug68(points, "wflw98", valid)
    assert p68.shape == (2, 68, 2) and p68.dtype == np.float32 and v68.shape == (2, 68)
    np.testing.assert_array_equal(p68[:, 8], points[:, 16])
    assert v68[0].all() and not v68[1, 8] and v68[1].sum() == 67
    with pytest.raises(ValueError, match="validity mask"):
        to_ibug68(points, "wflw98", valid[:, :68])
    with pytest.raises(ValueError, match=r"\(\.\.\., 98, 2\)"):
        to_ibug68(points[:, :68], "wflw98")


def test_unknown_scheme_lists_known_names():
    with pytest.raises(ValueError, match="ibug68, kaggle15, kaggle4, wflw98"):
        get_scheme("helen194")


def test_scheme_rejects_a_mirror_that_is_not_an_involution():
    with pytest.raises(ValueError, match="involution"):
        PointScheme(name="bad", n_points=3, mirror=np.array([1, 2, 0]), outer_eye_corners=(0, 0))


# ------------------------------------------------------------------------------------------------------------- wflw

NAMES = ["51--Dancing/51_Dancing_Dancing_51_560.jpg", "51--Dancing/51_Dancing_Dancing_51_560.jpg",
         "0--Parade/0_Parade_marchingband_1_116.jpg", "12--Group/12_Group_Group_12_Group_Group_12_10.jpg"]
BOXES = [(292, 520, 425, 660), (10, 20, 110, 140), (0, 0, 63, 63), (5, 6, 7, 8)]
FLAGS = [(1, 0, 0, 0, 0, 0), (0, 1, 0, 1, 0, 0), (0, 0, 0, 0, 1, 1), (0, 0, 1, 0, 0, 0)]


def face_points(i: int) -> np.ndarray:
    """``(98, 2)``: distinct, non-integer coordinates (x and y of every point differ) for face ``i``."""
    return (np.arange(196).reshape(98, 2) * 1.5 + 0.25 + 100.0 * i).astype(np.float32)


def annotation_line(i: int) -> list[str]:
    return ([f"{v:.6f}" for v in face_points(i).ravel()] + [str(v) for v in BOXES[i]]
            + [str(v) for v in FLAGS[i]] + [NAMES[i]])


def write_list(path: Path, lines: list[list[str]]) -> Path:
    path.write_text("".join(" ".join(fields) + "\n" for fields in lines))
    return path


@pytest.fixture
def wflw_list(tmp_path) -> Path:
    return write_list(tmp_path / "list_98pt_rect_attr_train.txt", [annotation_line(i) for i in range(4)])


def test_values_are_parsed(wflw_list, tmp_path):
    frame = read_wflw_annotations(wflw_list, tmp_path / "WFLW_images")
    assert list(frame.columns) == ["face_id", "image_path", "landmarks", "box", *ATTRIBUTES, "scheme"]
    assert len(frame) == 4
    for i, row in frame.iterrows():
        assert row.landmarks.shape == (98, 2) and row.landmarks.dtype == np.float32
        np.testing.assert_allclose(row.landmarks, face_points(i), atol=1e-4)  # 0-based already: no offset
        x_min, y_min, x_max, y_max = BOXES[i]
        assert row.box.dtype == np.float32
        np.testing.assert_array_equal(row.box, [x_min - 0.5, y_min - 0.5, x_max + 0.5, y_max + 0.5])
        assert row.image_path == str(tmp_path / "WFLW_images" / NAMES[i])
        assert [bool(row[a]) for a in ATTRIBUTES] == [bool(f) for f in FLAGS[i]]
        assert row.scheme == "wflw98"
    assert frame["pose"].dtype == bool


def test_face_ids_are_distinct_for_two_faces_of_one_image(wflw_list, tmp_path):
    frame = read_wflw_annotations(wflw_list, tmp_path)
    assert frame.image_path[0] == frame.image_path[1]
    assert frame.face_id[0] == f"wflw/{NAMES[0]}#0" and frame.face_id[1] == f"wflw/{NAMES[0]}#1"
    assert frame.face_id.is_unique


def test_fast_and_line_by_line_parsers_agree(wflw_list):
    text = wflw_list.read_text()
    fast = _parse_fast(text, 4)
    assert fast is not None
    slow = _parse_slow(wflw_list, text)
    np.testing.assert_array_equal(fast[0], slow[0])
    assert fast[1] == slow[1] == NAMES


def test_mapping_to_ibug68_gives_the_expected_points(wflw_list, tmp_path):
    frame = read_wflw_annotations(wflw_list, tmp_path)
    mapped = wflw_to_ibug68(frame)
    # iBUG index -> WFLW index for the landmarks a reader can check by eye: jaw ends and chin, brow ends, nose
    # bridge top and tip, eye corners, mouth corners.
    expected = {0: 0, 8: 16, 16: 32, 17: 33, 21: 37, 22: 42, 26: 46, 27: 51, 30: 54, 33: 57,
                36: 60, 39: 64, 42: 68, 45: 72, 48: 76, 54: 82, 60: 88, 64: 92, 67: 95}
    for i in range(len(frame)):
        p98, p68 = frame.landmarks[i], mapped.landmarks[i]
        assert p68.shape == (68, 2) and p68.dtype == np.float32
        for k68, k98 in expected.items():
            np.testing.assert_array_equal(p68[k68], p98[k98])
    assert (mapped.scheme == "ibug68").all() and (frame.scheme == "wflw98").all()  # the input is left alone
    assert frame.landmarks[0].shape == (98, 2)
    pd.testing.assert_frame_equal(mapped.drop(columns=["landmarks", "scheme"]),
                                  frame.drop(columns=["landmarks", "scheme"]))
    with pytest.raises(ValueError, match="wflw98"):
        wflw_to_ibug68(mapped)


def _replace(fields: list[str], index: int, value: str) -> list[str]:
    fields = list(fields)
    fields[index] = value
    return fields


BAD_LINES = {
    "missing field": (lambda f: f[:100] + f[101:], "has 206 fields, expected 207"),
    "extra field": (lambda f: f[:-1] + ["1.0"] + f[-1:], "has 208 fields, expected 207"),
    "missing image name": (lambda f: f[:-1], "has 206 fields"),
    "non-numeric coordinate": (lambda f: _replace(f, 7, "12.5x"), "non-numeric value '12.5x'"),
    "non-numeric flag": (lambda f: _replace(f, 203, "yes"), "non-numeric value 'yes'"),
    "nan coordinate": (lambda f: _replace(f, 10, "nan"), "non-finite landmark coordinate"),
    "inf coordinate": (lambda f: _replace(f, 195, "inf"), "non-finite landmark coordinate"),
    "flag 2": (lambda f: _replace(f, 205, "2"), "attribute flags .* must be 0 or 1"),
    "flag 0.5": (lambda f: _replace(f, 200, "0.5"), "attribute flags .* must be 0 or 1"),
    "fractional box": (lambda f: _replace(f, 196, "10.5"), "box values must be whole"),
    "inverted box": (lambda f: _replace(f, 198, "-1"), "box has x_max < x_min"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_raises_naming_file_and_line(tmp_path, case):
    corrupt, message = BAD_LINES[case]
    lines = [annotation_line(i) for i in range(4)]
    lines[2] = corrupt(lines[2])
    path = write_list(tmp_path / "list_98pt_rect_attr_test.txt", lines)
    with pytest.raises(DataError, match=rf"list_98pt_rect_attr_test\.txt: line 3: {message}"):
        read_wflw_annotations(path, tmp_path)


def test_line_numbers_count_blank_lines(tmp_path):
    lines = [annotation_line(0), [], annotation_line(1), _replace(annotation_line(2), 0, "nan")]
    path = write_list(tmp_path / "gaps.txt", lines)
    with pytest.raises(DataError, match=r"gaps\.txt: line 4: non-finite"):
        read_wflw_annotations(path, tmp_path)
    frame = read_wflw_annotations(write_list(tmp_path / "ok.txt", lines[:3]), tmp_path)
    assert list(frame.face_id) == [f"wflw/{NAMES[0]}#0", f"wflw/{NAMES[1]}#2"]


def test_missing_and_empty_files_raise(tmp_path):
    with pytest.raises(DataError, match=r"absent\.txt: cannot read"):
        read_wflw_annotations(tmp_path / "absent.txt", tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.txt: no annotation lines"):
        read_wflw_annotations(tmp_path / "empty.txt", tmp_path)
