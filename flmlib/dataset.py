"""The tidy index of every annotated face, and its person-disjoint splits.

``build_index`` walks ``data/`` (layout in ``../shared/DATA.md``) and returns one row per face:

==============  =========================================================================================
face_id         ``<folder>/<stem>``, e.g. ``300w/afw/134212_1`` or ``youtube-faces/test/Luis_Fonsi_21``.
                Keyed by folder *and* name: YouTube reuses a file name across training/ and test/.
image_path      absolute path of the image
source          ``300w`` or ``youtube``
subset          ``afw``, ``helen/trainset``, ``helen/testset``, ``youtube/training``, ``youtube/test``
person          grouping key that must not straddle splits: the photo for 300-W (AFW photos hold
                several annotated faces), the person's name for YouTube
landmarks       ``(68, 2) float32``, 0-based pixels of the image
split           ``train``, ``val``, ``test_300w`` or ``test_youtube``
==============  =========================================================================================
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flmlib.io import DataError, read_keypoints_csv, read_pts

SUBSETS_300W = {"afw": "300w/afw", "helen/trainset": "300w/helen/trainset", "helen/testset": "300w/helen/testset"}
YOUTUBE_FOLDERS = {"youtube/training": ("youtube-faces/training", "youtube-faces/training_frames_keypoints.csv"),
                   "youtube/test": ("youtube-faces/test", "youtube-faces/test_frames_keypoints.csv")}
TEST_SUBSET_300W = "helen/testset"
SPLITS = ("train", "val", "test_300w", "test_youtube")


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
            rows.append(dict(face_id=f"{folder}/{pts_path.stem}", image_path=str(image_path), source="300w",
                             subset=subset, person=f"300w/{photo_of(pts_path.stem)}", landmarks=landmarks))
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


def assign_splits(index: pd.DataFrame, youtube_test_share: float, val_share: float, seed: int) -> pd.Series:
    """Split labels for an index (see module docstring); no ``person`` appears in two splits.

    300-W: helen/testset is the test set, afw + helen/trainset train. YouTube: training and test frames are pooled
    and re-split by person (the original frame split puts every test person in training too). Validation takes
    ``val_share`` of the training groups of each source, never test faces.
    """
    split = pd.Series("train", index=index.index, dtype=object)
    is_300w = index["source"] == "300w"
    split[is_300w & (index["subset"] == TEST_SUBSET_300W)] = "test_300w"
    is_youtube = index["source"] == "youtube"
    test_people = split_groups(index.loc[is_youtube, "person"].tolist(), youtube_test_share, seed)
    split[is_youtube & index["person"].isin(test_people)] = "test_youtube"
    for source in ("300w", "youtube"):
        candidates = (index["source"] == source) & (split == "train")
        val_groups = split_groups(index.loc[candidates, "person"].tolist(), val_share, seed + 1)
        split[candidates & index["person"].isin(val_groups)] = "val"
    return split


def build_index(root: str | Path, youtube_test_share: float = 0.2, val_share: float = 0.1, seed: int = 0,
                skip_bad_files: bool = False) -> tuple[pd.DataFrame, SkippedFiles]:
    """Index every annotated face under ``root`` (columns in the module docstring).

    Args:
        skip_bad_files: if False, the first bad file raises :class:`DataError` naming it; if True, bad files are
            left out and listed in the returned :class:`SkippedFiles`.
    Returns:
        (index DataFrame sorted by face_id, skipped files).
    """
    root = Path(root)
    skipped = SkippedFiles()
    sink = skipped if skip_bad_files else None
    rows = _index_300w(root, sink) + _index_youtube(root, sink)
    if not rows:
        raise DataError(f"{root}: no annotated faces found")
    index = pd.DataFrame(rows).sort_values("face_id", ignore_index=True)
    duplicated = index["face_id"].duplicated()
    if duplicated.any():
        raise DataError(f"{root}: duplicate face ids {index.loc[duplicated, 'face_id'].head(3).tolist()}")
    index["split"] = assign_splits(index, youtube_test_share, val_share, seed)
    return index, skipped


def limit_per_subset(index: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The first ``limit`` faces of every (subset, split) pair, for smoke runs; ``limit <= 0`` keeps all."""
    if limit <= 0:
        return index
    return index.groupby(["subset", "split"], sort=False, group_keys=False).head(limit).reset_index(drop=True)
