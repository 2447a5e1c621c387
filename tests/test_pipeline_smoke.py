"""The four stage notebooks chained on a handful of real faces, as `dvc repro` chains them (tiny parameters)."""
import json

import pandas as pd
import papermill as pm
import pytest

from flmlib.paths import PROJECT_ROOT

NB = PROJECT_ROOT / "notebooks"


def _run(name, run_dir, **parameters):
    pm.execute_notebook(str(NB / name), str(run_dir / name), cwd=str(NB), parameters=parameters, progress_bar=False)


@pytest.mark.slow
def test_prepare_train_compare_report_chain(tmp_path, data_root):
    prepared, reports = tmp_path / "prepared", tmp_path / "reports"
    _run("01-prepare.ipynb", tmp_path, data_root=str(data_root), out_dir=str(prepared), limit=4, sheet_faces=4,
         detection_metrics_path=str(reports / "detection.json"), timing_path=str(reports / "t_prepare.json"),
         contact_sheet_path=str(reports / "sheet.png"))
    _run("02-train.ipynb", tmp_path, train_path=str(prepared / "train.npz"), val_path=str(prepared / "val.npz"),
         model_path=str(tmp_path / "onet.pt"), checkpoint_dir=str(tmp_path / "ckpt"), live_dir=str(tmp_path / "live"),
         augment_figure=str(reports / "aug.png"), curves_figure=str(reports / "curves.png"),
         timing_path=str(reports / "t_train.json"), epochs=1, figure_faces=2)
    _run("03-compare.ipynb", tmp_path, prepared_dir=str(prepared), checkpoint=str(tmp_path / "onet.pt"),
         errors_path=str(reports / "errors.csv"), regions_path=str(reports / "regions.csv"),
         summary_path=str(reports / "summary.csv"), metrics_path=str(reports / "metrics.json"),
         ced_dir=str(reports / "ced"), predictions_dir=str(reports / "pred"), timing_path=str(reports / "t_cmp.json"),
         n_resamples=50)
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- results:start -->\nold\n<!-- results:end -->\nTail\n")
    _run("04-report.ipynb", tmp_path, prepared_dir=str(prepared), errors_path=str(reports / "errors.csv"),
         regions_path=str(reports / "regions.csv"), metrics_path=str(reports / "metrics.json"),
         predictions_dir=str(reports / "pred"), figures_dir=str(reports / "fig"), readme_path=str(readme),
         update_readme=True, examples=2, worst=2, timing_path=str(reports / "t_report.json"))

    errors = pd.read_csv(reports / "errors.csv")
    assert set(errors["method"]) == {"onet", "dlib"} and set(errors["test_set"]) == {"test_300w", "test_youtube"}
    counts = errors.groupby(["test_set", "method"]).size().unstack()
    assert (counts["onet"] == counts["dlib"]).all(), "both methods must see identical faces"
    metrics = json.loads((reports / "metrics.json").read_text())
    for test_set in ("test_300w", "test_youtube"):
        assert 0 <= metrics[test_set]["dlib"]["rmse_box/auc@0.08"] <= 1
        assert "rmse_box/auc@0.08/ci95_lo" in metrics[test_set]["onet-minus-dlib"]
        assert (reports / "ced" / f"{test_set}.csv").is_file() and (reports / "fig" / f"ced_{test_set}.png").is_file()
    text = readme.read_text()
    assert text.startswith("# Title") and text.endswith("Tail\n") and "\nold\n" not in text and "rmse_box" in text
