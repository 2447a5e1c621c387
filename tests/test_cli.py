import json
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest
import torch

from flmlib.cli import EXIT_INPUT_SKIPPED, EXIT_MODEL, EXIT_OK, main
from flmlib.models import build_model
from flmlib.train import TrainConfig, model_config, save_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("onet")
    path = tmp_path_factory.mktemp("cli") / "onet.pt"
    save_model(path, model, model_config(TrainConfig(), types.SimpleNamespace(crop_size=96, context_factor=2.0), model))
    return path


@pytest.fixture(scope="module")
def good_image(data_root):
    return next(iter(sorted((data_root / "300w/helen/testset").glob("*.jpg"))))


@pytest.fixture
def bad_inputs(tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is text, not a JPEG")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, np.uint8))
    return {"missing": tmp_path / "missing.jpg", "not_image": not_image, "no_face": blank}


def test_predict_good_and_bad_inputs(good_image, bad_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(good_image), *(str(p) for p in bad_inputs.values())]
    code = main(["predict", *args, "--model", "dlib", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == EXIT_INPUT_SKIPPED
    for kind, path in bad_inputs.items():
        assert str(path) in captured.err, kind
    assert "no such file" in captured.err and "not a readable image" in captured.err and "no face" in captured.err
    record = json.loads((out / f"{good_image.stem}.json").read_text())
    assert record["method"] == "dlib" and record["image"] == str(good_image)
    image = cv2.imread(str(good_image))
    assert (record["height"], record["width"]) == image.shape[:2]
    points = np.array(record["faces"][0]["points"])
    assert points.shape == (68, 2) and len(record["faces"][0]["box"]) == 4
    png = cv2.imread(str(out / f"{good_image.stem}.png"))
    assert png.shape == image.shape and not np.array_equal(png, image)  # the drawing changed pixels
    assert sorted(p.name for p in out.iterdir()) == [f"{good_image.stem}.json", f"{good_image.stem}.png"]


def test_predict_onet_on_a_folder(good_image, checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / good_image.name).write_bytes(good_image.read_bytes())
    (folder / "annotation.pts").write_text("not an image and not picked up from a folder")
    out = tmp_path / "out"
    code = main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu"])
    assert code == EXIT_OK, capsys.readouterr().err
    record = json.loads((out / f"{good_image.stem}.json").read_text())
    assert record["method"] == "onet" and record["model"] == str(checkpoint)
    assert np.array(record["faces"][0]["points"]).shape == (68, 2)


def test_predict_with_a_missing_checkpoint(good_image, tmp_path, capsys):
    code = main(["predict", str(good_image), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)])
    assert code == EXIT_MODEL
    assert "none.pt" in capsys.readouterr().err


def test_export_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "onet.onnx"
    assert main(["export", "--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(out)]) == EXIT_OK
    assert out.stat().st_size > 100_000 and "max |diff|" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == EXIT_MODEL


def test_help_and_exit_code_through_the_process(bad_inputs, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "flmlib.cli", *a], capture_output=True, text=True)  # noqa: E731
    helped = run("predict", "--help")
    assert helped.returncode == 0
    assert "IMAGE_OR_DIR" in helped.stdout and "exit codes" in helped.stdout and "--checkpoint" in helped.stdout
    failed = run("predict", str(bad_inputs["missing"]), "--model", "dlib", "--out", str(tmp_path))
    assert failed.returncode == EXIT_INPUT_SKIPPED and "missing.jpg: no such file" in failed.stderr
    assert run("predict").returncode == 2  # argparse: no input given
