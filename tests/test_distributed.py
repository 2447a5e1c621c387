"""Data-parallel training: two CPU processes with gloo, started by torchrun, against one process.

The stated tolerance: after 2 epochs (8 AdamW steps at lr 3e-3) every parameter agrees within 1e-4 (float summation
order differs between one process and an all-reduce of two halves) and the validation NME within 1e-4.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

from flmlib import train as T
from flmlib.bench_train import write_synthetic_split

PARAM_TOLERANCE = 1e-4
SETTINGS = dict(epochs=2, batch_size=16, augment=False, threads=1, device="cpu", seed=0)


@pytest.fixture(scope="module")
def tiny_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return write_synthetic_split(root / "train.npz", 64, seed=0), write_synthetic_split(root / "val.npz", 16, seed=1)


def _torchrun(tmp_path, train, val, out, processes=2, **settings):
    sets = [arg for key, value in {**SETTINGS, **settings}.items() for arg in ("--set", f"{key}={value}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "flmlib.train_cli", "--train", str(train), "--val", str(val), "--out", str(out),
           "--checkpoint-dir", str(tmp_path / "ckpt"), *sets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_splits, tmp_path):
    train, val = tiny_splits
    run = _torchrun(tmp_path, train, val, tmp_path / "ddp.pt")
    assert run.returncode == 0, run.stderr[-3000:]
    one = T.train(T.TrainConfig(**SETTINGS), train, val, tmp_path / "one.pt", tmp_path / "ckpt_one", progress=False)

    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)
    single = torch.load(tmp_path / "one.pt", weights_only=False)
    assert ddp["config"]["processes"] == 2 and "processes" not in single["config"]
    worst = max(float((ddp["state_dict"][k] - single["state_dict"][k]).abs().max()) for k in single["state_dict"])
    assert worst < PARAM_TOLERANCE
    # the parameters did move: the comparison is not between two untouched initialisations
    start = T.build_model("onet").state_dict()
    assert any(not torch.equal(start[k], single["state_dict"][k]) for k in start)
    assert ddp["config"]["val"]["val/nme_interocular"] == pytest.approx(one.final["val/nme_interocular"], abs=1e-4)

    # only rank 0 wrote: one checkpoint, holding both ranks' augmentation streams
    ckpt = torch.load(tmp_path / "ckpt" / T.CHECKPOINT_NAME, weights_only=False)
    assert len(ckpt["augment_rng_ranks"]) == 2 and ckpt["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [T.CHECKPOINT_NAME]

    # a second start finds the finished checkpoint on every rank and does not train again
    again = _torchrun(tmp_path, train, val, tmp_path / "ddp_again.pt")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stdout + again.stderr
    redo = torch.load(tmp_path / "ddp_again.pt", weights_only=False)
    assert all(torch.equal(redo["state_dict"][k], ddp["state_dict"][k]) for k in ddp["state_dict"])


def test_a_global_batch_that_does_not_split_is_named(tiny_splits, tmp_path):
    train, val = tiny_splits
    run = _torchrun(tmp_path, train, val, tmp_path / "bad.pt", batch_size=15)
    assert run.returncode != 0 and "batch_size=15 does not split over 2 processes" in run.stderr


def test_the_cli_trains_alone_and_names_a_bad_setting(tiny_splits, tmp_path):
    from flmlib import train_cli

    train, val = tiny_splits
    assert train_cli.main(["--train", str(train), "--val", str(val), "--out", str(tmp_path / "m.pt"),
                           "--checkpoint-dir", str(tmp_path / "c"), "--set", "epochs=1", "--set", "device=cpu"]) == 0
    assert np.isfinite(torch.load(tmp_path / "m.pt", weights_only=False)["config"]["val"]["val/nme_interocular"])
    with pytest.raises(SystemExit, match="no_such_field"):
        train_cli.main(["--train", str(train), "--val", str(val), "--out", str(tmp_path / "m.pt"),
                        "--set", "no_such_field=1"])
