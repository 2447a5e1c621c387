"""Figure builders return figures with the expected lines, legends and panels (Agg backend, no display)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from flmlib import metrics as M  # noqa: E402
from flmlib import plots as P  # noqa: E402
from flmlib.crops import context_matrix, apply_affine  # noqa: E402


def _errors():
    rng = np.random.default_rng(0)
    rows = []
    for test_set in ("helen", "youtube"):
        for method, scale in (("onet", 0.05), ("dlib", 0.03)):
            rows.append(pd.DataFrame({"test_set": test_set, "method": method, "face_id": [f"f{i}" for i in range(40)],
                                      "rmse_box": rng.gamma(2.0, scale / 2, 40)}))
    return pd.concat(rows, ignore_index=True)


def _faces(n=5, size=96):
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    gt = rng.uniform(30, 66, (n, 68, 2))
    return crops, gt, {"onet": gt + rng.normal(0, 2, gt.shape), "dlib": gt + rng.normal(0, 1, gt.shape)}


def _data_lines(ax):
    """Lines that carry data (seaborn also adds empty proxy lines for its legend)."""
    return [line for line in ax.get_lines() if len(line.get_xdata())]


def _scatter_offsets(ax):
    return [c.get_offsets() for c in ax.collections]


def test_ced_figure_has_one_line_per_method_with_auc_in_legend():
    errors = _errors()
    fig = P.ced_figure(errors, test_set="helen")
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == []  # detached from pyplot: nothing leaks, no double display in notebooks
    ax = fig.axes[0]
    assert len(_data_lines(ax)) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 2
    for method in ("onet", "dlib"):
        e = errors[(errors.test_set == "helen") & (errors.method == method)].rmse_box.to_numpy()
        assert f"{method} (AUC@0.08 = {M.auc(e, 0.08):.3f}, n = 40)" in labels
    assert ax.get_xlim() == (0.0, 0.08)
    assert "face box" in ax.get_xlabel()
    assert "helen" in ax.get_title()


def test_ced_figure_line_matches_ced():
    errors = _errors()
    fig = P.ced_figure(errors, test_set="youtube", threshold=0.1)
    sub = errors[(errors.test_set == "youtube")]
    colour_to_method = {tuple(s["color"]): m for m, s in P.method_styles(["onet", "dlib"]).items()}
    lines = _data_lines(fig.axes[0])
    assert sorted(colour_to_method[tuple(line.get_color())] for line in lines) == ["dlib", "onet"]
    for line in lines:
        method = colour_to_method[tuple(line.get_color())]
        x, y = line.get_xdata(), line.get_ydata()
        assert x[0] == 0 and x[-1] == 0.1
        np.testing.assert_allclose(y, M.ced(sub[sub.method == method].rmse_box.to_numpy(), x))
        assert line.get_drawstyle() == "steps-post"


def test_ced_figure_needs_a_test_set_choice():
    with pytest.raises(ValueError, match="pass test_set"):
        P.ced_figure(_errors())


def test_region_figure_has_a_panel_per_test_set_and_bars_per_method_region():
    crops, gt, preds = _faces()
    frame = pd.concat([M.regions_frame({m: M.region_errors(p, gt, "interocular") for m, p in preds.items()}, ts)
                       for ts in ("helen", "youtube")])
    fig = P.region_figure(frame, "inter-ocular distance")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.patches) >= 10  # 5 regions x 2 methods (legend patches may add more)
        assert "inter-ocular" in ax.get_ylabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["onet", "dlib"]


def test_example_grid_draws_gt_and_each_method_with_a_legend():
    crops, gt, preds = _faces(5)
    fig = P.example_grid(crops, gt, preds, titles=[f"face {i}" for i in range(5)], ncols=3)
    assert len(fig.axes) == 6  # 2 rows x 3 columns, the last one blank
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ground truth", "onet", "dlib"]
    offsets = _scatter_offsets(fig.axes[0])
    assert len(offsets) == 3
    np.testing.assert_allclose(offsets[0], gt[0])
    np.testing.assert_allclose(offsets[1], preds["onet"][0])
    styles = P.method_styles(["onet", "dlib"])
    assert styles["onet"]["color"] != styles["dlib"]["color"] and styles["onet"]["marker"] != styles["dlib"]["marker"]


def test_example_grid_maps_image_points_through_boxes():
    crops, gt_crop, _ = _faces(2)
    boxes = np.array([[100, 50, 148, 98], [10, 20, 110, 120]], np.float32)
    # image points whose crop position is gt_crop: invert each face's image -> crop map
    to_img = [np.linalg.inv(np.vstack([context_matrix(b, 96, 2.0), [0, 0, 1]]))[:2] for b in boxes]
    gt_img = np.stack([apply_affine(g, m) for g, m in zip(gt_crop, to_img)])
    fig = P.example_grid(crops, gt_img, {"dlib": gt_img}, boxes=boxes, context_factor=2.0)
    np.testing.assert_allclose(_scatter_offsets(fig.axes[1])[0], gt_crop[1], atol=1e-6)


def test_worst_faces_figure_orders_by_error():
    crops, gt, preds = _faces(6)
    errors = {m: M.nme_interocular(p, gt) for m, p in preds.items()}
    fig = P.worst_faces_figure(crops, gt, preds, errors, k=3, error="nme_interocular", face_ids=[f"id{i}" for i in range(6)])
    assert len(fig.axes) == 6  # 2 methods x 3
    worst = int(np.argmax(errors["onet"]))
    title = fig.axes[0].get_title()
    assert title.startswith("onet #1") and f"id{worst}" in title and f"{errors['onet'][worst]:.3f}" in title
    second_row = fig.axes[3].get_title()
    assert second_row.startswith("dlib #1") and f"id{int(np.argmax(errors['dlib']))}" in second_row


def test_contact_sheet_draws_points_and_box():
    crops, gt, _ = _faces(4)
    fig = P.contact_sheet(crops, gt, ncols=2, context_factor=2.0, titles=list("abcd"))
    assert len(fig.axes) == 4
    ax = fig.axes[2]
    np.testing.assert_allclose(_scatter_offsets(ax)[0], gt[2])
    (box,) = ax.patches
    assert box.get_width() == 48 and box.get_x() == 23.5  # central 48 px of the 96 px crop, edges at 23.5
    assert ax.get_title() == "c"


def test_shape_mismatch_is_a_clear_error():
    crops, gt, _ = _faces(3)
    with pytest.raises(ValueError, match=r"expected \(3, 68, 2\)"):
        P.contact_sheet(crops, gt[:2])
