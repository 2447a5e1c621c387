"""The tidy index of every annotated face, and its person-disjoint splits.

``build_index`` walks ``data/`` (layout in ``../shared/DATA.md``) and returns one row per face:

==============  =========================================================================================
face_id         ``<folder>/<stem>``, e.g. ``300w/afw/134212_1``, ``youtube-faces/test/Luis_Fonsi_21`` or
                ``aflw2000-3d/images/image00002``. Keyed by folder *and* name: YouTube reuses a file name
                across training/ and test/.
image_path      absolute path of the image
source          ``300w``, ``youtube`` or ``aflw2000``
subset          ``afw``, ``helen/trainset``, ``helen/testset``, ``lfpw/trainset``, ``lfpw/testset``,
                ``youtube/training``, ``youtube/test`` or ``aflw2000``
person          grouping key that must not straddle splits (and that bootstraps resample): the photo for
                300-W (AFW photos hold several annotated faces), the person's name for YouTube, the image
                for AFLW2000-3D
landmarks       ``(68, 2) float32``, 0-based pixels of the image
yaw             head yaw in degrees (AFLW2000-3D's 3DMM fit); NaN for the other sources
split           ``train``, ``val`` or ``test``
==============  =========================================================================================

Which faces are test faces comes from the configuration's test sets (:mod:`flmlib.config`): the 300-W subsets they
name, the held-out YouTube people, and every AFLW2000-3D face (no model here trains on it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flmlib.io import DataError, read_keypoints_csv, read_pts

SUBSETS_300W = {"afw": "300w/afw", "helen/trainset": "300w/helen/trainset", "helen/testset": "300w/helen/testset",
                "lfpw/trainset": "300w/lfpw/trainset", "lfpw/testset": "300w/lfpw/testset"}
YOUTUBE_FOLDERS = {"youtube/training": ("youtube-faces/training", "youtube-faces/training_frames_keypoints.csv"),
                   "youtube/test": ("youtube-faces/test", "youtube-faces/test_frames_keypoints.csv")}
AFLW_FOLDER, AFLW_CSV = "aflw2000-3d/images", "aflw2000-3d/landmarks.csv"
#: The 300-W "common subset" test set of the field (HELEN test + LFPW test).
TEST_SUBSETS_300W = ("helen/testset", "lfpw/testset")
SPLITS = ("train", "val", "test")


@dataclass
class SkippedFiles:
    """Files left out because ``skip_bad_files`` was set: ``(path, reason)`` pairs."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str) -> None:
        self.items.append((str(path), reason))

    def __len__(self) -> int:
        return len(self.items)


def youtube_person(file_name: str) -> str:
    """``Luis_Fonsi_21.jpg`` -> ``Luis_Fonsi`` (the name without the trailing ``_<frame>``)."""
    return re.sub(r"_\d+$", "", Path(file_name).stem)


def photo_of(stem: str) -> str:
    """300-W ``<photo>_<k>`` -> ``<photo>``: faces of one photo share a split."""
    return re.sub(r"_\d+$", "", stem)


def _index_300w(root: Path, skipped: SkippedFiles | None) -> list[dict]:
    rows = []
    for subset, folder in SUBSETS_300W.items():
        directory = root / folder
        if not directory.is_dir():
            raise DataError(f"{directory}: folder missing (run `dvc pull`?)")
        for pts_path in sorted(directory.glob("*.pts")):
            image_path = pts_path.with_suffix(".jpg")
            try:
                landmarks = read_pts(pts_path)
                if not image_path.is_file():
                    raise DataError(f"{image_path}: image for {pts_path.name} not found")
            except DataError as exc:
                if skipped is None:
                    raise
                skipped.add(pts_path, str(exc))
                continue
            # LFPW's names (image_0001) number the files of each subset, one face per photo: the file is the photo.
            photo = f"{subset}/{pts_path.stem}" if subset.startswith("lfpw/") else photo_of(pts_path.stem)
            rows.append(dict(face_id=f"{folder}/{pts_path.stem}", image_path=str(image_path), source="300w",
                             subset=subset, person=f"300w/{photo}", landmarks=landmarks))
    return rows


def _index_aflw(root: Path, skipped: SkippedFiles | None) -> list[dict]:
    table, bad_rows = read_keypoints_csv(root / AFLW_CSV, skip_bad_rows=skipped is not None,
                                         extra_columns=("yaw", "pitch", "roll"))
    for message in bad_rows:
        skipped.add(root / AFLW_CSV, message)
    rows = []
    for name, landmarks, yaw in zip(table["name"], table["landmarks"], table["yaw"]):
        image_path = root / AFLW_FOLDER / name
        if not image_path.is_file():
            error = f"{image_path}: listed in {AFLW_CSV} but not found"
            if skipped is None:
                raise DataError(error)
            skipped.add(image_path, error)
            continue
        stem = Path(name).stem
        rows.append(dict(face_id=f"{AFLW_FOLDER}/{stem}", image_path=str(image_path), source="aflw2000",
                         subset="aflw2000", person=f"aflw2000/{stem}", landmarks=landmarks, yaw=float(yaw)))
    return rows


def _index_youtube(root: Path, skipped: SkippedFiles | None) -> list[dict]:
    rows = []
    for subset, (folder, csv_name) in YOUTUBE_FOLDERS.items():
        table, bad_rows = read_keypoints_csv(root / csv_name, skip_bad_rows=skipped is not None)
        for message in bad_rows:
            skipped.add(root / csv_name, message)
        for name, landmarks in zip(table["name"], table["landmarks"]):
            image_path = root / folder / name
            if not image_path.is_file():
                error = f"{image_path}: listed in {csv_name} but not found"
                if skipped is None:
                    raise DataError(error)
                skipped.add(image_path, error)
                continue
            rows.append(dict(face_id=f"{folder}/{Path(name).stem}", image_path=str(image_path), source="youtube",
                             subset=subset, person=f"youtube/{youtube_person(name)}", landmarks=landmarks))
    return rows


def split_groups(groups: list[str], share: float, seed: int) -> set[str]:
    """Pick ``round(share * len(unique groups))`` groups, deterministically from ``seed``.

    The order of ``groups`` does not matter: they are sorted before the seeded permutation.
    """
    unique = np.array(sorted(set(groups)))
    n_pick = int(round(share * len(unique)))
    rng = np.random.default_rng(seed)
    return set(unique[rng.permutation(len(unique))[:n_pick]].tolist())


def assign_splits(index: pd.DataFrame, youtube_test_share: float, val_share: float, seed: int,
                  test_subsets_300w: tuple[str, ...] = TEST_SUBSETS_300W) -> pd.Series:
    """Split labels (``train``, ``val``, ``test``) for an index; no ``person`` appears in two splits.

    300-W: ``test_subsets_300w`` are test, the other subsets train. YouTube: training and test frames are pooled and
    re-split by person (the original frame split puts every test person in training too). AFLW2000-3D: test only.
    Validation takes ``val_share`` of the training groups of each source, never test faces.
    """
    split = pd.Series("train", index=index.index, dtype=object)
    is_300w = index["source"] == "300w"
    split[is_300w & index["subset"].isin(list(test_subsets_300w))] = "test"
    split[index["source"] == "aflw2000"] = "test"
    is_youtube = index["source"] == "youtube"
    test_people = split_groups(index.loc[is_youtube, "person"].tolist(), youtube_test_share, seed)
    split[is_youtube & index["person"].isin(test_people)] = "test"
    for source in ("300w", "youtube"):
        candidates = (index["source"] == source) & (split == "train")
        val_groups = split_groups(index.loc[candidates, "person"].tolist(), val_share, seed + 1)
        split[candidates & index["person"].isin(val_groups)] = "val"
    return split


def build_index(root: str | Path, youtube_test_share: float = 0.2, val_share: float = 0.1, seed: int = 0,
                skip_bad_files: bool = False, test_subsets_300w: tuple[str, ...] = TEST_SUBSETS_300W
                ) -> tuple[pd.DataFrame, SkippedFiles]:
    """Index every annotated face under ``root`` (columns in the module docstring).

    Args:
        test_subsets_300w: the 300-W subsets held out for testing (the union of the configured test sets').
        skip_bad_files: if False, the first bad file raises :class:`DataError` naming it; if True, bad files are
            left out and listed in the returned :class:`SkippedFiles`.
    Returns:
        (index DataFrame sorted by face_id, skipped files).
    """
    root = Path(root)
    skipped = SkippedFiles()
    sink = skipped if skip_bad_files else None
    rows = _index_300w(root, sink) + _index_youtube(root, sink) + _index_aflw(root, sink)
    if not rows:
        raise DataError(f"{root}: no annotated faces found")
    index = pd.DataFrame(rows).sort_values("face_id", ignore_index=True)
    index["yaw"] = index["yaw"].astype(float) if "yaw" in index else np.nan
    duplicated = index["face_id"].duplicated()
    if duplicated.any():
        raise DataError(f"{root}: duplicate face ids {index.loc[duplicated, 'face_id'].head(3).tolist()}")
    unknown = set(test_subsets_300w) - set(SUBSETS_300W)
    if unknown:
        raise ValueError(f"test subsets {sorted(unknown)} are not 300-W subsets {sorted(SUBSETS_300W)}")
    index["split"] = assign_splits(index, youtube_test_share, val_share, seed, tuple(test_subsets_300w))
    return index, skipped


def in_test_set(faces: pd.DataFrame, source: str, subsets: tuple[str, ...] = ()) -> pd.Series:
    """Boolean mask of the rows of ``faces`` (an index or the prepared faces table) in a test set: test faces of
    ``source``, restricted to ``subsets`` when given (300-W)."""
    mask = (faces["source"] == source) & (faces["split"] == "test")
    if subsets:
        mask &= faces["subset"].isin(list(subsets))
    return mask


def yaw_bin_labels(edges: tuple[float, ...]) -> list[str]:
    """Labels of the |yaw| bins cut at ``edges`` degrees, in order (no ``|``: they go into markdown tables):
    ``(30, 60)`` -> ``["yaw 0-30°", "yaw 30-60°", "yaw ≥60°"]``."""
    e = ["0", *[f"{v:g}" for v in edges]]
    return [*[f"yaw {a}-{b}°" for a, b in zip(e[:-1], e[1:])], f"yaw ≥{e[-1]}°"]


def group_order(label: str) -> tuple[float, str]:
    """Sort key that puts yaw bins in angle order and other labels (subsets) alphabetically."""
    match = re.search(r"\d+(\.\d+)?", label)
    return (float(match.group()) if label.startswith("yaw ") and match else float("inf"), label)


def wrap_degrees(angle) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180) (AFLW2000-3D's 3DMM fit reports a few beyond, e.g. -351)."""
    return (np.asarray(angle, np.float64) + 180.0) % 360.0 - 180.0


def yaw_bins(yaw, edges: tuple[float, ...]) -> np.ndarray:
    """``(N,)`` yaw in degrees -> ``(N,)`` bin labels of |yaw| wrapped to [0, 180] (:func:`yaw_bin_labels`; lower
    edges inclusive). A NaN yaw gives an empty label."""
    yaw = np.abs(wrap_degrees(yaw))
    labels = np.array(yaw_bin_labels(edges), dtype=object)
    out = labels[np.searchsorted(np.asarray(edges, np.float64), yaw, side="right")]
    out[~np.isfinite(yaw)] = ""
    return out


def limit_per_subset(index: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The first ``limit`` faces of every (subset, split) pair, for smoke runs; ``limit <= 0`` keeps all."""
    if limit <= 0:
        return index
    return index.groupby(["subset", "split"], sort=False, group_keys=False).head(limit).reset_index(drop=True)
