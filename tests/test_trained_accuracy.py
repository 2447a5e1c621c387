"""A model trained inside the test, on a small real subset, must beat the mean shape on held-out faces; and the two
input paths of the CNN landmarker (prepared context crops, and the network input cut straight from the image) must
agree on real faces. Runs in CI from a fresh clone: nothing here needs the pipeline's outputs."""
import numpy as np
import pandas as pd
import pytest
import torch

from flmlib.config import TestSet as _TestSet  # (pytest would collect a class named Test... as tests)
from flmlib.crops import box_units_to_image, image_to_box_units
from flmlib.dataset import build_index
from flmlib.io import read_image
from flmlib.landmarkers.cnn import CNNLandmarker
from flmlib.metrics import nme_interocular
from flmlib.prepare import assemble, detect_all, load_split, save_outputs
from flmlib.train import TrainConfig, train

TRAIN_FACES = 150   # per 300-W training subset (AFW, HELEN train, LFPW train)
TEST_FACES = 40     # HELEN test faces


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """(model file, prepared folder, faces table) of an O-Net trained for about a minute on ~450 real faces."""
    root = tmp_path_factory.mktemp("trained")
    index, _ = build_index(data_root)
    train_rows = index[(index["source"] == "300w") & index["split"].isin(["train", "val"])]
    picked = pd.concat([train_rows.groupby("subset").head(TRAIN_FACES),
                        index[index["subset"] == "helen/testset"].head(TEST_FACES)], ignore_index=True)
    picked.loc[picked["subset"] != "helen/testset", "split"] = np.where(  # every 8th training face validates
        np.arange((picked["subset"] != "helen/testset").sum()) % 8 == 0, "val", "train")
    results = detect_all(picked, upsample=1, iou_threshold=0.3, crop_size=96, context_factor=2.0, workers=2)
    faces, arrays = assemble(picked, results, 96, 2.0, train_fallback_box=True, skip_bad_files=False,
                             test_sets={"test": _TestSet(source="300w", subsets=("helen/testset",))})
    save_outputs(root / "prepared", faces, arrays)
    torch.manual_seed(0)
    config = TrainConfig(epochs=25, lr=3e-3, loss="wing", loss_params={"w": 0.1, "epsilon": 0.02},
                         weight_decay=0.05, use_youtube=False, batch_size=32, threads=2, device="cpu")
    train(config, root / "prepared" / "train.npz", root / "prepared" / "val.npz", root / "onet.pt", root / "ckpt",
          root / "live", progress=False)
    return root / "onet.pt", root / "prepared", faces


def test_a_minute_of_training_beats_the_mean_shape_on_held_out_faces(trained):
    model_path, prepared, _ = trained
    train_split, test = load_split(prepared / "train.npz"), load_split(prepared / "test.npz")
    assert len(test["face_id"]) >= 30
    landmarker = CNNLandmarker.from_checkpoint(model_path, device="cpu")
    pred = landmarker.predict_context_crops(test["crops"], test["boxes"])
    model_nme = nme_interocular(pred, test["landmarks_image"]).mean()
    # The baseline: the mean training shape in box units, placed in each test box.
    mean_shape = image_to_box_units(train_split["landmarks_image"], train_split["boxes"]).mean(axis=0)
    baseline = box_units_to_image(np.broadcast_to(mean_shape, pred.shape), test["boxes"])
    baseline_nme = nme_interocular(baseline, test["landmarks_image"]).mean()
    print(f"held-out HELEN test NME (inter-ocular): model {model_nme:.4f}, mean shape {baseline_nme:.4f}")
    assert model_nme < 0.8 * baseline_nme, (model_nme, baseline_nme)


def test_prepared_crop_and_direct_cut_paths_agree_on_real_faces(trained):
    model_path, prepared, faces = trained
    test = load_split(prepared / "test.npz")
    landmarker = CNNLandmarker.from_checkpoint(model_path, device="cpu")
    assert landmarker.cuts_inputs_directly
    paths = faces.set_index("face_id")["image_path"]
    images = [read_image(paths[f]) for f in test["face_id"]]
    direct = np.concatenate(landmarker.predict_batch(images, [b[None] for b in test["boxes"]]))
    from_crops = landmarker.predict_context_crops(test["crops"], test["boxes"])
    # Both sample the same image positions; OpenCV's fixed-point rounding leaves at most a grey level of difference.
    gap = np.abs(direct - from_crops).max()
    print(f"largest gap between the two input paths: {gap:.4f} px")
    assert gap < 0.25
