import numpy as np
import pandas as pd
import pytest

from flmlib.dataset import assign_splits, build_index, photo_of, split_groups, youtube_person
from flmlib.io import DataError
from tests.conftest import write_pts


def test_person_and_photo_keys():
    assert youtube_person("Luis_Fonsi_21.jpg") == "Luis_Fonsi"
    assert youtube_person("Terje_Roed-Larsen_02.jpg") == "Terje_Roed-Larsen"
    assert photo_of("2086996835_5") == "2086996835"


def test_split_groups_is_deterministic_and_order_free():
    groups = [f"p{i}" for i in range(50)]
    a = split_groups(groups, 0.2, seed=3)
    b = split_groups(list(reversed(groups)) * 2, 0.2, seed=3)
    assert a == b and len(a) == 10
    assert split_groups(groups, 0.2, seed=4) != a


@pytest.fixture(scope="module")
def real_index(data_root):
    index, skipped = build_index(data_root)
    return index, skipped


def test_index_columns_and_counts(real_index):
    index, skipped = real_index
    assert len(skipped) == 0
    assert {"face_id", "image_path", "source", "subset", "person", "landmarks", "split"} <= set(index.columns)
    assert index["face_id"].is_unique
    counts = index["subset"].value_counts()
    assert counts["afw"] == 337 and counts["helen/trainset"] == 870 and counts["helen/testset"] == 230
    assert counts["lfpw/trainset"] == 805 and counts["lfpw/testset"] == 174 and counts["aflw2000"] == 1500
    assert counts["youtube/training"] == 3066 and counts["youtube/test"] == 684
    aflw = index[index["source"] == "aflw2000"]
    assert aflw["yaw"].notna().all() and index.loc[index["source"] != "aflw2000", "yaw"].isna().all()
    assert all(lm.shape == (68, 2) and lm.dtype == np.float32 for lm in index["landmarks"])


def test_youtube_name_collision_is_keyed_by_folder(real_index):
    index, _ = real_index
    youtube = index[index["source"] == "youtube"]
    names = youtube["face_id"].str.split("/").str[-1]
    collided = names[names.duplicated(keep=False)]
    assert len(collided) > 0, "DATA.md documents names shared by training/ and test/"
    name = collided.iloc[0]
    pair = youtube[names == name]
    assert set(pair["subset"]) == {"youtube/training", "youtube/test"}
    assert not np.array_equal(pair["landmarks"].iloc[0], pair["landmarks"].iloc[1])


def test_no_person_straddles_two_splits(real_index):
    index, _ = real_index
    assert (index.groupby("person")["split"].nunique() == 1).all()
    assert set(index.loc[index["subset"].isin(["helen/testset", "lfpw/testset"]), "split"]) == {"test"}
    assert set(index.loc[index["source"] == "aflw2000", "split"]) == {"test"}
    assert set(index.loc[index["source"] == "youtube", "split"]) == {"train", "val", "test"}
    assert set(index.loc[index["subset"] == "lfpw/trainset", "split"]) == {"train", "val"}
    # LFPW numbers its files per subset (image_0001 in both): the file, not the name, is the photo
    lfpw = index[index["subset"].str.startswith("lfpw")]
    assert lfpw["person"].is_unique


def test_yaw_bins_on_hand_made_angles():
    from flmlib.dataset import yaw_bin_labels, yaw_bins

    assert yaw_bin_labels((30, 60)) == ["yaw 0-30°", "yaw 30-60°", "yaw ≥60°"]
    yaw = [0, 29.9, -29.9, 30, -45, 59.99, 60, -60, 95, float("nan")]
    assert yaw_bins(yaw, (30, 60)).tolist() == ["yaw 0-30°", "yaw 0-30°", "yaw 0-30°", "yaw 30-60°", "yaw 30-60°",
                                                "yaw 30-60°", "yaw ≥60°", "yaw ≥60°", "yaw ≥60°", ""]


def test_split_is_deterministic(data_root, real_index):
    index, _ = real_index
    again, _ = build_index(data_root)
    assert again["split"].tolist() == index["split"].tolist()
    other = assign_splits(index, youtube_test_share=0.2, val_share=0.1, seed=7)
    assert other.tolist() != index["split"].tolist()


def _tiny_tree(root, n_points=68):
    for folder in ("300w/afw", "300w/helen/trainset", "300w/helen/testset", "300w/lfpw/trainset", "300w/lfpw/testset",
                   "youtube-faces/training", "youtube-faces/test", "aflw2000-3d/images"):
        (root / folder).mkdir(parents=True)
    import cv2
    cv2.imwrite(str(root / "300w/afw/1_1.jpg"), np.zeros((20, 20, 3), np.uint8))
    write_pts(root / "300w/afw/1_1.pts", np.ones((n_points, 2)) * 5)
    cv2.imwrite(str(root / "300w/afw/2_1.jpg"), np.zeros((20, 20, 3), np.uint8))
    write_pts(root / "300w/afw/2_1.pts", np.ones((68, 2)) * 5)
    columns = [""] + [str(i) for i in range(136)]
    for split in ("training", "test"):
        pd.DataFrame([], columns=columns).to_csv(root / f"youtube-faces/{split}_frames_keypoints.csv", index=False)
    pd.DataFrame([], columns=["file", "yaw", "pitch", "roll"] + columns[1:]).to_csv(
        root / "aflw2000-3d/landmarks.csv", index=False)


def test_bad_pts_stops_with_its_name_or_is_skipped_and_counted(tmp_path):
    _tiny_tree(tmp_path, n_points=67)
    with pytest.raises(DataError, match=r"1_1\.pts.*67"):
        build_index(tmp_path)
    index, skipped = build_index(tmp_path, skip_bad_files=True)
    assert index["face_id"].tolist() == ["300w/afw/2_1"]
    assert len(skipped) == 1 and "1_1.pts" in skipped.items[0][0] and "67" in skipped.items[0][1]


def test_good_tiny_tree_builds(tmp_path):
    _tiny_tree(tmp_path)
    index, skipped = build_index(tmp_path)
    assert len(index) == 2 and len(skipped) == 0 and set(index["split"]) <= {"train", "val"}
