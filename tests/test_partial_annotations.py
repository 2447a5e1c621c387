"""Per-point validity masks through the training path: data files, augmentation, losses, metrics, training."""
import numpy as np
import pytest
import torch

from flmlib import train as T
from flmlib.augment import AugmentConfig, augment, flip_valid
from flmlib.bench_train import write_synthetic_split
from flmlib.losses import build_loss
from flmlib.metrics import nme_interocular, nme_scheme, rmse_box, valid_counts
from flmlib.models import load_trained
from flmlib.point_schemes import KAGGLE15, KAGGLE4, get_scheme


@pytest.mark.parametrize("name", ["mse", "wing", "smooth_l1"])
def test_masked_loss_equals_the_plain_loss_on_complete_faces(name):
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.rand(8, 136, generator=gen), torch.rand(8, 68, 2, generator=gen)
    loss = build_loss(name)
    assert torch.allclose(loss(pred, target, torch.ones(8, 68, dtype=torch.bool)), loss(pred, target), rtol=1e-6)


def test_a_missing_point_gives_neither_loss_nor_gradient():
    pred = torch.zeros(2, 30, requires_grad=True)
    target = torch.zeros(2, 15, 2)
    target[0, 3] = float("nan")          # whatever a missing point holds, even NaN
    target[1, 7] = 5.0                   # a wild placeholder
    valid = torch.ones(2, 15, dtype=torch.bool)
    valid[0, 3] = valid[1, 7] = False
    loss = build_loss("wing")(pred, target, valid)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(pred.grad).all() and not pred.grad.any()
    # and a valid point's error is counted with the same weight as in a complete face
    target2 = torch.zeros(2, 15, 2)
    target2[0, 0, 0] = 0.5
    half = build_loss("mse")(torch.zeros(2, 30), target2, valid)
    full = build_loss("mse")(torch.zeros(2, 30), target2)
    assert float(half) == pytest.approx(float(full) * 30 / 28)  # 28 of 30 points valid


def test_losses_reject_a_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match="valid must be"):
        build_loss("mse")(torch.zeros(2, 30), torch.zeros(2, 15, 2), torch.ones(2, 14, dtype=torch.bool))


def test_a_flip_renumbers_the_mask_with_the_points():
    valid = torch.zeros(1, 15, dtype=torch.bool)
    valid[0, 3] = True                   # only the left eye's outer corner is annotated
    flipped = flip_valid(valid, torch.tensor([True]), KAGGLE15.mirror)
    assert flipped[0].nonzero().flatten().tolist() == [5]  # it becomes the right eye's outer corner
    crops = torch.randint(0, 255, (4, 3, 96, 96), dtype=torch.uint8)
    points = torch.rand(4, 15, 2) * 40 + 28
    always_flip = AugmentConfig(**{**AugmentConfig.off().as_dict(), "flip": 1.0})
    _, units, out_valid = augment(crops, points, always_flip, torch.Generator().manual_seed(0),
                                  mirror=KAGGLE15.mirror, valid=valid.expand(4, -1))
    assert units.shape == (4, 15, 2) and (out_valid[:, 5] & ~out_valid[:, 3]).all()
    # the flipped point 5 is where the original point 3 was, mirrored
    plain, plain_units = augment(crops, points, None, mirror=KAGGLE15.mirror)
    assert torch.allclose(units[:, 5, 0], 1 - plain_units[:, 3, 0], atol=1e-5)


def test_metrics_score_valid_points_only_and_count_them():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (3, 68, 2))
    pred = gt.copy()
    pred[:, 0] += 30                       # a large error on the first jaw point only
    valid = np.ones((3, 68), bool)
    valid[0, 0] = False
    gt_missing = gt.copy()
    gt_missing[0, 0] = np.nan              # an unannotated point may hold NaN
    masked = nme_interocular(pred, gt_missing, valid=valid)
    full = nme_interocular(pred, gt)
    assert masked[0] == 0.0 and masked[1] == pytest.approx(full[1]) and full[0] > 0
    assert valid_counts(valid, 3).tolist() == [67, 68, 68] and valid_counts(None, 3).tolist() == [68] * 3
    boxes = np.tile([0.0, 0, 100, 100], (3, 1))
    assert rmse_box(pred, gt_missing, boxes, valid=valid)[0] == 0.0
    with pytest.raises(ValueError, match="no valid point"):
        nme_interocular(pred, gt, valid=np.zeros((3, 68), bool))


def test_normalisers_use_annotated_points_only():
    from flmlib.metrics import nme_gtbox, nme_interpupil, region_errors
    gt = np.zeros((2, 68, 2))
    gt[:, :, 0], gt[:, :, 1] = np.linspace(10, 50, 68), np.linspace(20, 60, 68)  # box 40 x 40 px around every point
    pred = gt + [2.0, 0]
    valid = np.ones((2, 68), bool)
    valid[1, :10] = False                  # jaw points missing: their placeholder (0, 0) must not widen the box
    far = np.where(valid[..., None], gt, 0.0)
    expected = 2.0 / np.sqrt((50 - gt[1, 10, 0]) * (60 - gt[1, 10, 1]))
    assert nme_gtbox(pred, far, valid=valid)[1] == pytest.approx(expected)
    no_corner = valid.copy()
    no_corner[0, 45] = False
    with pytest.raises(ValueError, match=r"interocular.*36, 45.*1 face.*indices 0"):
        nme_interocular(pred, gt, valid=no_corner)
    with pytest.raises(ValueError, match="interpupil"):
        nme_interpupil(pred, gt, valid=no_corner)
    regions = region_errors(pred, gt, np.full(2, 10.0), valid=np.pad(np.ones((2, 17), bool), ((0, 0), (0, 51))))
    assert regions["jaw"] == pytest.approx([0.2, 0.2]) and np.isnan(regions["mouth"]).all()


def test_a_source_of_its_own_trains_beside_the_studys(tmp_path):
    """Faces a user brings (face_id wflw/...) are a source of their own: kept, reported per source, excludable."""
    path = write_synthetic_split(tmp_path / "train.npz", 8, seed=0)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["face_id"] = np.array([f"wflw/img{i}.jpg#0" if i < 3 else f for i, f in enumerate(arrays["face_id"])])
    np.savez(path, **arrays)
    split = T.load_training_split(path)
    assert len(split) == 8 and (split.source_of() == "wflw").sum() == 3
    assert len(T.load_training_split(path, exclude=["wflw"])) == 5
    with pytest.raises(ValueError, match="no face left"):
        T.load_training_split(path, exclude=["wflw", "300w", "youtube"])


def test_nme_scheme_normalises_by_the_schemes_eye_points():
    gt = np.zeros((1, 15, 2))
    gt[0, 3], gt[0, 5] = (60.0, 40), (20.0, 40)  # outer eye corners 40 px apart
    pred = gt + np.array([4.0, 0])
    assert nme_scheme(pred, gt, "kaggle15")[0] == pytest.approx(0.1)
    missing_corner = np.ones((1, 15), bool)
    missing_corner[0, 3] = False
    with pytest.raises(ValueError, match="outer eye corner"):
        nme_scheme(pred, gt, KAGGLE15, missing_corner)
    four = np.array([[[60.0, 40], [20, 40], [40, 60], [40, 80]]])
    assert nme_scheme(four + [2.0, 0], four, KAGGLE4)[0] == pytest.approx(0.05)


def _to_scheme(path, out, scheme, keep, missing_share=0.0, seed=0):
    """A synthetic 68-point split reduced to the points ``keep`` of ``scheme``, some of them dropped."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for key in ("landmarks", "landmarks_image"):
        arrays[key] = arrays[key][:, keep]
    valid = np.ones((len(arrays["face_id"]), len(keep)), bool)
    rng = np.random.default_rng(seed)
    cut = rng.random(len(valid)) < missing_share
    valid[np.ix_(cut, np.arange(4, len(keep)))] = False
    arrays["landmarks"] = np.where(valid[..., None], arrays["landmarks"], np.nan).astype(np.float32)
    np.savez(out, **arrays, valid=valid, point_scheme=np.array(scheme))
    return out


KEEP15 = [42, 39, 42, 45, 39, 36, 22, 26, 21, 17, 30, 54, 48, 51, 57]


def test_a_partly_annotated_15_point_split_trains_end_to_end(tmp_path):
    train68 = write_synthetic_split(tmp_path / "train68.npz", 64, seed=0)
    val68 = write_synthetic_split(tmp_path / "val68.npz", 16, seed=1)
    train = _to_scheme(train68, tmp_path / "train.npz", "kaggle15", KEEP15, missing_share=0.7)
    val = _to_scheme(val68, tmp_path / "val.npz", "kaggle15", KEEP15)
    split = T.load_training_split(train)
    assert split.scheme.name == "kaggle15" and not split.complete and torch.isfinite(split.points).all()
    config = T.TrainConfig(epochs=2, batch_size=16, threads=1, device="cpu", schedule="plateau")
    result = T.train(config, train, val, tmp_path / "m.pt", tmp_path / "ckpt", progress=False)
    assert np.isfinite(result.final["val/nme_interocular"]) and "val/rmse_box" not in result.final
    model, cfg = load_trained(tmp_path / "m.pt")
    assert cfg["n_points"] == 15 and cfg["point_scheme"] == "kaggle15" and model.n_points == 15


def test_ignore_points_masks_a_region_of_one_source(tmp_path):
    path = write_synthetic_split(tmp_path / "train.npz", 32, seed=0)
    split = T.load_training_split(path)
    split.ignore({"youtube": ["jaw"]})
    youtube = split.source_of() == "youtube"
    assert youtube.any() and (~youtube).any()
    assert not split.valid[torch.from_numpy(youtube)][:, :17].any()
    assert split.valid[torch.from_numpy(youtube)][:, 17:].all() and split.valid[torch.from_numpy(~youtube)].all()
    with pytest.raises(ValueError, match="ignore_points"):
        T.TrainConfig(ignore_points={"youtube": ["ears"]})


def test_a_split_with_a_bad_mask_or_scheme_is_named(tmp_path):
    path = write_synthetic_split(tmp_path / "train.npz", 8, seed=0)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(tmp_path / "bad_scheme.npz", **arrays, point_scheme=np.array("ibug69"))
    with pytest.raises(ValueError, match="bad_scheme.npz: unknown point scheme 'ibug69'"):
        T.load_training_split(tmp_path / "bad_scheme.npz")
    np.savez(tmp_path / "bad_valid.npz", **arrays, valid=np.ones((8, 67), bool))
    with pytest.raises(ValueError, match="bad_valid.npz: valid is bool"):
        T.load_training_split(tmp_path / "bad_valid.npz")


def test_plateau_schedule_lowers_the_lr_when_validation_stalls(tmp_path):
    train = write_synthetic_split(tmp_path / "train.npz", 32, seed=0)
    val = write_synthetic_split(tmp_path / "val.npz", 8, seed=1)
    config = T.TrainConfig(epochs=4, batch_size=16, threads=1, device="cpu", schedule="plateau", lr=1e-3,
                           plateau_patience=0, plateau_factor=0.5)
    result = T.train(config, train, val, tmp_path / "m.pt", tmp_path / "ckpt", progress=False)
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(1e-3) and all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < lrs[0]  # patience 0: any epoch without a lower val loss halves it
    assert get_scheme("kaggle4").n_points == 4


def test_a_98_point_split_trains_a_98_point_network(tmp_path):
    """WFLW's scheme travels with the data, into the split, the training run (its flip table and eye corners) and the
    saved model: 196 outputs."""
    def to98(path, out):
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        for key in ("landmarks", "landmarks_image"):
            extra = arrays[key][:, :30] * 0.98 + arrays[key][:, 30:31] * 0.02  # 30 more points near the face
            arrays[key] = np.concatenate([arrays[key], extra], axis=1).astype(np.float32)
        np.savez(out, **arrays, point_scheme=np.array("wflw98"))
        return out

    train = to98(write_synthetic_split(tmp_path / "t68.npz", 32, seed=0), tmp_path / "train.npz")
    val = to98(write_synthetic_split(tmp_path / "v68.npz", 8, seed=1), tmp_path / "val.npz")
    split = T.load_training_split(train)
    assert split.scheme.name == "wflw98" and split.points.shape == (32, 98, 2) and split.complete
    config = T.TrainConfig(epochs=1, batch_size=16, threads=1, device="cpu")
    result = T.train(config, train, val, tmp_path / "m.pt", tmp_path / "ckpt", progress=False)
    model, cfg = load_trained(tmp_path / "m.pt")
    assert model.n_points == 98 and cfg["point_scheme"] == "wflw98" and np.isfinite(result.final["val/nme_interocular"])
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 196)
