"""Ablations: a model entry trained with one change (``ablation_of`` in params.yaml), compared with its base model.

The study's ablation is the YouTube-Faces jaw: that set's machine-made labels draw the jaw line by another
convention than 300-W's, and every model here trains on both. ``onet_youtube_jaw_masked`` is ``onet`` trained with
the 17 jaw points of YouTube faces left out of the loss (``ignore_points``). The question is whether that changes

* the jaw error on 300-W faces (the convention the model should learn), and
* the inner-face error on YouTube faces (what the masked model still learns from them),

so the table gives, per test set, the mean jaw error (points 0-16, from ``reports/regions.csv``) and the mean
inner-face error (points 17-67, ``nme_interocular_inner`` of ``reports/errors.csv``), both divided by the
inter-ocular distance, for the base and the variant, with the paired difference (variant minus base) and its
person-level bootstrap 95% CI, on the faces both placed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from flmlib.metrics import GROUP_COLUMN, mean_ci_frame

#: Column of the paired frames that :func:`flmlib.metrics.mean_ci_frame` averages (its error name).
_VALUE = "nme_interocular"


def paired_errors(errors: pd.DataFrame, regions: pd.DataFrame, base: str, variant: str) -> pd.DataFrame:
    """Per face and test set: ``jaw`` and ``inner`` error of ``base`` and ``variant`` (columns ``<part>_<model>``),
    with ``person``; faces that either model did not place are left out."""
    jaw = regions[regions["region"] == "jaw"].pivot_table(index=["test_set", "face_id"], columns="method",
                                                            values="error")
    inner = errors.pivot_table(index=["test_set", "face_id"], columns="method", values="nme_interocular_inner")
    person = errors.drop_duplicates(["test_set", "face_id"]).set_index(["test_set", "face_id"])[GROUP_COLUMN]
    missing = [m for m in (base, variant) if m not in inner.columns or m not in jaw.columns]
    if missing:
        raise KeyError(f"no errors of {missing} in the compared results (run the compare stage)")
    frame = pd.DataFrame({f"jaw_{m}": jaw[m] for m in (base, variant)}).join(
        pd.DataFrame({f"inner_{m}": inner[m] for m in (base, variant)}), how="inner")
    frame = frame.join(person, how="left")
    return frame[np.isfinite(frame.drop(columns=GROUP_COLUMN).to_numpy(float)).all(axis=1)].reset_index()


def ablation_table(errors: pd.DataFrame, regions: pd.DataFrame, base: str, variant: str, n_resamples: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """One row per test set and part (``jaw``, ``inner``): mean of base and variant and the paired difference with
    its 95% CI (``diff``, ``ci_lo``, ``ci_hi``), and the number of faces."""
    paired = paired_errors(errors, regions, base, variant)
    rows = []
    for (test_set,), group in paired.groupby(["test_set"], sort=False):
        for part in ("jaw", "inner"):
            diff = pd.DataFrame({"test_set": test_set, "method": variant, "face_id": group["face_id"],
                                 GROUP_COLUMN: group[GROUP_COLUMN], "group": "",
                                 _VALUE: group[f"{part}_{variant}"] - group[f"{part}_{base}"]})
            ci = mean_ci_frame(diff, n_resamples, seed, error_names=[_VALUE]).iloc[0]
            rows.append({"test_set": test_set, "part": part, base: float(group[f"{part}_{base}"].mean()),
                         variant: float(group[f"{part}_{variant}"].mean()), "diff": float(ci["mean"]),
                         "ci_lo": float(ci["ci_lo"]), "ci_hi": float(ci["ci_hi"]), "faces": int(len(group))})
    return pd.DataFrame(rows)


def ablation_markdown(errors: pd.DataFrame, regions: pd.DataFrame, study, test_sets=None) -> str:
    """A table per ablation entry of the study (``ablation_of``), or ``""`` when there is none."""
    blocks = []
    for base, variants in study.ablations().items():
        for variant in variants:
            table = ablation_table(errors, regions, base, variant, study.compare.n_resamples, study.compare.seed)
            if test_sets is not None:
                table = table[table["test_set"].isin(list(test_sets))]
            lines = [f"**{variant}** ({study.models[variant].description or 'a variant of ' + base}) against "
                     f"**{base}**: mean error / inter-ocular distance; Δ = {variant} minus {base}, paired, person-level "
                     "bootstrap 95% CI (negative: the variant is better).", "",
                     f"| test set | points | {base} | {variant} | Δ [95% CI] | faces |", "|---|---|---|---|---|---|"]
            for row in table.itertuples():
                part = "jaw (0-16)" if row.part == "jaw" else "inner face (17-67)"
                lines.append(f"| {row.test_set} | {part} | {getattr(row, base):.4f} | {getattr(row, variant):.4f} | "
                             f"{row.diff:+.4f} [{row.ci_lo:+.4f}, {row.ci_hi:+.4f}] | {row.faces} |")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
