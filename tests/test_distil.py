"""Distilling a two-pass model's flip test into a second network that runs once per face (flmlib.distil, and
flmlib.distil_experiment around it)."""
import types

import numpy as np
import pytest
import torch
from conftest import constant_onet, save_model_file

from flmlib import distil as D
from flmlib import distil_experiment as E
from flmlib.bench_train import synthetic_arrays
from flmlib.landmarkers.base import MethodSpec
from flmlib.landmarkers.cnn import build, unmirror_box_units
from flmlib.landmarkers.two_pass import TwoPassLandmarker
from flmlib.models import build_model, read_model_file, write_two_pass_model


def _faces(seed: int) -> np.ndarray:
    """An asymmetric face in box units: its flip-averaged answer differs from it."""
    return np.random.default_rng(seed).uniform(0.2, 0.8, (68, 2))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Aligned synthetic crops and two teachers (constant second networks, one shared first pass)."""
    root = tmp_path_factory.mktemp("distil")
    torch.manual_seed(0)  # the networks' random layers: the same teachers whatever ran before
    data = root / "aligned96"
    data.mkdir()
    for name, n, seed in (("train", 64, 0), ("val", 16, 1)):
        arrays = synthetic_arrays(n, seed)
        np.savez(data / f"{name}.npz", **arrays, align_mean=_faces(5))
    first = save_model_file(root / "first.pt", build_model("onet").eval())
    teachers = []
    for k in range(2):
        second = save_model_file(root / f"second{k}.pt", constant_onet(_faces(k)), _faces(5))
        teachers.append(write_two_pass_model(first, second, root / f"teacher{k}.pt"))
    return types.SimpleNamespace(root=root, data=data, first=first, teachers=teachers)


def _student_answers(path, data) -> np.ndarray:
    """The second network of a two-pass file on the validation faces of ``data``, ``(N, 68, 2)`` box units."""
    from flmlib.models import build_from_blob
    from flmlib.train import load_training_split

    model, _ = build_from_blob(read_model_file(path), str(path))
    images, _ = D.validation_sets(load_training_split(data / "val.npz"), D.AugmentConfig(), 48)["plain"]
    with torch.no_grad():
        return model(images).reshape(-1, 68, 2).numpy()


def test_the_student_learns_the_teachers_flip_averaged_answer_and_runs_as_a_two_pass_method(project, tmp_path):
    out = tmp_path / "student.pt"
    # 80 steps: every seed tried ends within 5% of the starting error (8 epochs of 16 faces left some at 40%)
    summary = D.distil(project.teachers, project.data, out, epochs=10, lr=3e-3, batch_size=8, threads=1,
                       progress=False)
    target = np.mean([(f + unmirror_box_units(f[None].astype(np.float32))[0]) / 2 for f in (_faces(0), _faces(1))],
                     axis=0)
    start = np.abs(_faces(0) - target).mean()
    assert start > 0.02  # the teachers' plain answer is far from the averaged one, so the check below can fail
    assert np.abs(_student_answers(out, project.data) - target).mean() < 0.25 * start
    assert len(summary["history"]) == 10 and summary["val_nme_interocular"]["student"]["plain"] > 0
    blob = read_model_file(out)
    assert blob["config"]["distilled"]["teachers"] == [str(p) for p in project.teachers]
    assert not (tmp_path / "student.distil-checkpoint.pt").exists()  # removed once the model is written
    landmarker = build(MethodSpec(id="distilled", kind="cnn"), out, device="cpu")
    assert isinstance(landmarker, TwoPassLandmarker) and not landmarker.second.flip_test
    image = np.random.default_rng(2).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    assert np.isfinite(landmarker.predict(image, np.array([[30.0, 30.0, 130.0, 130.0]]))).all()


def test_the_flip_averaged_target_is_the_landmarkers_flip_test_to_the_bit():
    """The training target (torch, on the device) averages as CNNLandmarker's flip test does (numpy), bit for bit."""
    torch.manual_seed(0)
    models = [build_model("onet").eval() for _ in range(2)]
    images = torch.rand(5, 3, 48, 48) * 255
    with torch.no_grad():
        target = D.flip_averaged(models, images)
        expect = []
        for model in models:
            plain = model(images).reshape(-1, 68, 2)
            mirrored = unmirror_box_units(model(images.flip(3)).reshape(-1, 68, 2).numpy())
            expect.append((plain + torch.from_numpy(mirrored)) / 2)
    assert torch.equal(target, (expect[0] + expect[1]) / 2)
    assert not torch.equal(target, D.flip_averaged(models, images, flip=False))  # the flip changes the answer


def test_a_killed_run_resumes_to_the_same_student(project, tmp_path):
    kwargs = dict(epochs=3, lr=0.01, batch_size=16, threads=1, progress=False)
    D.distil(project.teachers, project.data, tmp_path / "whole.pt", **kwargs)

    def kill_after_second(epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")

    killed = tmp_path / "killed.pt"
    with pytest.raises(KeyboardInterrupt):
        D.distil(project.teachers, project.data, killed, on_epoch_end=kill_after_second, **kwargs)
    assert not killed.exists() and (tmp_path / "killed.distil-checkpoint.pt").exists()
    damaged = tmp_path / "damaged.distil-checkpoint.pt"
    damaged.write_bytes(b"not a checkpoint")  # costs its epochs, never the run
    D.distil(project.teachers, project.data, tmp_path / "damaged.pt", **kwargs)
    assert (tmp_path / "damaged.pt").exists() and not damaged.exists()
    resumed = D.distil(project.teachers, project.data, killed, **kwargs)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3]
    a, b = read_model_file(tmp_path / "whole.pt")["state_dict"], read_model_file(killed)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is not repeated: the same summary comes back and the file stays as it was
    written = killed.stat().st_mtime_ns
    again = D.distil(project.teachers, project.data, killed, **kwargs)
    assert again["history"] == resumed["history"] and killed.stat().st_mtime_ns == written
    other = D.distil(project.teachers, project.data, killed, **{**kwargs, "seed": 1})
    assert other["seed"] == 1 and killed.stat().st_mtime_ns != written  # other settings: trained again


def test_the_distilled_method_is_timed_against_the_reference_in_one_run(project, data_root, tmp_path):
    import pandas as pd
    import yaml

    from flmlib.detect import detect_faces
    from flmlib.io import read_image
    from flmlib.paths import PROJECT_ROOT

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rows, boxes = [], []
    for jpg in sorted((data_root / "300w/helen/testset").glob("*.jpg"))[:6]:
        found = detect_faces(read_image(jpg), 1)
        if len(found) and len(rows) < 2:
            rows.append({"face_id": f"300w/helen/testset/{jpg.stem}", "image_path": str(jpg)})
            boxes.append(found[0])
    np.savez(prepared / "test_300w_common.npz", boxes=np.stack(boxes), face_id=np.array([r["face_id"] for r in rows]))
    pd.DataFrame(rows).to_csv(prepared / "faces.csv", index=False)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params.update(two_pass={}, methods={"dlib": params["methods"]["dlib"]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "student.pt"
    D.distil(project.teachers, project.data, out, epochs=1, batch_size=16, threads=1, progress=False)
    # "teacher0" is not a method of these params: only the reference and the distilled method are timed
    speed = E.time_against(out, "teacher0", tmp_path / "params.yaml", prepared, batch=4, rounds=1)
    assert set(speed["ms_per_face_batched"]) == {"dlib", "distilled"}
    assert all(ms > 0 for ms in speed["ms_per_face_batched"].values()) and speed["ratio_to_reference"]["dlib"] == 1.0
    assert speed["runtime"]["distilled"] == "torch, fp32" and speed["images_per_pass"]["dlib"] is None
    assert speed["cpu"] and speed["batch"] == 4


def test_teachers_and_data_are_checked_with_the_file_named(project, tmp_path):
    with pytest.raises(ValueError, match="first.pt: not a two-pass model file"):
        D.load_teachers([project.first])
    other_first = save_model_file(tmp_path / "other_first.pt", build_model("onet").eval())
    other = write_two_pass_model(other_first, project.root / "second1.pt", tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: its first pass differs"):
        D.load_teachers([project.teachers[0], other])
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("train", "val"):
        np.savez(plain / f"{name}.npz", **synthetic_arrays(8, 0))
    with pytest.raises(ValueError, match="not aligned crops"):
        D.distil(project.teachers, plain, tmp_path / "x.pt", epochs=1, progress=False)
    with pytest.raises(ValueError, match="need positive values"):
        D.distil(project.teachers, project.data, tmp_path / "x.pt", epochs=0, progress=False)


def test_a_narrowed_onet_keeps_the_strongest_channels_of_its_teacher():
    torch.manual_seed(3)
    teacher = build_model("onet").eval()
    same = D.narrowed_onet(teacher, 1.0).eval()
    images = torch.rand(2, 3, 48, 48) * 255
    with torch.no_grad():
        assert torch.allclose(same(images), teacher(images), atol=1e-5)  # width 1 keeps every channel, in order
    half = D.narrowed_onet(teacher, 0.5)
    assert half.features[0].out_channels == 16 and half.fc[1].out_features == 128
    assert sum(p.numel() for p in half.parameters()) == sum(p.numel() for p in build_model("onet", width=0.5).parameters())
    norms = teacher.features[0].weight.abs().sum(dim=(1, 2, 3))
    kept = norms.topk(16).indices.sort().values
    assert torch.equal(half.features[0].weight, teacher.features[0].weight[kept])
    assert half(images).shape == (2, 136)
    with pytest.raises(ValueError, match="needs an O-Net teacher"):
        D.narrowed_onet(build_model("net2", input_size=48, in_channels=1), 0.5)


def test_a_narrower_student_is_written_with_its_width(project, tmp_path):
    out = tmp_path / "narrow.pt"
    summary = D.distil(project.teachers, project.data, out, epochs=1, batch_size=16, threads=1, student_width=0.5,
                       progress=False)
    assert summary["student_width"] == 0.5
    blob = read_model_file(out)
    assert blob["config"]["model_kwargs"]["width"] == 0.5
    landmarker = build(MethodSpec(id="narrow", kind="cnn"), out, device="cpu")
    assert landmarker.second.model.features[0].out_channels == 16


def _distil_yaml(tmp_path, entry: dict) -> tuple:
    import yaml

    from flmlib.paths import PROJECT_ROOT

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    config = tmp_path / "distil.yaml"
    config.write_text(yaml.safe_dump({"distil": {"student": entry}}))
    return config, params_path, params


def test_a_distil_yaml_entry_gives_the_run_its_teachers_and_settings(tmp_path):
    import yaml

    teachers = ["onet_two_pass", "onet_two_pass_seed1"]
    config, params_path, params = _distil_yaml(tmp_path, {"teachers": teachers, "data": "crops/aligned96",
                                                         "epochs": 7, "seed": 2})
    settings = D.read_entry(config, "student", params_path)
    assert settings["teacher_paths"] == ["models/onet_two_pass.pt", "models/onet_two_pass_seed1.pt"]
    assert (settings["epochs"], settings["seed"], settings["lr"]) == (7, 2, D.ENTRY_DEFAULTS["lr"])
    params["train"]["epochs"] = 1  # a smoke run's override wins, as it does for every recipe
    params_path.write_text(yaml.safe_dump(params))
    assert D.read_entry(config, "student", params_path)["epochs"] == 1
    with pytest.raises(ValueError, match="no distil entry 'other'"):
        D.read_entry(config, "other", params_path)
    config, params_path, _ = _distil_yaml(tmp_path, {"teachers": ["onet"], "data": "crops/aligned96"})
    with pytest.raises(ValueError, match="'onet' is not a two_pass entry"):
        D.read_entry(config, "student", params_path)
    config, params_path, _ = _distil_yaml(tmp_path, {"teachers": teachers, "data": "x", "epoch": 3})
    with pytest.raises(ValueError, match=r"distil.yaml: distil.student: unknown keys \['epoch'\]"):
        D.read_entry(config, "student", params_path)
    config, params_path, _ = _distil_yaml(tmp_path, {"teachers": teachers})
    with pytest.raises(ValueError, match=r"distil.yaml: distil.student lacks \['data'\]"):
        D.read_entry(config, "student", params_path)


def test_the_teachers_method_ids_come_from_the_entry_or_the_files(tmp_path):
    import argparse

    teachers = ["onet_two_pass", "onet_two_pass_seed1"]
    config, params_path, _ = _distil_yaml(tmp_path, {"teachers": teachers, "data": "crops/aligned96"})
    parser = argparse.ArgumentParser()
    D.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--entry", "student", "--params", str(params_path),
                              "--out", "x.pt"])
    assert D.teacher_ids(D.settings_from(args, parser)) == teachers
    args = parser.parse_args(["--teachers", "elsewhere/a.pt", "b.pt", "--data", "d", "--out", "x.pt"])
    assert D.teacher_ids(D.settings_from(args, parser)) == ["a", "b"]


def test_the_command_line_trains_an_entry_and_flags_override_it(project, tmp_path, monkeypatch):
    import json

    config, params_path, _ = _distil_yaml(tmp_path, {"teachers": ["onet_two_pass"], "data": str(project.data),
                                                    "epochs": 5})
    monkeypatch.setattr(D, "read_entry", lambda *a: {"teacher_paths": project.teachers, "data_dir": project.data,
                                                      **D.ENTRY_DEFAULTS, "epochs": 5})
    out = tmp_path / "cli.pt"
    D.main(["--config", str(config), "--entry", "student", "--params", str(params_path), "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--threads", "1"])
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["epochs"] == 1 and report["batch_size"] == 16 and len(report["history"]) == 1
    assert list(report)[-1] == "history" and read_model_file(out)["config"]["distilled"]["epochs"] == 1
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    with pytest.raises(SystemExit):
        D.main(["--config", str(config), "--out", str(out)])  # --config needs --entry


def test_every_distil_yaml_entry_is_a_method_that_runs_its_student():
    import yaml

    from flmlib.config import load_config
    from flmlib.paths import PROJECT_ROOT

    entries = yaml.safe_load((PROJECT_ROOT / "distil.yaml").read_text())["distil"]
    stage = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["distil"]["do"]
    teacher_deps = [d for d in stage["deps"] if "item.teachers" in d]
    study = load_config(PROJECT_ROOT / "params.yaml")
    assert entries
    for entry_id, entry in entries.items():
        settings = D.read_entry(PROJECT_ROOT / "distil.yaml", entry_id, PROJECT_ROOT / "params.yaml")
        assert len(settings["teacher_paths"]) == len(teacher_deps)  # the stage depends on every teacher's file
        spec = study.method_spec(entry_id)
        assert spec.kind == "cnn" and spec.options["checkpoint"] == f"models/distilled/{entry_id}.pt"
        assert not spec.options.get("flip_test")  # the student is the flip test, learnt
        assert entry["data"] in {f"crops/aligned{size}" for size in study.crops.aligned_sizes}


def test_the_stage_writes_its_wall_time_and_the_report_lists_it(project, tmp_path):
    import json

    from flmlib.report import stage_times_markdown

    out, timings = tmp_path / "student.pt", tmp_path / "timings"
    D.main(["--teachers", *map(str, project.teachers), "--data", str(project.data), "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--threads", "1", "--device", "cpu",
            "--timing", str(timings / "distil_student.json")])
    record = json.loads((timings / "distil_student.json").read_text())
    assert record["stage"] == "distil" and record["seconds"] > 0 and record["epochs"] == 1
    assert record["device"] == "cpu" and 0 < record["val_nme_interocular"] < 10
    line = stage_times_markdown(timings, tmp_path / "no-predictions")
    assert "distil " in line and "(distil recipe, 1 epochs, validation NME (inter-ocular)" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_a_run_on_the_gpu_trains_the_same_student_as_on_the_cpu_up_to_arithmetic(project, tmp_path):
    kwargs = dict(epochs=2, lr=1e-3, batch_size=16, threads=1, progress=False)
    on_cpu = D.distil(project.teachers, project.data, tmp_path / "cpu.pt", device="cpu", **kwargs)
    on_gpu = D.distil(project.teachers, project.data, tmp_path / "gpu.pt", device="cuda", **kwargs)
    assert on_gpu["device"].startswith("cuda") and on_cpu["device"] == "cpu"
    cpu_points = _student_answers(tmp_path / "cpu.pt", project.data)
    gpu_points = _student_answers(tmp_path / "gpu.pt", project.data)
    # the same draws (CPU generator), so only the arithmetic differs: a small fraction of the box
    assert np.abs(cpu_points - gpu_points).max() < 1e-2
