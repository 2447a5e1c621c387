"""The partial-annotation experiment (flmlib.partial_labels) on synthetic prepared splits."""
import numpy as np

from flmlib import partial_labels as PL
from flmlib.bench_train import synthetic_arrays
from flmlib.config import load_config
from flmlib.kaggle_keypoints import USUAL_FOUR


def _split(n, seed, sources=("300w/synthetic", "youtube-faces/synthetic")):
    arrays = synthetic_arrays(n, seed=seed, sources=sources)
    arrays["person"] = np.array([f"p{k // 2}" for k in range(n)])
    return arrays


def test_reduction_keeps_the_usual_four_on_the_chosen_share():
    split = PL.kaggle_split(_split(40, 0))
    assert len(split["face_id"]) == 20 and split["landmarks"].shape == (20, 15, 2)  # 300-W faces only
    reduced = PL.reduce_faces(split, 0.7, seed=0)
    cut = ~reduced["valid"].all(axis=1)
    assert cut.sum() == 14 and reduced["valid"][:, list(USUAL_FOUR)].all()
    assert np.isnan(reduced["landmarks"][cut][:, list(PL.RARE)]).all()
    assert np.array_equal(PL.reduce_faces(split, 0.7, seed=0)["valid"], reduced["valid"])  # seeded
    assert not np.array_equal(PL.reduce_faces(split, 0.7, seed=1)["valid"], reduced["valid"])


def test_forward_fill_copies_the_previous_faces_points_in_file_order():
    split = PL.reduce_faces(PL.kaggle_split(_split(40, 0)), 0.7, seed=0)
    filled = PL.fill_previous(split, seed=3)
    assert filled["valid"].all() and np.isfinite(filled["landmarks"]).all()
    order = np.random.default_rng([3, 1]).permutation(len(split["face_id"]))
    ordered = split["landmarks"][order]
    first_complete = int(np.flatnonzero(np.isfinite(ordered).all(axis=(1, 2)))[0])
    assert len(filled["face_id"]) == len(order) - first_complete  # faces before any full face cannot be filled
    for row in range(first_complete + 1, len(order)):
        for k in PL.RARE:
            if np.isnan(ordered[row, k, 0]):
                # the value of the closest earlier face that has the point
                earlier = [r for r in range(row - 1, -1, -1) if np.isfinite(ordered[r, k, 0])][0]
                assert np.allclose(filled["landmarks"][row - first_complete, k], ordered[earlier, k])
    # image coordinates follow the crop coordinates through the face box
    kept = split["valid"][order][first_complete:].all(axis=1)
    assert np.allclose(filled["landmarks_image"][kept], split["landmarks_image"][order][first_complete:][kept], atol=1e-3)


def test_forward_fill_with_the_reduction_seed_fills_more_faces_than_it_drops():
    """The fill order must not be the reduction's draw: that would put every cut face before any complete one."""
    split = PL.reduce_faces(PL.kaggle_split(_split(400, 0)), 0.7, seed=0)
    complete = PL.drop_incomplete(split)
    filled = PL.fill_previous(split, seed=0)
    assert len(filled["face_id"]) > 0.9 * len(split["face_id"]) > len(complete["face_id"])


def test_every_strategy_trains_and_is_scored_with_paired_intervals(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for name, n, seed in (("train", 48, 0), ("val", 12, 1), ("test_300w_common", 16, 2)):
        np.savez(prepared / f"{name}.npz", **_split(n, seed))
    study = load_config("params.yaml")
    study = study.model_copy(update={"train": study.train.model_copy(update={"batch_size": 8, "threads": 1,
                                                                             "device": "cpu"})})
    errors, counts = PL.run(study, prepared, tmp_path / "work", progress=False, epochs=1)
    assert set(errors["method"]) == set(PL.STRATEGIES) and len(errors) == 4 * 16
    assert np.isfinite(errors[[PL.ERROR, "usual4", "rare11"]].to_numpy()).all()
    assert counts["train_faces"] == 24 and counts["complete_train_faces"] + counts["reduced_train_faces"] == 24
    assert counts["strategy_train_faces"]["drop_incomplete"] == counts["complete_train_faces"]
    # two_models = the complete-face 15-point model with the 4-point model's points
    two, drop = (errors[errors["method"] == s] for s in ("two_models", "drop_incomplete"))
    assert np.allclose(two["rare11"].to_numpy(), drop["rare11"].to_numpy())
    assert (tmp_path / "work" / "models" / "all4.pt").is_file()
    results = PL.summarise(errors, counts, study)
    masked = results["strategies"]["masked_loss"]
    assert "minus_reference" not in masked and masked[PL.ERROR]["ci95"][0] <= masked[PL.ERROR]["mean"]
    for strategy in ("drop_incomplete", "fill_previous", "two_models"):
        diff = results["strategies"][strategy]["minus_reference"]
        assert diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    table = PL.results_markdown(results)
    assert table.count("\n| ") == 4 and "reference" in table and "16 fully annotated faces" in table
    assert PL.verdict(results).startswith("The masked loss")
    PL.results_figure(results)
