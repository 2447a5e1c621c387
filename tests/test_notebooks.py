"""Committed notebooks are clean, and the prepare notebook runs end to end on a handful of faces."""
import json
from pathlib import Path

import nbformat
import numpy as np
import papermill as pm
import pytest

from flmlib.paths import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs_and_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs: clear them"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert nb.metadata["kernelspec"]["name"] == "python3" and "language_info" in nb.metadata


def test_every_stage_notebook_exists():
    names = {p.name for p in NOTEBOOKS}
    assert names >= {"01-prepare.ipynb", "02-train.ipynb", "03-compare.ipynb", "04-report.ipynb"}


@pytest.mark.slow
def test_prepare_notebook_smoke(tmp_path, data_root):
    out = tmp_path / "prepared"
    pm.execute_notebook(
        str(PROJECT_ROOT / "notebooks/01-prepare.ipynb"), str(tmp_path / "01.ipynb"), cwd=str(PROJECT_ROOT / "notebooks"),
        parameters=dict(data_root=str(data_root), out_dir=str(out), detection_metrics_path=str(tmp_path / "det.json"),
                        timing_path=str(tmp_path / "t.json"), contact_sheet_path=str(tmp_path / "sheet.png"),
                        limit=3, workers=2, sheet_faces=4),
        progress_bar=False,
    )
    summary = json.loads((tmp_path / "det.json").read_text())
    assert set(summary["by_split"]) == {"train", "val", "test_300w", "test_youtube"}
    assert (tmp_path / "sheet.png").stat().st_size > 0
    with np.load(out / "train.npz") as train:
        assert train["crops"].shape[1:] == (96, 96, 3) and len(train["face_id"]) > 0
