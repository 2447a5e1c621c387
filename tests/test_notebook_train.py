"""2-epoch papermill smoke run of notebooks/02-train.ipynb on tiny synthetic prepared splits, in a tmp dir."""
import json

import nbformat
import pytest
import torch

from flmlib.bench_train import write_synthetic_split
from flmlib.models import load_trained
from flmlib.paths import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "02-train.ipynb"


def test_source_notebook_is_clean_with_one_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["language_info"]["name"] == "python"


@pytest.mark.slow
def test_two_epoch_smoke_run(tmp_path):
    import papermill as pm

    train = write_synthetic_split(tmp_path / "prepared" / "train.npz", 48, seed=0)
    val = write_synthetic_split(tmp_path / "prepared" / "val.npz", 12, seed=1)
    out = {name: tmp_path / rel for name, rel in {
        "model_path": "models/onet.pt", "checkpoint_dir": "checkpoints", "live_dir": "dvclive",
        "augment_figure": "figures/augmented.png", "curves_figure": "figures/curves.png",
        "timing_path": "timings/train.json"}.items()}
    import yaml

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["train"].update(batch_size=16, threads=1, device="cpu", use_youtube=False, figure_faces=2)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    pm.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "executed.ipynb"), kernel_name="python3", progress_bar=False,
        parameters={"params_path": str(params_path), "model_id": "onet", "epochs": 2, "train_path": str(train),
                    "val_path": str(val), **{k: str(v) for k, v in out.items()}},
    )
    model, config = load_trained(out["model_path"])
    assert config["epochs_trained"] == 2 and config["train"]["use_youtube"] is False
    assert model(torch.zeros(1, 3, 48, 48)).shape == (1, 136)
    assert out["augment_figure"].stat().st_size > 10_000 and out["curves_figure"].stat().st_size > 10_000
    nme = (out["live_dir"] / "plots" / "metrics" / "val" / "nme_interocular.tsv").read_text().splitlines()
    assert len(nme) == 1 + 2
    timing = json.loads(out["timing_path"].read_text())
    assert timing["epochs"] == 2 and timing["recipe"] == "fast" and timing["model"] == "onet"
    assert (out["checkpoint_dir"] / "last.pt").is_file()
    # the source notebook is untouched by the run
    assert not any(c.get("outputs") for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")


@pytest.mark.slow
def test_run_by_hand_the_notebook_leaves_the_pipeline_outputs_alone(tmp_path):
    """JupyterLab's Run All keeps the parameters cell's defaults: it must write under scratch/, never models/."""
    import hashlib

    import papermill as pm

    def fingerprint(folder):
        return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()} if folder.is_dir() else {}

    guarded = [PROJECT_ROOT / name for name in ("models", "checkpoints", "dvclive", "reports")]
    before = [fingerprint(folder) for folder in guarded]
    train = write_synthetic_split(tmp_path / "train.npz", 32, seed=0)
    val = write_synthetic_split(tmp_path / "val.npz", 8, seed=1)
    # Only the inputs are replaced (the study's prepared data may not exist here); every output keeps its default.
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "by-hand.ipynb"), kernel_name="python3", progress_bar=False,
                        parameters={"train_path": str(train), "val_path": str(val), "epochs": 1})
    assert [fingerprint(folder) for folder in guarded] == before
    assert (PROJECT_ROOT / "scratch" / "models" / "onet.pt").is_file()
