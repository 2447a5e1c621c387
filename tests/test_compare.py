"""The compare stage's pieces on hand-made faces: alignment of predictions, breakdowns, NaN faces, metrics, rates."""
import numpy as np
import pandas as pd
import pytest

from flmlib import compare as C
from flmlib.config import TestSet as _TestSet  # (pytest would collect a class named Test... as tests)


def _split(n=6):
    rng = np.random.default_rng(0)
    gt = rng.uniform(20, 80, (n, 68, 2)).astype(np.float32)
    gt[:, 36], gt[:, 45] = (30, 40), (70, 40)  # inter-ocular distance 40 px
    return {"face_id": np.array([f"f{i}" for i in range(n)]), "landmarks_image": gt,
            "boxes": np.tile(np.array([[10, 10, 90, 90]], np.float32), (n, 1)),
            "person": np.array([f"p{i // 2}" for i in range(n)]), "subset": np.array(["a", "b"] * (n // 2)),
            "yaw": np.array([0, 35, -70, 10, np.nan, 400], np.float32)[:n]}


def test_predictions_must_cover_the_prepared_faces_in_order(tmp_path):
    split = _split()
    path = C.save_predictions(tmp_path / "m" / "t.npz", "m", "t", split["face_id"], split["landmarks_image"], 1.0)
    loaded = C.load_predictions(path)
    assert str(loaded["method"]) == "m" and float(loaded["seconds"]) == 1.0
    np.testing.assert_array_equal(C.aligned_points(loaded, split, "p"), split["landmarks_image"])
    shuffled = dict(loaded, face_id=loaded["face_id"][::-1])
    with pytest.raises(ValueError, match="predicted faces differ"):
        C.aligned_points(shuffled, split, "p")
    with pytest.raises(FileNotFoundError, match="predict stage"):
        C.load_predictions(tmp_path / "none.npz")
    np.testing.assert_array_equal(C.points_of_faces(loaded, ["f3", "f1"]), split["landmarks_image"][[3, 1]])


def test_breakdown_labels_follow_the_test_set_config():
    split = _split()
    assert C.breakdown_labels(split, _TestSet(source="300w", subsets=("a",), breakdown="subset")).tolist() == \
        ["a", "b"] * 3
    yaw = C.breakdown_labels(split, _TestSet(source="aflw2000", breakdown="yaw")).tolist()
    assert yaw == ["yaw 0-30°", "yaw 30-60°", "yaw ≥60°", "yaw 0-30°", "", "yaw 30-60°"]  # 400° wraps to 40°
    assert C.breakdown_labels(split, _TestSet(source="youtube")) is None


def test_an_unplaced_face_is_a_failure_and_counted():
    split = _split()
    good = split["landmarks_image"] + 1.0
    partial = good.copy()
    partial[2] = np.nan
    errors = C.error_table("t", split, {"ref": good, "m": partial}, groups=np.array(["g1", "g2"] * 3))
    m = errors[errors["method"] == "m"].set_index("face_id")
    assert np.isinf(m.loc["f2", "rmse_box"]) and np.isfinite(m.drop("f2")["rmse_box"]).all()
    assert set(errors["person"]) == {"p0", "p1", "p2"}
    detail = C.study_metrics(errors, "ref", ["rmse_box", "nme_interocular"], n_resamples=50, seed=0)
    entry = detail["t"]["all"]
    assert entry["methods"]["m"]["n_failed"] == 1 and entry["methods"]["ref"]["n_failed"] == 0
    # its mean is over the five faces it placed, which carry the same error as the reference's
    assert entry["methods"]["m"]["nme_interocular/mean"] == pytest.approx(entry["methods"]["ref"]["nme_interocular/mean"])
    assert entry["methods"]["m"]["rmse_box/fail@0.08"] == pytest.approx(1 / 6)
    assert entry["vs_reference"]["m"]["rmse_box/auc@0.08/diff"] < 0
    assert list(detail["t"]) == ["all", "g1", "g2"]
    regions = C.region_table("t", split, {"m": partial})
    assert "f2" not in set(regions["face_id"])


def test_detection_rates_per_test_set_and_yaw_bin():
    faces = pd.DataFrame({"source": ["aflw2000"] * 4 + ["300w"] * 2, "split": "test",
                          "subset": ["aflw2000"] * 4 + ["helen/testset", "afw"],
                          "yaw": [5, 20, 45, 80, np.nan, np.nan], "readable": [True, True, True, False, True, True],
                          "detected": [True, False, True, False, True, True]})
    rates = C.detection_rates(faces, {"aflw": _TestSet(source="aflw2000", breakdown="yaw"),
                                      "helen": _TestSet(source="300w", subsets=("helen/testset",), breakdown="subset")})
    assert rates["aflw"]["faces"] == 4 and rates["aflw"]["readable"] == 3 and rates["aflw"]["detected"] == 2
    assert rates["aflw"]["by_yaw"]["yaw 0-30°"] == {"faces": 2, "readable": 2, "detected": 1, "detection_rate": 0.5}
    assert rates["aflw"]["by_yaw"]["yaw ≥60°"]["detection_rate"] is None
    assert rates["helen"]["faces"] == 1 and list(rates["helen"]["by_subset"]) == ["helen/testset"]
