"""The stage notebooks chained on a handful of real faces, as `dvc repro` chains them (tiny parameters), with a
method added from outside the study (only a params entry names it) and a distilled student (the distil stage's
module, run as a methods: entry of kind cnn): predict, compare and report take both in."""
import json

import pandas as pd
import papermill as pm
import pytest
import yaml

from flmlib.paths import PROJECT_ROOT

NB = PROJECT_ROOT / "notebooks"
TEST_SETS = ("test_300w_common", "test_aflw2000_lmbox")


def _run(name, run_dir, out_name=None, **parameters):
    pm.execute_notebook(str(NB / name), str(run_dir / (out_name or name)), cwd=str(NB), parameters=parameters,
                        progress_bar=False)


@pytest.mark.slow
def test_prepare_train_predict_compare_report_with_a_plugin_method(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))  # the kernels import the plug-in tests.fake_landmarker
    prepared, reports, model = tmp_path / "prepared", tmp_path / "reports", tmp_path / "models" / "onet.pt"
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(data_root)
    params["test_sets"] = {k: v for k, v in params["test_sets"].items() if k in TEST_SETS}
    params["models"] = {"onet": {**params["models"]["onet"], "options": {"checkpoint": str(model), "device": "cpu"}}}
    two_pass_model = tmp_path / "models" / "two.pt"  # a two-pass method: onet, then a second O-Net on aligned crops
    params["two_pass"] = {"two": {**next(iter(params["two_pass"].values())), "first": "onet", "init": "",
                                  "options": {"checkpoint": str(two_pass_model), "device": "cpu"}}}
    distilled_model = tmp_path / "models" / "distilled.pt"  # the distil stage's student of "two", a methods: entry
    params["methods"] = {"dlib": params["methods"]["dlib"],
                         "fixed": {"kind": "tests.fake_landmarker", "trained_on": "nothing",
                                   "caveats": ["A fixed shape: a test of the plumbing."]},
                         "distilled": {**params["methods"]["onet_distilled"],
                                       "options": {"checkpoint": str(distilled_model), "device": "cpu"}}}
    params["compare"]["n_resamples"] = 50
    params["report"]["headline_test_set"] = "test_aflw2000_lmbox"
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    p = str(params_path)

    _run("01-prepare.ipynb", tmp_path, params_path=p, limit=4, out_dir=str(prepared),
         detection_metrics_path=str(reports / "detection.json"), timing_path=str(reports / "t_prepare.json"),
         contact_sheet_path=str(reports / "sheet.png"))
    _run("02-train.ipynb", tmp_path, params_path=p, model_id="onet", epochs=1, train_path=str(prepared / "train.npz"),
         val_path=str(prepared / "val.npz"), model_path=str(model), checkpoint_dir=str(tmp_path / "ckpt"),
         live_dir=str(tmp_path / "live"), augment_figure=str(reports / "aug.png"),
         curves_figure=str(reports / "curves.png"), timing_path=str(reports / "t_train.json"))
    from flmlib.training_crops import run as cut_training_crops

    aligned = tmp_path / params["two_pass"]["two"]["train_data"]
    cut_training_crops(prepared, aligned, int(aligned.name.removeprefix("aligned")), workers=1, aligned=True)
    _run("02-train.ipynb", tmp_path, "02-train-two.ipynb", params_path=p, model_id="two", epochs=1,
         train_path=str(aligned / "train.npz"), val_path=str(aligned / "val.npz"), model_path=str(two_pass_model),
         checkpoint_dir=str(tmp_path / "ckpt-two"), live_dir=str(tmp_path / "live-two"),
         augment_figure=str(reports / "aug-two.png"), curves_figure=str(reports / "curves-two.png"),
         timing_path=str(reports / "t_train_two.json"), first_pass_path=str(model))
    from flmlib.distil import main as distil_stage

    distil_stage(["--teachers", str(two_pass_model), "--data", str(aligned), "--out", str(distilled_model),
                  "--epochs", "1", "--threads", "1"])
    stages = [json.loads((reports / f).read_text())["stage"] for f in ("t_train.json", "t_train_two.json")]
    assert stages == ["train@onet", "train_two_pass@two"]  # each timing record names the dvc.yaml stage
    for method in ("onet", "two", "dlib", "fixed", "distilled"):
        for test_set in TEST_SETS:
            _run("03-predict.ipynb", tmp_path, f"03-{method}-{test_set}.ipynb", params_path=p, method=method,
                 test_set=test_set, limit=0, prepared_dir=str(prepared), predictions_dir=str(reports / "pred"))
    _run("04-compare.ipynb", tmp_path, params_path=p, limit=0, prepared_dir=str(prepared),
         predictions_dir=str(reports / "pred"), errors_path=str(reports / "errors.csv"),
         regions_path=str(reports / "regions.csv"), metrics_path=str(reports / "metrics.json"),
         detail_path=str(reports / "detail.json"), ced_dir=str(reports / "ced"), timing_path=str(reports / "t_cmp.json"))
    # the experiments' stages on the same tiny data: partial labels (1 epoch) and video stability (1 short clip)
    _run("06-partial-labels.ipynb", tmp_path, params_path=p, prepared_dir=str(prepared), work_dir=str(tmp_path / "pl"),
         results_path=str(reports / "partial_labels.json"), errors_path=str(reports / "pl_errors.csv"),
         figure_path=str(reports / "pl.png"), epochs=1, limit=0)
    from flmlib.video_stage import main as video_stage

    video_stage(["--params", p, "--prepared", str(prepared), "--out", str(reports / "video.json"), "--frames", "12",
                 "--clips", "1"])
    from flmlib.detector_study import main as detector_stage

    detector_yaml = yaml.safe_load((PROJECT_ROOT / "detectors.yaml").read_text())
    detector_yaml["detector_study"].update(test_sets=list(TEST_SETS), limit=3, calibration_faces=12)
    detectors_path = tmp_path / "detectors.yaml"
    detectors_path.write_text(yaml.safe_dump(detector_yaml))
    assert detector_stage(["--params", p, "--detectors", str(detectors_path), "--prepared", str(prepared),
                           "--out", str(reports / "detectors.json"),
                           "--faces-csv", str(reports / "detector_faces.csv"),
                           "--calibration", str(tmp_path / "detector_boxes.json")]) == 0
    from flmlib import bench_pipeline
    from flmlib.config import load_config
    from flmlib.detector_config import load_detector_config

    whole = bench_pipeline.run(load_config(p), load_detector_config(detectors_path), prepared, n_frames=2, rounds=1,
                               seed=0, calibration_path=tmp_path / "detector_boxes.json")
    assert {"hog1 + onet", "blazeface + onet, pipelined", "mediapipe face mesh",
            "mediapipe face mesh, 2 processes"} <= set(whole["pipelines"])
    two = whole["pipelines"]["mediapipe face mesh, 2 processes"]
    assert two["frames"] == 2 and two["found_share"] == whole["pipelines"]["mediapipe face mesh"]["found_share"]
    pair = whole["pipelines"]["blazeface on 2 workers + onet, pipelined"]
    single = whole["pipelines"]["blazeface + onet, pipelined"]
    assert pair["frames"] == 2 and pair["found_share"] == single["found_share"]
    assert pair["nme_interocular"] == pytest.approx(single["nme_interocular"], rel=1e-5)  # same boxes, same points
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- results:start -->\nold\n<!-- results:end -->\nTail\n")
    _run("05-report.ipynb", tmp_path, params_path=p, prepared_dir=str(prepared), predictions_dir=str(reports / "pred"),
         errors_path=str(reports / "errors.csv"), regions_path=str(reports / "regions.csv"),
         detail_path=str(reports / "detail.json"), timings_dir=str(reports / "timings"), figures_dir=str(reports / "fig"),
         speed_path=str(reports / "speed.json"), readme_path=str(readme),
         partial_labels_path=str(reports / "partial_labels.json"), video_path=str(reports / "video.json"),
         detectors_path=str(reports / "detectors.json"), update_readme=True, timing_path=str(reports / "t_report.json"))

    errors = pd.read_csv(reports / "errors.csv")
    assert set(errors["method"]) == {"onet", "two", "dlib", "fixed", "distilled"} and set(errors["test_set"]) == set(TEST_SETS)
    faces = {key: sorted(group["face_id"]) for key, group in errors.groupby(["test_set", "method"])}
    for test_set in TEST_SETS:  # every method on exactly the same faces
        assert faces[(test_set, "onet")] == faces[(test_set, "two")] == faces[(test_set, "dlib")] \
            == faces[(test_set, "fixed")] == faces[(test_set, "distilled")] != []
    detail = json.loads((reports / "detail.json").read_text())
    headline = json.loads((reports / "metrics.json").read_text())
    for test_set in TEST_SETS:
        entry = detail[test_set]["all"]
        assert set(entry["methods"]) == {"onet", "two", "dlib", "fixed", "distilled"}
        assert set(entry["vs_reference"]) == {"onet", "two", "fixed", "distilled"}
        assert entry["methods"]["fixed"]["n_failed"] >= 1  # the plug-in gave up on every third face
        assert 0 <= entry["methods"]["dlib"]["rmse_box/auc@0.08"] <= 1
        assert set(headline[test_set]) == {"onet", "two", "dlib", "fixed", "distilled"}
        assert (reports / "ced" / f"{test_set}.csv").is_file() and (reports / "fig" / f"ced_{test_set}.png").is_file()
    assert "by_yaw" in detail["test_aflw2000_lmbox"]["all"]["detection"]
    text = readme.read_text()
    assert text.startswith("# Title") and text.endswith("Tail\n") and "\nold\n" not in text
    assert "### test_aflw2000_lmbox" in text and "| all | fixed |" in text and "A fixed shape" in text
    assert "**Answer on `test_aflw2000_lmbox`**" in text and "Stage wall times" in text
    assert "### Learning from partly annotated faces" in text and "| masked_loss |" in text
    assert "### Landmarks on video" in text and "frames/s with detection" in text
    assert "### Face detectors" in text and "| `blazeface` |" in text
    detectors = json.loads((reports / "detectors.json").read_text())
    assert set(detectors["test_sets"]) == set(TEST_SETS) and "blazeface" in detectors["calibrations"]
    assert json.loads((reports / "partial_labels.json").read_text())["test_set"] == "test_300w_common"

    # The rendered report: no code on the reader's pages, every image embedded, nothing fetched from the network.
    import re

    from flmlib.report import main as render

    html = tmp_path / "html"
    assert render([str(tmp_path / "01-prepare.ipynb"), str(tmp_path / "05-report.ipynb"), "--out", str(html),
                   "--params", p]) == 0
    page = (html / "05-report.html").read_text()
    images = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images), \
        [s[:40] for s in images if not s.startswith("data:")]
    code_line = "study_caveats"  # a name in the report notebook's code (highlighting keeps a name in one span)
    assert code_line not in page and code_line in (html / "05-report-code.html").read_text()
    assert not re.search(r'(src|href)="https?://', page)
