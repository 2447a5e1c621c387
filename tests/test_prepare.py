from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flmlib.crops import apply_affine, box_size, context_matrix
from flmlib.dataset import build_index, limit_per_subset
from flmlib.io import DataError
from flmlib.paths import PROJECT_ROOT, portable_path, project_path
from flmlib.config import TestSet as _TestSet  # (pytest would collect a class named Test... as tests)
from flmlib.detect import FallbackBoxModel
from flmlib.prepare import FaceResult, assemble, detect_all, detection_summary, load_split, save_outputs

TEST_SETS = {"test_300w_common": _TestSet(source="300w", subsets=("helen/testset", "lfpw/testset")),
             "test_aflw2000": _TestSet(source="aflw2000", breakdown="yaw"),
             "test_aflw2000_lmbox": _TestSet(source="aflw2000", boxes="landmarks", breakdown="yaw"),
             "test_youtube": _TestSet(source="youtube")}


@pytest.fixture(scope="module")
def tiny(data_root):
    index, _ = build_index(data_root)
    return limit_per_subset(index, 3)


def test_prepare_writes_consistent_splits(tiny, tmp_path):
    results = detect_all(tiny, upsample=1, iou_threshold=0.3, crop_size=96, context_factor=2.0, workers=2)
    faces, arrays = assemble(tiny, results, 96, 2.0, train_fallback_box=True, skip_bad_files=False,
                             test_sets=TEST_SETS)
    save_outputs(tmp_path, faces, arrays)
    summary = detection_summary(faces)
    assert sum(v["faces"] for v in summary["by_split"].values()) == len(tiny)
    assert len(arrays["test_aflw2000_lmbox"]["face_id"]) == int((tiny["source"] == "aflw2000").sum())
    for split in ("train", "val", *TEST_SETS):
        data = load_split(tmp_path / f"{split}.npz")
        n = len(data["face_id"])
        assert data["crops"].shape == (n, 96, 96, 3) and data["crops"].dtype == np.uint8
        for i in range(n):  # stored crop points are the image points through the stored box's crop matrix
            expected = apply_affine(data["landmarks_image"][i], context_matrix(data["boxes"][i], 96, 2.0))
            np.testing.assert_allclose(data["landmarks"][i], expected, atol=1e-3)
        if split.startswith("test") and TEST_SETS[split].boxes == "detector":
            assert data["detected"].all(), "detector-box test sets hold detected faces only"
    assert (box_size(faces[["x0", "y0", "x1", "y1"]].dropna().to_numpy()) > 0).all()
    written = pd.read_csv(tmp_path / "faces.csv")
    resolved = [project_path(p) for p in written["image_path"]]
    assert [p.resolve() for p in resolved] == [Path(p).resolve() for p in faces["image_path"]]
    inside = [Path(p).resolve().is_relative_to(PROJECT_ROOT) for p in faces["image_path"]]
    # Images inside the project are stored relative to it, so prepared/ does not depend on the clone's location.
    assert [not Path(p).is_absolute() for p in written["image_path"]] == inside


def test_portable_path_round_trips(tmp_path, monkeypatch):
    import flmlib.paths

    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    monkeypatch.setattr(flmlib.paths, "PROJECT_ROOT", root)
    inside = root / "data" / "300w" / "afw" / "x.jpg"
    assert portable_path(inside) == "data/300w/afw/x.jpg"
    assert project_path(portable_path(inside)) == inside
    assert portable_path("data/300w/afw/x.jpg") == "data/300w/afw/x.jpg"  # relative: from the project root
    outside = tmp_path / "y.jpg"
    assert portable_path(outside) == str(outside)
    target = tmp_path / "cache" / "ab12"
    target.parent.mkdir()
    target.write_bytes(b"jpeg")
    link = root / "data" / "linked.jpg"
    link.symlink_to(target)  # DVC's symlink cache type links data files into its cache like this
    assert portable_path(link) == "data/linked.jpg"


def test_unreadable_image_is_named_or_skipped(tiny, tmp_path):
    broken = tiny.head(2).copy()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    broken.loc[broken.index[0], "image_path"] = str(bad)
    results = detect_all(broken, 1, 0.3, 96, 2.0, workers=1)
    with pytest.raises(DataError, match=r"broken\.jpg"):
        assemble(broken, results, 96, 2.0, train_fallback_box=True, skip_bad_files=False)
    faces, arrays = assemble(broken, results, 96, 2.0, train_fallback_box=True, skip_bad_files=True)
    assert faces["readable"].tolist() == [False, True]
    assert faces["box_kind"].iloc[0] == "unreadable"
    assert sum(len(a["face_id"]) for a in arrays.values()) <= 1


def test_missing_prepared_split_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro prepare"):
        load_split(tmp_path / "train.npz")


def _face_image(path, size=200):
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image)
    return str(path)


def test_landmark_box_test_set_on_hand_made_faces(tmp_path):
    """Two detected training faces fit the fallback model; an AFLW-like test set then holds the detected face only
    with detector boxes, and both faces, with the fallback model's landmark-derived boxes, with boxes: landmarks."""
    square = np.stack(np.meshgrid(np.linspace(60, 140, 8), np.linspace(70, 150, 9)), -1).reshape(-1, 2)[:68]
    landmarks = [square.astype(np.float32) + shift for shift in (0.0, 5.0, -5.0, 10.0)]
    rows = [dict(face_id=f"300w/afw/{i}", image_path=_face_image(tmp_path / f"{i}.png"), source="300w", subset="afw",
                 person=f"p{i}", landmarks=landmarks[i], yaw=np.nan, split="train") for i in range(2)]
    rows += [dict(face_id=f"aflw2000-3d/images/{i}", image_path=_face_image(tmp_path / f"{i}.png"), source="aflw2000",
                  subset="aflw2000", person=f"a{i}", landmarks=landmarks[i], yaw=yaw, split="test")
             for i, yaw in ((2, 10.0), (3, 75.0))]
    index = pd.DataFrame(rows)
    detection = lambda lm, grow: np.array([lm[:, 0].min() - grow, lm[:, 1].min() - 2 * grow,  # noqa: E731
                                           lm[:, 0].max() + grow, lm[:, 1].max()], np.float32)
    results = []
    for i, row in index.iterrows():
        box = detection(row["landmarks"], 10.0) if i != 3 else None  # the turned test face is missed
        crop = np.zeros((96, 96, 3), np.uint8) if box is not None else None
        results.append(FaceResult(row["face_id"], n_detections=int(box is not None), iou=0.8 if box is not None else 0,
                                  box=box, crop=crop, matrix=context_matrix(box, 96, 2.0) if box is not None else None))
    sets = {"det": _TestSet(source="aflw2000", breakdown="yaw"),
            "lm": _TestSet(source="aflw2000", boxes="landmarks", breakdown="yaw")}
    faces, arrays = assemble(index, results, 96, 2.0, train_fallback_box=True, skip_bad_files=False, test_sets=sets)
    assert arrays["det"]["face_id"].tolist() == ["aflw2000-3d/images/2"]
    assert arrays["lm"]["face_id"].tolist() == ["aflw2000-3d/images/2", "aflw2000-3d/images/3"]
    np.testing.assert_array_equal(arrays["lm"]["yaw"], [10.0, 75.0])
    fitted = FallbackBoxModel.fit(np.stack([[lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()]
                                            for lm in landmarks[:2]]),
                                  np.stack([detection(lm, 10.0) for lm in landmarks[:2]]))
    for i, lm in enumerate(landmarks[2:]):
        np.testing.assert_allclose(arrays["lm"]["boxes"][i], fitted.box_for(lm), atol=1e-4)
    assert not arrays["lm"]["detected"].any()
    # the landmark box reproduces the detector's proportions: here it is the detection box of the same points
    np.testing.assert_allclose(arrays["lm"]["boxes"][0], detection(landmarks[2], 10.0), atol=1e-3)


def test_a_decompression_bomb_in_the_data_is_named_or_skipped(tiny, tmp_path):
    from conftest import write_png_bomb

    rows = tiny.head(2).copy()
    rows.loc[rows.index[0], "image_path"] = str(write_png_bomb(tmp_path / "bomb.png"))
    results = detect_all(rows, 1, 0.3, 96, 2.0, workers=1)
    with pytest.raises(DataError, match=r"bomb\.png: 60000 x 60000 pixels"):
        assemble(rows, results, 96, 2.0, train_fallback_box=True, skip_bad_files=False)
    faces, _ = assemble(rows, results, 96, 2.0, train_fallback_box=True, skip_bad_files=True)
    assert faces["readable"].tolist() == [False, True]
