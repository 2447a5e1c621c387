"""Metric values on hand-made faces: every expected number below is derived in the comments, not remembered."""
import json

import numpy as np
import pandas as pd
import pytest

from flmlib import metrics as M

# A hand-made face. Outer eye corners 36 = (10, 50) and 45 = (90, 50): inter-ocular distance 80.
# Right eye 36-41 is symmetric about (25, 50), left eye 42-47 about (75, 50): inter-pupil distance 50.
# Extremes: x from 0 (point 0) to 100 (point 16), y from 20 (point 24) to 120 (point 8): gt box 100 x 100.
# Detection box (10, 10, 90, 135): w 80, h 125, sqrt(w*h) = 100.
RIGHT_EYE = [(10, 50), (20, 45), (30, 45), (40, 50), (30, 55), (20, 55)]
LEFT_EYE = [(60, 50), (70, 45), (80, 45), (90, 50), (80, 55), (70, 55)]
INTEROCULAR, INTERPUPIL, GTBOX, DETBOX = 80.0, 50.0, 100.0, 100.0
BOX = np.array([10, 10, 90, 135], np.float32)


def make_face(seed=0):
    rng = np.random.default_rng(seed)
    face = np.column_stack([rng.uniform(11, 89, 68), rng.uniform(25, 110, 68)])
    face[36:42] = RIGHT_EYE
    face[42:48] = LEFT_EYE
    face[0], face[16], face[8], face[24] = (0, 40), (100, 40), (50, 120), (70, 20)
    return face.astype(np.float32)


def make_faces(n=3):
    gt = np.stack([make_face(i) for i in range(n)])
    boxes = np.repeat(BOX[None], n, axis=0)
    return gt, boxes


def test_hand_made_face_has_the_documented_normalisers():
    gt, boxes = make_faces(2)
    np.testing.assert_allclose(M.interocular(gt), INTEROCULAR)
    np.testing.assert_allclose(M.interpupil(gt), INTERPUPIL)
    np.testing.assert_allclose(M.gt_box_size(gt), GTBOX)
    np.testing.assert_allclose(M.detection_box_size(gt, boxes), DETBOX)


@pytest.mark.parametrize("name", list(M.NORMALISED_ERRORS))
def test_perfect_prediction_gives_zero_error_auc_one_no_failures(name):
    gt, boxes = make_faces(4)
    errors = M.NORMALISED_ERRORS[name](gt.copy(), gt, boxes)
    np.testing.assert_array_equal(errors, 0.0)
    for t in M.THRESHOLDS:
        assert M.auc(errors, t) == 1.0
        assert M.failure_rate(errors, t) == 0.0
    s = M.summary(errors)
    assert s["mean"] == 0.0 and s["median"] == 0.0 and s["auc@0.08"] == 1.0 and s["fail@0.10"] == 0.0


# A uniform shift of (3, 4) px moves every point by 5 px, so RMSE = mean distance = 5 px.
@pytest.mark.parametrize(
    "name, expected",
    [("rmse_box", 5 / DETBOX), ("nme_interocular", 5 / INTEROCULAR), ("nme_interpupil", 5 / INTERPUPIL),
     ("nme_gtbox", 5 / GTBOX)],
)
def test_known_shift_gives_known_error(name, expected):
    gt, boxes = make_faces(3)
    pred = gt + np.array([3, 4], np.float32)
    np.testing.assert_allclose(M.NORMALISED_ERRORS[name](pred, gt, boxes), expected, rtol=1e-6)


def test_rmse_differs_from_mean_error_for_uneven_shifts():
    # Half the points move by (6, 8) = 10 px, half stay: mean distance 5 px, RMSE sqrt(100 / 2) px.
    gt, boxes = make_faces(2)
    pred = gt.copy()
    pred[:, :34] += np.array([6, 8], np.float32)
    np.testing.assert_allclose(M.rmse_box(pred, gt, boxes), np.sqrt(50) / DETBOX, rtol=1e-6)
    np.testing.assert_allclose(M.nme_gtbox(pred, gt, boxes), 5 / GTBOX, rtol=1e-6)


def test_all_errors_covers_the_registry():
    gt, boxes = make_faces(2)
    out = M.all_errors(gt + 1, gt, boxes)
    assert list(out) == list(M.NORMALISED_ERRORS)
    assert all(v.shape == (2,) for v in out.values())


def test_rmse_box_without_boxes_is_a_clear_error():
    gt, _ = make_faces(1)
    with pytest.raises(ValueError, match="needs boxes"):
        M.rmse_box(gt, gt)


def test_nan_prediction_names_count_and_indices():
    gt, boxes = make_faces(6)
    pred = gt.copy()
    pred[2, 5, 0] = np.nan
    pred[5, 0, 1] = np.inf
    for fn in M.NORMALISED_ERRORS.values():
        with pytest.raises(ValueError, match=r"2 of 6 faces \(indices 2, 5\)"):
            fn(pred, gt, boxes)


def test_nan_prediction_with_fail_policy_counts_as_failure():
    gt, boxes = make_faces(4)
    pred = gt.copy()
    pred[1, 0, 0] = np.nan
    errors = M.nme_interocular(pred, gt, boxes, nonfinite="fail")
    assert np.isinf(errors[1]) and (errors[[0, 2, 3]] == 0).all()
    assert M.failure_rate(errors, 0.08) == 0.25
    assert M.auc(errors, 0.08) == 0.75


def test_shape_mismatch_is_a_clear_error():
    gt, boxes = make_faces(2)
    with pytest.raises(ValueError, match="pred has shape"):
        M.nme_gtbox(gt[:, :60], gt)


def test_ced_is_monotone_and_counts_ties():
    errors = np.random.default_rng(1).gamma(2.0, 0.02, size=500)
    grid = np.linspace(0, 0.3, 301)
    curve = M.ced(errors, grid)
    assert (np.diff(curve) >= 0).all()
    assert curve[0] == 0.0 and curve[-1] == pytest.approx((errors <= 0.3).mean())
    # error <= t, so a face exactly at the threshold is counted
    np.testing.assert_array_equal(M.ced([0.02, 0.04, 0.04, 0.2], [0.04, 0.039]), [0.75, 0.25])


def test_auc_of_hand_made_set():
    # Errors 0.02, 0.04, 0.06, 0.2 with T = 0.08: the CED is 1/4, 2/4, 3/4 on three 0.02-wide steps,
    # so the area is 0.02 * (0.25 + 0.5 + 0.75) = 0.03 and AUC = 0.03 / 0.08 = 0.375.
    errors = np.array([0.02, 0.04, 0.06, 0.2])
    assert M.auc(errors, 0.08) == pytest.approx(0.375)
    # cross-check against a fine numerical integral of the CED itself
    x = np.linspace(0, 0.08, 800001)
    assert M.auc(errors, 0.08) == pytest.approx(np.trapezoid(M.ced(errors, x), x) / 0.08, abs=1e-5)


def test_failure_rate_is_share_strictly_above():
    errors = np.array([0.02, 0.04, 0.06, 0.2])
    assert M.failure_rate(errors, 0.08) == 0.25
    assert M.failure_rate(errors, 0.04) == 0.5  # 0.04 itself is not a failure
    assert M.failure_rate(errors, 0.01) == 1.0
    assert M.failure_rate(errors, 0.08) == pytest.approx(1 - M.ced(errors, [0.08])[0])


def test_summary_keys_and_values():
    errors = np.array([0.02, 0.04, 0.06, 0.2])
    s = M.summary(errors)
    assert list(s) == ["n_faces", "mean", "median", "auc@0.08", "auc@0.10", "fail@0.08", "fail@0.10"]
    assert s["n_faces"] == 4
    assert s["mean"] == pytest.approx(0.08) and s["median"] == pytest.approx(0.05)
    # T = 0.10: area 0.02 * (0.25 + 0.5 + 0.75) + 0.02 * 0.75 = 0.045 -> AUC 0.45
    assert s["auc@0.10"] == pytest.approx(0.45)


def test_aggregates_reject_nan_errors():
    with pytest.raises(ValueError, match="NaN for 1 of 3"):
        M.auc([0.1, np.nan, 0.2], 0.08)


# Two uniform error distributions with a closed-form AUC: for e ~ U(0, c) and T <= c, AUC(T) = T / (2c).
def _uniform_auc(c, t=0.08):
    return t / (2 * c)


def test_bootstrap_ci_covers_true_difference():
    true_diff = _uniform_auc(0.2) - _uniform_auc(0.4)  # 0.2 - 0.1
    hits = 0
    reps = 40
    for rep in range(reps):
        rng = np.random.default_rng(100 + rep)
        a, b = rng.uniform(0, 0.2, 200), rng.uniform(0, 0.4, 200)
        diff, (lo, hi) = M.paired_bootstrap_auc_diff(a, b, 0.08, n_resamples=500, seed=rep)
        assert lo <= diff <= hi
        hits += lo <= true_diff <= hi
    # nominal 95%; with 40 data sets the count is ~Binomial(40, 0.95), so < 34 would signal a broken interval
    assert hits >= 34


def test_bootstrap_is_deterministic_with_seed_and_paired():
    rng = np.random.default_rng(7)
    u, v = rng.uniform(size=300), rng.uniform(size=300)
    a, b = 0.2 * u, 0.4 * u  # strongly paired errors
    first = M.paired_bootstrap_auc_diff(a, b, 0.08, 400, seed=3)
    assert first == M.paired_bootstrap_auc_diff(a, b, 0.08, 400, seed=3)
    assert first != M.paired_bootstrap_auc_diff(a, b, 0.08, 400, seed=4)
    assert first[0] == pytest.approx(M.auc(a, 0.08) - M.auc(b, 0.08))
    # chunking bounds memory only: one chunk or many, the interval is a proper bootstrap around the same value
    whole = M.paired_bootstrap_auc_diff(a, b, 0.08, 400, seed=3, chunk=400)
    assert whole[0] == first[0] and whole[1][0] <= first[0] <= whole[1][1]
    # pairing removes the shared face variation: the interval is narrower than with independent faces
    _, (lo_p, hi_p) = first
    _, (lo_i, hi_i) = M.paired_bootstrap_auc_diff(a, 0.4 * v, 0.08, 400, seed=3)
    assert hi_p - lo_p < hi_i - lo_i


def test_region_errors_on_a_mouth_shift():
    gt, boxes = make_faces(3)
    pred = gt.copy()
    pred[:, 48:68] += np.array([3, 4], np.float32)
    regions = M.region_errors(pred, gt, "interocular")
    assert list(regions) == ["jaw", "brows", "nose", "eyes", "mouth"]
    np.testing.assert_allclose(regions["mouth"], 5 / INTEROCULAR)
    for name in ("jaw", "brows", "nose", "eyes"):
        np.testing.assert_array_equal(regions[name], 0.0)
    by_box = M.region_errors(pred, gt, "box", boxes)
    np.testing.assert_allclose(by_box["mouth"], 5 / DETBOX)
    np.testing.assert_allclose(M.region_errors(pred, gt, np.full(3, 10.0))["mouth"], 0.5)
    frame = M.regions_frame({"onet": regions}, "toy")
    assert len(frame) == 15 and set(frame.region) == set(regions)


def _toy_errors():
    rng = np.random.default_rng(0)
    rows = []
    for test_set, n in (("helen", 30), ("youtube", 20)):
        for method, scale in (("onet", 0.05), ("dlib", 0.03)):
            e = rng.gamma(2.0, scale / 2, n)
            rows.append(pd.DataFrame({"test_set": test_set, "method": method, "face_id": [f"f{i}" for i in range(n)],
                                      "rmse_box": e, "nme_interocular": 2 * e}))
    return pd.concat(rows, ignore_index=True)


def test_metrics_dict_nesting_and_values():
    errors = _toy_errors()
    out = M.metrics_dict(errors, reference="dlib", n_resamples=200, seed=0)
    json.dumps(out, allow_nan=False)
    assert set(out) == {"helen", "youtube"}
    assert set(out["helen"]["methods"]) == {"onet", "dlib"} and set(out["helen"]["vs_reference"]) == {"onet"}
    helen_onet = errors[(errors.test_set == "helen") & (errors.method == "onet")]
    entry = out["helen"]["methods"]["onet"]
    assert entry["n_faces"] == 30
    assert entry["rmse_box/auc@0.08"] == pytest.approx(M.auc(helen_onet.rmse_box.to_numpy(), 0.08))
    assert entry["nme_interocular/fail@0.10"] == pytest.approx(M.failure_rate(helen_onet.nme_interocular.to_numpy(), 0.1))
    diff = out["helen"]["vs_reference"]["onet"]
    assert diff["reference"] == "dlib"
    assert diff["rmse_box/auc@0.08/ci95_lo"] <= diff["rmse_box/auc@0.08/diff"] <= diff["rmse_box/auc@0.08/ci95_hi"]
    assert diff["rmse_box/auc@0.08/diff"] == pytest.approx(
        entry["rmse_box/auc@0.08"] - out["helen"]["methods"]["dlib"]["rmse_box/auc@0.08"])


def test_metrics_dict_turns_inf_into_null():
    errors = _toy_errors()
    errors.loc[0, "rmse_box"] = np.inf
    out = M.metrics_dict(errors)
    assert out["helen"]["methods"]["onet"]["rmse_box/mean"] is None
    json.dumps(out, allow_nan=False)


def test_paired_frame_refuses_different_faces():
    errors = _toy_errors()
    errors = errors.drop(index=errors.index[(errors.method == "dlib") & (errors.face_id == "f3")])
    with pytest.raises(ValueError, match="different faces"):
        M.paired_frame(errors, "onet", "dlib", "rmse_box")


def test_ced_tables_tidy_and_wide():
    errors = _toy_errors()
    tables = M.ced_tables(errors)
    assert set(tables) == {"helen", "youtube"}
    tidy = tables["helen"]
    assert list(tidy.columns) == ["threshold", "method", "fraction"]
    for method, g in tidy.groupby("method"):
        assert (np.diff(g.fraction.to_numpy()) >= 0).all()
        e = errors[(errors.test_set == "helen") & (errors.method == method)].rmse_box.to_numpy()
        assert g.fraction.iloc[-1] == pytest.approx(1 - M.failure_rate(e, 0.10))
    wide = M.ced_tables(errors, "nme_interocular", wide=True)["youtube"]
    assert list(wide.columns) == ["threshold", "dlib", "onet"]
    assert len(wide) == len(M.ced_grid())


def test_ced_grid_ends_at_threshold():
    grid = M.ced_grid(0.08, 0.001)
    assert grid[0] == 0 and grid[-1] == pytest.approx(0.08) and len(grid) == 81


def test_metrics_dict_error_selection_and_auc_ci():
    errors = _toy_errors()
    out = M.metrics_dict(errors, error_names=["rmse_box"], auc_ci=True, n_resamples=200, seed=1)
    keys = set(out["youtube"]["methods"]["dlib"])
    assert not any(k.startswith("nme_interocular") for k in keys)
    e = out["youtube"]["methods"]["dlib"]
    assert e["rmse_box/auc@0.08/ci95_lo"] <= e["rmse_box/auc@0.08"] <= e["rmse_box/auc@0.08/ci95_hi"]
    with pytest.raises(ValueError, match="no column"):
        M.metrics_dict(errors, error_names=["nme_interpupil"])


def test_single_method_auc_ci_covers_true_auc():
    hits = 0
    for rep in range(40):
        e = np.random.default_rng(500 + rep).uniform(0, 0.2, 200)
        lo, hi = M.bootstrap_auc_ci(e, 0.08, 500, seed=rep)
        hits += lo <= _uniform_auc(0.2) <= hi
    assert hits >= 34


def test_every_normaliser_has_a_label():
    from flmlib.metrics import NORMALISER_LABELS, NORMALISERS

    assert set(NORMALISER_LABELS) == set(NORMALISERS)


def test_cluster_bootstrap_counts_persons_not_duplicate_frames():
    """Ten identical frames per person carry the evidence of one face: the person-level interval is the same as
    for the de-duplicated set, while a face-level bootstrap would be about sqrt(10) times too narrow."""
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, 0.1, 50), rng.uniform(0, 0.1, 50)
    base = M.paired_bootstrap_auc_diff(a, b, 0.08, n_resamples=500, seed=3)
    dup_a, dup_b, persons = np.repeat(a, 10), np.repeat(b, 10), np.repeat(np.arange(50), 10)
    clustered = M.paired_bootstrap_auc_diff(dup_a, dup_b, 0.08, n_resamples=500, seed=3, groups=persons)
    naive = M.paired_bootstrap_auc_diff(dup_a, dup_b, 0.08, n_resamples=500, seed=3)
    assert clustered[0] == pytest.approx(base[0])
    assert clustered[1] == pytest.approx(base[1])
    width = lambda r: r[1][1] - r[1][0]  # noqa: E731
    assert width(naive) < 0.5 * width(clustered)


def test_singleton_groups_equal_face_bootstrap():
    rng = np.random.default_rng(6)
    e = rng.uniform(0, 0.1, 40)
    assert M.bootstrap_auc_ci(e, 0.08, 300, 1) == M.bootstrap_auc_ci(e, 0.08, 300, 1, groups=np.arange(40))
    with pytest.raises(ValueError, match="one label per face"):
        M.bootstrap_auc_ci(e, 0.08, 300, 1, groups=np.arange(39))


def test_metrics_dict_resamples_persons_when_the_frame_has_them():
    rng = np.random.default_rng(7)
    n = 60
    frame = pd.concat([pd.DataFrame({"test_set": "t", "method": m, "face_id": [f"f{i}" for i in range(n)],
                                     "person": [f"p{i // 6}" for i in range(n)], "rmse_box": rng.uniform(0, 0.1, n)})
                       for m in ("onet", "dlib")], ignore_index=True)
    out = M.metrics_dict(frame, reference="dlib", n_resamples=100, seed=0)
    assert out["t"]["vs_reference"]["onet"]["n_resampled_groups"] == 10
    assert M.metrics_dict(frame.drop(columns="person"), reference="dlib", n_resamples=100)["t"][
        "vs_reference"]["onet"]["n_resampled_groups"] == n


def test_inner_face_error_leaves_the_jaw_out():
    gt = np.random.default_rng(3).uniform(0, 100, (4, 68, 2))
    gt[:, 36], gt[:, 45] = (10, 50), (50, 50)  # inter-ocular distance 40 px
    pred = gt.copy()
    pred[:, :17] += 8.0  # only the jaw is off
    assert M.nme_interocular_inner(pred, gt) == pytest.approx(np.zeros(4))
    assert M.nme_interocular(pred, gt) == pytest.approx(np.full(4, 17 * np.hypot(8, 8) / 68 / 40))
    pred[:, 17:] += 4.0
    assert M.nme_interocular_inner(pred, gt) == pytest.approx(np.full(4, np.hypot(4, 4) / 40))
