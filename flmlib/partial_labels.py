"""The partial-annotation experiment: four ways to learn from faces with missing keypoints, on one footing.

The Kaggle facial-keypoints set has 7,049 faces, of which only 2,140 carry all 15 keypoints; most carry 4. Its
project tried three workarounds. This module rebuilds that setting on the study's hand-annotated 300-W training
faces and adds the standard answer, a per-point mask in the loss:

1. ``drop_incomplete``: train on the complete faces only;
2. ``fill_previous``: fill every missing coordinate with the previous face's value in file order (pandas'
   ``ffill``, which is what the Kaggle notebooks did), then train on every face as if fully annotated;
3. ``two_models``: a 15-point model trained on the complete faces, plus a 4-point model trained on every face, whose
   4 points replace the 15-point model's;
4. ``masked_loss``: one 15-point model on every face, each face's loss over its annotated points only
   (:mod:`flmlib.losses`).

Setting (:class:`flmlib.config.PartialLabels`): every 300-W training face keeps the 15 Kaggle keypoints taken from its
68 (:func:`flmlib.kaggle_keypoints.kaggle15_from_ibug68`); a seeded ``reduced_share`` of them keep only the usual 4
(eye centres, nose tip, bottom lip centre). Validation faces (only watched, never used to choose) stay complete.
Every strategy trains the same network with the same recipe and number of epochs (so the smaller training sets
also take fewer steps, as in the Kaggle project), and is tested on the fully annotated faces of one test set with
the boxes of the main comparison.

Error: inter-ocular NME over the 15 points (mean point-to-point distance / distance of the outer eye corners, which
are Kaggle points 3 and 5 and iBUG points 45 and 36), also split into the 4 usual points and the 11 that most faces
lack. Intervals are person-level bootstrap 95% CIs; differences are paired, strategy minus ``masked_loss``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from flmlib.crops import box_units_to_image, crop_to_box_units
from flmlib.kaggle_keypoints import USUAL_FOUR, kaggle15_from_ibug68
from flmlib.metrics import GROUP_COLUMN, mean_ci_frame, nme_scheme
from flmlib.point_schemes import KAGGLE15, KAGGLE4

STRATEGIES = ("drop_incomplete", "fill_previous", "two_models", "masked_loss")
#: The strategy the others are compared with (paired differences).
REFERENCE = "masked_loss"
RARE = tuple(k for k in range(KAGGLE15.n_points) if k not in USUAL_FOUR)
SOURCE_PREFIX = "300w/"
ERROR = "nme_interocular"
ERROR_LABEL = "mean error of the 15 Kaggle points / inter-ocular distance (outer eye corners)"


# ------------------------------------------------------------------------------------------------------ data
def kaggle_split(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The 300-W faces of a prepared split (:func:`flmlib.prepare.load_split`) with their 15 Kaggle keypoints.

    Returns the split's arrays for those faces with ``landmarks`` / ``landmarks_image`` ``(N, 15, 2) float32``,
    ``valid`` ``(N, 15)`` all True and ``point_scheme`` ``kaggle15``.
    """
    keep = np.char.startswith(arrays["face_id"].astype(str), SOURCE_PREFIX)
    if not keep.any():
        raise ValueError("the split holds no 300-W face (face_id prefix '300w/')")
    n = int(keep.sum())
    out = {k: (v[keep] if np.ndim(v) and len(v) == len(keep) else v) for k, v in arrays.items()}
    for key in ("landmarks", "landmarks_image"):
        out[key] = kaggle15_from_ibug68(out[key]).astype(np.float32)
    out["valid"] = np.ones((n, KAGGLE15.n_points), bool)
    out["point_scheme"] = np.array(KAGGLE15.name)
    return out


def reduce_faces(split: dict[str, np.ndarray], share: float, seed: int) -> dict[str, np.ndarray]:
    """Cut a seeded ``share`` of the faces to the 4 usual points: their other 11 become missing (NaN, not valid)."""
    n = len(split["face_id"])
    cut = np.zeros(n, bool)
    cut[np.random.default_rng(seed).permutation(n)[: int(round(share * n))]] = True
    valid = split["valid"].copy()
    valid[np.ix_(cut, list(RARE))] = False
    out = dict(split, valid=valid)
    for key in ("landmarks", "landmarks_image"):
        out[key] = np.where(valid[..., None], split[key], np.nan).astype(np.float32)
    return out


def _subset(split: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    n = len(split["face_id"])
    return {k: (v[rows] if np.ndim(v) and len(v) == n else v) for k, v in split.items()}


def drop_incomplete(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Only the faces with all their points."""
    return _subset(split, split["valid"].all(axis=1))


def fill_previous(split: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Kaggle's forward fill: in a seeded file order, each missing point takes the previous face's value of it.

    Values are filled in context-crop pixels: every crop puts its face box at the same place and size, as Kaggle's
    96 x 96 images do, so a position copied from another face means what it meant in the Kaggle notebooks. Faces
    before the first face that has a point cannot be filled and are dropped. The result is marked fully valid, as
    the workaround treats filled values as labels.
    """
    # A stream of its own: the same seed as reduce_faces' draw would put every cut face first, with nothing before it.
    order = np.random.default_rng([seed, 1]).permutation(len(split["face_id"]))
    ordered = _subset(split, order)
    crop = ordered["landmarks"].astype(np.float64)
    filled = pd.DataFrame(crop.reshape(len(crop), -1)).ffill().to_numpy().reshape(crop.shape)
    usable = np.isfinite(filled).all(axis=(1, 2))
    out = _subset(dict(ordered, landmarks=filled.astype(np.float32)), usable)
    size, factor = int(out["crop_size"]), float(out["context_factor"])
    units = crop_to_box_units(out["landmarks"], size, factor)
    out["landmarks_image"] = box_units_to_image(units, out["boxes"]).astype(np.float32)
    out["valid"] = np.ones_like(out["valid"])
    return out


def four_points(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The 4 usual points of every face (scheme ``kaggle4``); they are annotated on every face here."""
    out = dict(split)
    for key in ("landmarks", "landmarks_image"):
        out[key] = split[key][:, list(USUAL_FOUR)]
    out["valid"] = split["valid"][:, list(USUAL_FOUR)]
    out["point_scheme"] = np.array(KAGGLE4.name)
    if not out["valid"].all():
        raise ValueError("some faces lack one of the 4 usual points")
    return out


def save_split(arrays: dict[str, np.ndarray], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------------------------------------- training
def train_config(study, epochs: int | None = None):
    """The :class:`flmlib.train.TrainConfig` of the experiment's network: ``partial_labels``' architecture and
    recipe with the study's shared training knobs, on 300-W faces only. ``epochs``: ``train.epochs`` (smoke runs)
    wins, then ``partial_labels.epochs``, then the recipe's."""
    from flmlib.config import Model
    from flmlib.train import config_for_model

    setting = study.partial_labels
    entry = Model(architecture=setting.architecture, architecture_kwargs=setting.architecture_kwargs,
                  recipe=setting.recipe, train_data="prepared", seed=setting.seed)
    one_model = study.model_copy(update={"models": {"partial_labels": entry}})
    chosen = epochs or study.train.epochs or setting.epochs or None
    return config_for_model(one_model, "partial_labels", epochs=chosen).replace(use_youtube=False, use_300w=True)


def predict_points(model_path: Path, test: dict[str, np.ndarray]) -> np.ndarray:
    """``(N, P, 2)`` image-pixel predictions of a trained model on a prepared test split's crops and boxes."""
    import torch

    from flmlib.augment import central_box
    from flmlib.models import load_trained
    from flmlib.train import predict

    model, config = load_trained(model_path)
    if (int(test["crop_size"]), float(test["context_factor"])) != (config["crop_size"], config["context_factor"]):
        raise ValueError(f"{model_path}: trained on {config['crop_size']} px crops, the test split has "
                         f"{int(test['crop_size'])} px")
    crops = torch.from_numpy(np.ascontiguousarray(test["crops"].transpose(0, 3, 1, 2)))
    images = central_box(crops, model.input_size, float(test["context_factor"]))
    return box_units_to_image(predict(model, images).numpy(), test["boxes"])


def run(study, prepared_dir: str | Path, work_dir: str | Path, progress: bool = True, epochs: int | None = None,
        limit: int = 0) -> tuple[pd.DataFrame, dict]:
    """Train every strategy of ``study.partial_labels`` and score it on its test set.

    Writes models and checkpoints under ``work_dir`` (a killed run resumes each training); the derived training
    splits live there only while their model trains.
    ``limit`` > 0 keeps that many training faces (smoke runs). Returns (per-face errors: ``strategy, face_id,
    person`` and the errors over all 15, the 4 usual and the 11 rare points; the setting's counts).
    """
    from flmlib.prepare import load_split
    from flmlib.train import train

    setting = study.partial_labels
    prepared_dir, work_dir = Path(prepared_dir), Path(work_dir)
    train15 = kaggle_split(load_split(prepared_dir / "train.npz"))
    if limit:
        train15 = _subset(train15, np.arange(min(limit, len(train15["face_id"]))))
    val15 = kaggle_split(load_split(prepared_dir / "val.npz"))
    reduced = reduce_faces(train15, setting.reduced_share, setting.seed)
    test = load_split(prepared_dir / f"{setting.test_set}.npz")
    truth = kaggle15_from_ibug68(test["landmarks_image"])
    config = train_config(study, epochs)

    def fit(name: str, arrays: dict, val: dict) -> Path:
        train_path = save_split(arrays, work_dir / "data" / f"{name}_train.npz")
        val_path = save_split(val, work_dir / "data" / f"{name}_val.npz")
        model_path = work_dir / "models" / f"{name}.pt"
        if progress:
            print(f"{name}: {len(arrays['face_id'])} training faces", flush=True)
        train(config, train_path, val_path, model_path, work_dir / "checkpoints" / name, progress=progress)
        # The derived splits are rebuilt identically (seeded) by a resumed run, so they need not stay on disk.
        train_path.unlink()
        val_path.unlink()
        return model_path

    predictions, train_faces = {}, {}
    complete = drop_incomplete(reduced)
    if {"drop_incomplete", "two_models"} & set(setting.strategies):
        predictions["drop_incomplete"] = predict_points(fit("complete15", complete, val15), test)
        train_faces["drop_incomplete"] = len(complete["face_id"])
    if "fill_previous" in setting.strategies:
        filled = fill_previous(reduced, setting.seed)
        predictions["fill_previous"] = predict_points(fit("filled15", filled, val15), test)
        train_faces["fill_previous"] = len(filled["face_id"])
    if "two_models" in setting.strategies:
        four = predict_points(fit("all4", four_points(reduced), four_points(val15)), test)
        combined = predictions["drop_incomplete"].copy()
        combined[:, list(USUAL_FOUR)] = four
        predictions["two_models"] = combined
        train_faces["two_models"] = len(complete["face_id"])  # and every face for the 4-point model
    if "masked_loss" in setting.strategies:
        predictions["masked_loss"] = predict_points(fit("masked15", reduced, val15), test)
        train_faces["masked_loss"] = len(reduced["face_id"])

    frames = []
    for strategy in setting.strategies:
        pred = predictions[strategy]
        frame = pd.DataFrame({"test_set": setting.test_set, "method": strategy, "face_id": test["face_id"],
                              GROUP_COLUMN: test["person"], "group": ""})
        frame[ERROR] = nme_scheme(pred, truth, KAGGLE15, nonfinite="fail")
        distance = np.linalg.norm(pred - truth, axis=-1)
        distance[~np.isfinite(pred).all(axis=(1, 2))] = np.inf  # a face without points fails, as in ERROR
        iod = np.linalg.norm(truth[:, KAGGLE15.outer_eye_corners[0]] - truth[:, KAGGLE15.outer_eye_corners[1]], axis=-1)
        frame["usual4"] = distance[:, list(USUAL_FOUR)].mean(axis=1) / iod
        frame["rare11"] = distance[:, list(RARE)].mean(axis=1) / iod
        frames.append(frame)
    setting_counts = {
        "train_faces": int(len(reduced["face_id"])),
        "complete_train_faces": int(reduced["valid"].all(axis=1).sum()),
        "reduced_train_faces": int((~reduced["valid"].all(axis=1)).sum()),
        "strategy_train_faces": train_faces,
        "val_faces": int(len(val15["face_id"])),
        "test_faces": int(len(test["face_id"])),
        "test_persons": int(len(np.unique(test["person"]))),
        "epochs": int(config.epochs),
        "architecture": setting.architecture,
        "recipe": setting.recipe,
    }
    return pd.concat(frames, ignore_index=True), setting_counts


# -------------------------------------------------------------------------------------------------- summary
def summarise(errors: pd.DataFrame, setting_counts: dict, study) -> dict:
    """Mean error with its bootstrap CI per strategy (all 15 points, the 4 usual, the 11 rare) and the paired
    difference to ``masked_loss``; JSON-ready."""
    n, seed = study.compare.n_resamples, study.compare.seed
    setting = study.partial_labels
    out = {"test_set": setting.test_set, "error": ERROR_LABEL, "normaliser": "inter-ocular distance (outer eye corners)",
           "reference": REFERENCE, "reduced_share": setting.reduced_share, "seed": setting.seed, **setting_counts,
           "strategies": {}}
    for column in (ERROR, "usual4", "rare11"):
        frame = errors[["test_set", "method", "face_id", GROUP_COLUMN, "group", column]].rename(
            columns={column: ERROR} if column != ERROR else {})
        cis = mean_ci_frame(frame, n, seed, error_names=[ERROR])
        for row in cis.itertuples():
            entry = out["strategies"].setdefault(row.method, {})
            entry[column] = {"mean": row.mean, "ci95": [row.ci_lo, row.ci_hi], "faces": row.n_faces}
    if REFERENCE in set(errors["method"]):
        ref = errors[errors["method"] == REFERENCE].set_index("face_id")
        for strategy in errors["method"].unique():
            if strategy == REFERENCE:
                continue
            mine = errors[errors["method"] == strategy].set_index("face_id").loc[ref.index]
            diff = pd.DataFrame({"test_set": setting.test_set, "method": strategy, "face_id": ref.index,
                                 GROUP_COLUMN: ref[GROUP_COLUMN].to_numpy(), "group": "",
                                 ERROR: mine[ERROR].to_numpy() - ref[ERROR].to_numpy()})
            ci = mean_ci_frame(diff, n, seed, error_names=[ERROR]).iloc[0]
            out["strategies"][strategy]["minus_reference"] = {"mean": float(ci["mean"]),
                                                              "ci95": [float(ci["ci_lo"]), float(ci["ci_hi"])]}
    return out


def results_markdown(results: dict) -> str:
    """The experiment's table (one row per strategy) with a line naming the setting, error and intervals."""
    rows = ["| strategy | training faces | NME, 15 points | 4 usual points | 11 rare points | Δ vs masked loss |",
            "|---|---|---|---|---|---|"]

    def cell(entry: dict) -> str:
        lo, hi = entry["ci95"]
        return f"{entry['mean']:.4f} [{lo:.4f}, {hi:.4f}]"

    ranked = sorted(results["strategies"].items(), key=lambda kv: kv[1][ERROR]["mean"])
    for strategy, entry in ranked:
        diff = entry.get("minus_reference")
        delta = "reference" if strategy == results["reference"] else (
            f"{diff['mean']:+.4f} [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}]" if diff else "")
        faces = results["strategy_train_faces"].get(strategy, "")
        if strategy == "two_models":
            faces = f"{faces} (15-point) + {results['train_faces']} (4-point)"
        rows.append(f"| {strategy} | {faces} | {cell(entry[ERROR])} | {cell(entry['usual4'])} | "
                    f"{cell(entry['rare11'])} | {delta} |")
    note = (f"\n\n{results['test_faces']} fully annotated faces of {results['test_set']} ({results['test_persons']} "
            f"persons). Error: {results['error']}; 95% CIs resample persons; Δ is paired (strategy minus masked loss; "
            f"negative = better than the masked loss). Training: {results['train_faces']} 300-W faces, of which "
            f"{results['reduced_train_faces']} ({results['reduced_share']:.0%}, seed {results['seed']}) keep only the "
            f"4 usual points; {results['architecture']} with the {results['recipe']} recipe, {results['epochs']} "
            "epochs, the same for every strategy.")
    return "\n".join(rows) + note


def verdict(results: dict) -> str:
    """One sentence: does the masked loss beat every other strategy (paired CI entirely above 0 for each)?"""
    others = {s: e["minus_reference"] for s, e in results["strategies"].items() if "minus_reference" in e}
    if not others:
        return "Only one strategy was run."
    beaten = [s for s, d in others.items() if d["ci95"][0] > 0]
    tied = [s for s, d in others.items() if d["ci95"][0] <= 0 <= d["ci95"][1]]
    better = [s for s, d in others.items() if d["ci95"][1] < 0]
    if len(beaten) == len(others):
        return (f"The masked loss beats every other strategy ({', '.join(others)}): each paired difference's CI lies "
                "above 0.")
    parts = []
    if beaten:
        parts.append(f"it beats {', '.join(beaten)}")
    if tied:
        parts.append(f"it cannot be told apart from {', '.join(tied)} (CI includes 0)")
    if better:
        parts.append(f"{', '.join(better)} beat(s) it")
    return "The masked loss does not beat every workaround: " + "; ".join(parts) + "."


def save_results(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def results_figure(results: dict):
    """Error of each strategy with its 95% CI: all 15 points, the 4 usual ones and the 11 rare ones (one panel each)."""
    from flmlib.plots import new_figure

    panels = ((ERROR, "all 15 points"), ("usual4", "4 usual points"), ("rare11", "11 rare points"))
    ranked = sorted(results["strategies"], key=lambda s: results["strategies"][s][ERROR]["mean"], reverse=True)
    fig = new_figure((10, 0.5 * len(ranked) + 1.6))
    axes = fig.subplots(1, len(panels), sharey=True)
    for ax, (key, title) in zip(axes, panels):
        means = [results["strategies"][s][key]["mean"] for s in ranked]
        lo = [m - results["strategies"][s][key]["ci95"][0] for s, m in zip(ranked, means)]
        hi = [results["strategies"][s][key]["ci95"][1] - m for s, m in zip(ranked, means)]
        colours = ["tab:green" if s == results["reference"] else "tab:grey" for s in ranked]
        ax.barh(ranked, means, xerr=[lo, hi], color=colours, capsize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("NME (inter-ocular)")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"Partly annotated training faces: {results['test_set']}, {results['test_faces']} faces", fontsize=10)
    return fig
