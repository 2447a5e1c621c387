from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flmlib.crops import apply_affine, box_size, context_matrix
from flmlib.dataset import build_index, limit_per_subset
from flmlib.io import DataError
from flmlib.paths import PROJECT_ROOT, portable_path, project_path
from flmlib.prepare import assemble, detect_all, detection_summary, load_split, save_outputs


@pytest.fixture(scope="module")
def tiny(data_root):
    index, _ = build_index(data_root)
    return limit_per_subset(index, 3)


def test_prepare_writes_consistent_splits(tiny, tmp_path):
    results = detect_all(tiny, upsample=1, iou_threshold=0.3, crop_size=96, context_factor=2.0, workers=2)
    faces, arrays = assemble(tiny, results, 96, 2.0, train_fallback_box=True, skip_bad_files=False)
    save_outputs(tmp_path, faces, arrays)
    summary = detection_summary(faces)
    assert sum(v["faces"] for v in summary["by_split"].values()) == len(tiny)
    for split in ("train", "val", "test_300w", "test_youtube"):
        data = load_split(tmp_path / f"{split}.npz")
        n = len(data["face_id"])
        assert data["crops"].shape == (n, 96, 96, 3) and data["crops"].dtype == np.uint8
        for i in range(n):  # stored crop points are the image points through the stored box's crop matrix
            expected = apply_affine(data["landmarks_image"][i], context_matrix(data["boxes"][i], 96, 2.0))
            np.testing.assert_allclose(data["landmarks"][i], expected, atol=1e-3)
        if split.startswith("test"):
            assert data["detected"].all(), "test faces are detected faces only"
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
