import json
import os
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


def _png(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_outputs_of_colliding_names_stay_apart(good_image, tmp_path, capsys):
    from flmlib.cli import output_stems
    from pathlib import Path

    assert output_stems([Path("x/a.jpg"), Path("x/a.png"), Path("x/a-2.jpg")]) == ["a", "a-3", "a-2"]
    assert output_stems([Path("x/A.jpg"), Path("y/a.jpg")]) == ["A", "a-2"]
    folder = tmp_path / "in"
    folder.mkdir()
    face = cv2.cvtColor(cv2.imread(str(good_image)), cv2.COLOR_BGR2RGB)
    (folder / "a.jpg").write_bytes(good_image.read_bytes())
    _png(folder / "a.png", face)
    (folder / "a-2.jpg").write_bytes(good_image.read_bytes())
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--method", "dlib", "--out", str(out)]) == EXIT_OK, capsys.readouterr().err
    records = [json.loads(p.read_text())["image"] for p in sorted(out.glob("*.json"))]
    assert sorted(records) == sorted(str(folder / n) for n in ("a.jpg", "a.png", "a-2.jpg"))


def test_out_must_not_be_an_input_folder(good_image, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "face.jpg").write_bytes(good_image.read_bytes())
    before = sorted(p.name for p in folder.iterdir())
    assert main(["predict", str(folder), "--method", "dlib", "--out", str(folder)]) == 2
    assert "is an input folder" in capsys.readouterr().err
    assert main(["predict", str(folder / "face.jpg"), "--method", "dlib", "--out", str(folder)]) == 2
    assert "holds input images" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_unwritable_out_is_a_command_line_error(good_image, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out in (a_file, a_file / "under"):
        assert main(["predict", str(good_image), "--method", "dlib", "--out", str(out)]) == 2
        assert "cannot create or write the output folder" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a read-only folder; the case needs an ordinary user on POSIX")
def test_a_read_only_out_folder_is_a_command_line_error(good_image, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["predict", str(good_image), "--method", "dlib", "--out", str(locked)]) == 2
    assert "cannot create or write the output folder" in capsys.readouterr().err


def test_bad_upsample_is_a_command_line_error(good_image, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(good_image), "--upsample", "-1", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--upsample must be 0..4" in err and "array" not in err


def test_corrupt_model_files_exit_3_with_the_file_named(good_image, tmp_path, capsys):
    for name in ("random.pt", "random.onnx"):
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(1).bytes(2048))
        code = main(["predict", str(good_image), "--checkpoint", str(path), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == EXIT_MODEL and name in err and "Traceback" not in err and "weights_only=False" not in err


def test_a_decompression_bomb_is_skipped_and_the_next_image_written(good_image, tmp_path, capsys):
    from conftest import write_png_bomb

    bomb = write_png_bomb(tmp_path / "bomb.png")
    out = tmp_path / "out"
    code = main(["predict", str(bomb), str(good_image), "--method", "dlib", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_SKIPPED and "bomb.png: 60000 x 60000 pixels is more than the limit" in err
    assert (out / f"{good_image.stem}.json").is_file()


class _Unplacing:
    """A method that places the first face of each call and gives up (NaN) on the rest, or fails outright."""

    name = "dlib"

    def __init__(self, crash=False):
        self.crash = crash

    def predict_batch(self, images, boxes_list):
        if self.crash:
            raise RuntimeError("worker exited with status 1")
        out = []
        for boxes in boxes_list:
            points = np.repeat(np.asarray(boxes, np.float32)[:, None, :2], 68, axis=1)
            points[1:] = np.nan
            out.append(points)
        return out


def test_a_face_the_method_cannot_place_is_reported_not_a_traceback(good_image, tmp_path, capsys, monkeypatch):
    import flmlib.predictor

    two_faces = lambda image, upsample: np.array([[10, 10, 60, 60], [70, 10, 120, 60]], np.float32)  # noqa: E731
    monkeypatch.setattr(flmlib.predictor, "detect_faces", two_faces)
    monkeypatch.setattr(flmlib.predictor.Predictor.__init__, "__defaults__", (None, two_faces))
    monkeypatch.setattr(flmlib.predictor, "build_landmarker", lambda name, **kw: _Unplacing())
    out = tmp_path / "out"
    code = main(["predict", str(good_image), str(good_image.with_name("nope.jpg")), "--method", "dlib",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_SKIPPED and "could not place the points of face(s) [1] of 2" in err
    record = json.loads((out / f"{good_image.stem}.json").read_text())  # valid JSON: null, not NaN
    assert record["faces"][0]["points"] is not None and record["faces"][1]["points"] is None
    assert (out / f"{good_image.stem}.png").is_file()
    monkeypatch.setattr(flmlib.predictor, "build_landmarker", lambda name, **kw: _Unplacing(crash=True))
    code = main(["predict", str(good_image), "--method", "dlib", "--out", str(tmp_path / "out2")])
    assert code == EXIT_INPUT_SKIPPED and "worker exited" in capsys.readouterr().err


def test_checkpoint_is_refused_for_a_method_with_its_own_model(good_image, tmp_path, capsys):
    assert main(["predict", str(good_image), "--method", "dlib", "--checkpoint", "x.pt", "--out", str(tmp_path)]) == 2
    assert "brings its own model" in capsys.readouterr().err


def test_a_folder_is_read_and_detected_in_worker_processes_with_the_same_results(data_root, checkpoint, tmp_path,
                                                                                 capsys):
    images = sorted((data_root / "300w/helen/testset").glob("*.jpg"))[:4]
    folder = tmp_path / "in"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "broken.jpg").write_text("not a JPEG")  # named and skipped in a worker as in one process
    outputs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"out{workers}"
        code = main(["predict", str(folder), "--method", "onet", "--checkpoint", str(checkpoint), "--out", str(out),
                     "--workers", workers, "-v"])
        captured = capsys.readouterr()
        assert code == EXIT_INPUT_SKIPPED and "broken.jpg" in captured.err
        assert "images/s" in captured.out and captured.out.count("face(s) ->") == 4
        outputs[workers] = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert len(outputs["0"]) == 4 and outputs["0"] == outputs["2"]
    with pytest.raises(SystemExit):
        main(["predict", str(folder), "--workers", "-1", "--out", str(tmp_path / "x")])


@pytest.mark.skipif(not __import__("flmlib.paths", fromlist=["x"]).project_path(".venv-mediapipe/bin/python").exists(),
                    reason="the MediaPipe environment is not built (make mediapipe-env)")
def test_predict_with_another_detector_needs_and_uses_its_calibration(good_image, checkpoint, tmp_path, capsys,
                                                                      monkeypatch):
    from flmlib import face_detectors
    from flmlib.face_detectors import BoxCalibration, write_calibrations

    args = ["predict", str(good_image), "--detector", "blazeface", "--checkpoint", str(checkpoint), "--device", "cpu"]
    monkeypatch.setattr(face_detectors, "CALIBRATION_PATH", str(tmp_path / "none.json"))
    assert main([*args, "--out", str(tmp_path / "a")]) == EXIT_MODEL
    assert "dvc repro detectors" in capsys.readouterr().err
    calibration = write_calibrations(tmp_path / "boxes.json", {"blazeface": BoxCalibration(faces=5)}, "identity")
    monkeypatch.setattr(face_detectors, "CALIBRATION_PATH", str(calibration))
    assert main([*args, "--out", str(tmp_path / "b"), "-q"]) == EXIT_OK
    record = json.loads((tmp_path / "b" / f"{good_image.stem}.json").read_text())
    assert record["detector"]["name"] == "blazeface" and record["detector"]["kind"] == "mediapipe_blazeface"
    assert len(record["faces"]) >= 1 and np.array(record["faces"][0]["points"]).shape == (68, 2)
    with pytest.raises(SystemExit) as usage:  # an unknown detector is a command-line error (exit 2)
        main(["predict", str(good_image), "--detector", "yolo", "--out", str(tmp_path / "c")])
    assert usage.value.code == 2 and "hog1" in capsys.readouterr().err
