"""The crops@<size> stage: training crops cut again at another size around prepare's boxes."""
import numpy as np
import pandas as pd
import pytest

from flmlib.crops import apply_affine, crop_context
from flmlib.detect import detect_faces
from flmlib.io import read_image, read_pts
from flmlib.prepare import load_split
from flmlib.training_crops import recrop, run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_root):
    """A prepared folder with train/val splits of helen test faces, in the prepare stage's format (96 px crops)."""
    root = tmp_path_factory.mktemp("prepared")
    faces = []
    for jpg in sorted((data_root / "300w/helen/testset").glob("*.jpg")):
        boxes = detect_faces(read_image(jpg), 1)
        if len(boxes):
            faces.append((f"300w/helen/testset/{jpg.stem}", str(jpg), boxes[0], read_pts(jpg.with_suffix(".pts"))))
        if len(faces) == 4:
            break
    for name, part in (("train", faces[:3]), ("val", faces[3:])):
        cut = [crop_context(read_image(path), box, 96, 2.0) for _, path, box, _ in part]
        np.savez(root / f"{name}.npz", crops=np.stack([c for c, _ in cut]),
                 landmarks=np.stack([apply_affine(lm, m) for (_, m), (*_, lm) in zip(cut, part)]).astype(np.float32),
                 landmarks_image=np.stack([lm for *_, lm in part]), boxes=np.stack([b for _, _, b, _ in part]),
                 face_id=np.array([f for f, *_ in part]), person=np.array([f for f, *_ in part]),
                 subset=np.array(["helen/testset"] * len(part)), yaw=np.full(len(part), np.nan, np.float32),
                 detected=np.ones(len(part), bool), crop_size=np.array(96), context_factor=np.array(2.0, np.float32))
    pd.DataFrame({"face_id": [f for f, *_ in faces], "image_path": [p for _, p, *_ in faces]}).to_csv(
        root / "faces.csv", index=False)
    return root


def test_recrop_at_prepares_own_size_gives_prepares_crops(prepared):
    split = load_split(prepared / "train.npz")
    paths = dict(pd.read_csv(prepared / "faces.csv").values)
    again = recrop(split, paths, 96, workers=1)
    np.testing.assert_array_equal(again["crops"], split["crops"])
    np.testing.assert_allclose(again["landmarks"], split["landmarks"], atol=1e-4)


def test_recrop_at_twice_the_size_doubles_the_crop_coordinates(prepared, tmp_path):
    written = run(prepared, tmp_path / "192", 192, workers=1)
    assert [p.name for p in written] == ["train.npz", "val.npz"]
    small, big = load_split(prepared / "train.npz"), load_split(tmp_path / "192" / "train.npz")
    assert big["crops"].shape == (3, 192, 192, 3) and int(big["crop_size"]) == 192
    # same box, same context: a crop pixel at x in the 96 px crop sits at 2x + 0.5 in the 192 px one
    np.testing.assert_allclose(big["landmarks"], 2 * small["landmarks"] + 0.5, atol=1e-3)
    np.testing.assert_array_equal(big["face_id"], small["face_id"])
    np.testing.assert_array_equal(big["boxes"], small["boxes"])


def test_a_face_without_an_image_path_is_named(prepared):
    split = load_split(prepared / "train.npz")
    with pytest.raises(ValueError, match="no image path.*300w/helen/testset"):
        recrop(split, {}, 96, workers=1)


def test_aligned_crops_put_the_inner_points_on_the_training_mean_shape(prepared, tmp_path):
    from flmlib.alignment import INNER_POINTS, box_in_crop, mean_shape
    from flmlib.train import load_training_split

    written = run(prepared, tmp_path / "aligned", 96, workers=1, aligned=True)
    train, val = (load_split(p) for p in written)
    source = load_split(prepared / "train.npz")
    expected_mean = mean_shape(source["landmarks_image"], source["boxes"])
    box = box_in_crop(96, 2.0)
    target = box[:2] + expected_mean * (box[2:] - box[:2])
    for split in (train, val):
        np.testing.assert_allclose(split["align_mean"], expected_mean)  # the training faces' mean, for both splits
        assert split["crops"].shape[1:] == (96, 96, 3)
        # the inner points fit the mean shape up to each face's own shape: within a few pixels, centred on it
        inner = split["landmarks"][:, INNER_POINTS]
        centre = target[INNER_POINTS].mean(axis=0)
        np.testing.assert_allclose(inner.mean(axis=1), np.broadcast_to(centre, (len(inner), 2)), atol=1e-3)
        assert np.abs(inner - target[INNER_POINTS]).mean() < 3.0
        # training's NMEs run on crop pixels: points and the mean-shape box
        np.testing.assert_allclose(split["landmarks_image"], split["landmarks"])
        np.testing.assert_allclose(split["boxes"], np.tile(box, (len(split["boxes"]), 1)))
    assert load_training_split(written[0]).crop_size == 96


def test_aligned_crops_need_every_point(prepared):
    split = dict(load_split(prepared / "train.npz"))
    split["valid"] = np.ones((3, 68), bool)
    split["valid"][1, 40] = False
    paths = dict(pd.read_csv(prepared / "faces.csv").values)
    with pytest.raises(ValueError, match="every point"):
        recrop(split, paths, 96, workers=1, align_mean=np.full((68, 2), 0.5))
