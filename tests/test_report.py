"""HTML rendering of notebooks, the index, and the README results block."""
import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from flmlib import report as R
from flmlib.paths import PROJECT_ROOT


def _tiny_notebook(path, title="Compare the methods"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    code = nbformat.v4.new_code_cell("secret_source_marker = 6 * 7\nprint(secret_source_marker)", execution_count=1)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="forty-two-output\n")]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nSome text."), code]
    nbformat.write(nb, path)
    return path


def test_render_notebook_and_index(tmp_path):
    nb1 = _tiny_notebook(tmp_path / "03-compare.ipynb")
    nb2 = _tiny_notebook(tmp_path / "04-report.ipynb", title="Report & figures")
    out = tmp_path / "html"
    index = R.render_report([nb1, nb2], out, title="flm-study", notes=["dlib may have seen these faces"])
    page = (out / "03-compare.html").read_text()
    assert "forty-two-output" in page and "secret_source_marker" not in page  # the reader's page: no code
    code_page = (out / "03-compare-code.html").read_text()
    assert "forty-two-output" in code_page and "secret_source_marker" in code_page
    assert re.search(r"<title>\s*Compare the methods\s*</title>", page)
    text = index.read_text()
    hrefs = re.findall(r'<a href="([^"]+)">([^<]+)</a>', text)
    assert hrefs == [("03-compare.html", "Compare the methods"), ("03-compare-code.html", "with code"),
                     ("04-report.html", "Report &amp; figures"), ("04-report-code.html", "with code")]
    assert all((out / h).is_file() for h, _ in hrefs)
    assert "dlib may have seen these faces" in text
    for html_page in out.glob("*.html"):  # nothing is fetched from the network when the report is opened
        assert not re.search(r'(src|href)="https?://', html_page.read_text()), html_page.name


def test_render_hides_input_on_request(tmp_path):
    nb = _tiny_notebook(tmp_path / "a.ipynb")
    R.render_notebook(nb, tmp_path / "html", hide_input=True)
    page = (tmp_path / "html" / "a.html").read_text()
    assert "forty-two-output" in page and "secret_source_marker" not in page
    R.render_notebook(nb, tmp_path / "html", hide_input=False)
    assert "secret_source_marker" in (tmp_path / "html" / "a-code.html").read_text()


def test_render_missing_notebook_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ipynb"):
        R.render_notebook(tmp_path / "nope.ipynb", tmp_path)


def test_title_falls_back_to_file_stem(tmp_path):
    nb = nbformat.v4.new_notebook()
    assert R.notebook_title(nb, "02-train") == "02-train"


README = """# flm-study

Intro text that must survive.
<!-- results:start -->
old table
<!-- results:end -->

## How to run
make repro
"""


def test_readme_block_rewrite_is_idempotent_and_keeps_outside_text(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert R.update_readme(readme, "| new | table |")
    first = readme.read_text()
    assert "old table" not in first and "| new | table |" in first
    before, after = README.split("<!-- results:start -->")[0], README.split("<!-- results:end -->")[1]
    assert first.startswith(before) and first.endswith(after)
    assert not R.update_readme(readme, "| new | table |")
    assert readme.read_text() == first


@pytest.mark.parametrize("text", ["no markers", "<!-- results:end -->\n<!-- results:start -->\n",
                                  "<!-- results:start -->\n<!-- results:start -->\n<!-- results:end -->"])
def test_readme_block_needs_one_ordered_pair_of_markers(text):
    with pytest.raises(ValueError, match="README.md"):
        R.replace_marked_block(text, "x", source="README.md")


PARAMS = """
test_sets:
  helen-test: {source: 300w, subsets: [helen/testset], breakdown: subset, description: "HELEN test",
               caveats: ["dlib saw it."]}
  aflw-test: {source: aflw2000, breakdown: yaw, description: "AFLW2000-3D"}
models:
  onet: {architecture: onet, recipe: fast, train_data: prepared, trained_on: "300-W train", caveats: ["Small net."]}
  onet_s1: {architecture: onet, recipe: fast, train_data: prepared, seed: 1, repeat_of: onet}
two_pass: {}
methods:
  dlib: {kind: dlib_predictor, trained_on: "300-W"}
  mesh: {kind: mediapipe_mesh, points: mapped, caveats: ["Mapped points."]}
reference: dlib
report: {headline_test_set: aflw-test, examples: 2, worst: 2, seed: 0}
partial_labels: {test_set: helen-test}
video: {method: onet, test_set: helen-test}
"""


def _study():
    import yaml

    from flmlib.config import parse_config

    base = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    return parse_config({**base, **yaml.safe_load(PARAMS)}, "test params")


def _detail():
    from flmlib.compare import study_metrics

    rng = np.random.default_rng(0)
    rows = []
    for test_set, groups in (("helen-test", ["helen/testset"]), ("aflw-test", ["yaw 0-30°", "yaw ≥60°"])):
        for method, scale in (("onet", 0.05), ("onet_s1", 0.052), ("dlib", 0.03), ("mesh", 0.04)):
            errors = rng.gamma(2.0, scale / 2, 24)
            if method == "mesh":
                errors[0] = np.inf  # one face the method could not place
            rows.append(pd.DataFrame({"test_set": test_set, "method": method, "face_id": [f"f{i}" for i in range(24)],
                                      "person": [f"p{i // 2}" for i in range(24)], "group": np.resize(groups, 24),
                                      **{e: errors for e in ("rmse_box", "nme_interocular", "nme_interocular_inner",
                                                             "nme_gtbox")}}))
    errors = pd.concat(rows, ignore_index=True)
    return study_metrics(errors, "dlib", ["rmse_box", "nme_interocular", "nme_interocular_inner", "nme_gtbox"],
                         n_resamples=100, seed=0)


def test_results_markdown_one_table_per_test_set_with_every_method_and_caveat(tmp_path):
    study, detail = _study(), _detail()
    path = tmp_path / "metrics_detail.json"
    path.write_text(json.dumps(detail))
    detail = R.load_metrics(path)
    md = R.results_markdown(detail, study, figures={"helen-test": "reports/figures/ced_helen-test.png"},
                            order=["aflw-test", "helen-test"])
    assert "RMSE / sqrt(w·h) of the face box" in md and "inter-ocular" in md
    assert md.index("### aflw-test") < md.index("### helen-test: HELEN test")
    rows = [line for line in md.splitlines() if line.startswith("| ")][2:]
    assert sum(line.startswith("| all |") for line in md.splitlines()) == 6  # 2 test sets x 3 methods
    assert "onet_s1" not in md  # a seed repeat goes to the seed table, not the per-test-set tables
    assert any(line.startswith("| yaw ≥60° | mesh (mapped) |") for line in md.splitlines()), rows
    onet = detail["helen-test"]["all"]["methods"]["onet"]
    assert f"{onet['rmse_box/auc@0.08']:.3f} [{onet['rmse_box/auc@0.08/ci95_lo']:.3f}," in md
    diff = detail["helen-test"]["all"]["vs_reference"]["onet"]["rmse_box/auc@0.08/diff"]
    assert f"{diff:+.3f} [" in md
    assert "24 (1 unplaced)" in md  # mesh's failure is counted and shown
    assert detail["helen-test"]["all"]["methods"]["mesh"]["n_failed"] == 1
    assert detail["helen-test"]["all"]["methods"]["mesh"]["rmse_box/mean"] is not None  # mean over placed faces
    assert "![CED on helen-test (rmse_box)](reports/figures/ced_helen-test.png)" in md
    assert "- dlib saw it." in md and "Mapped points." in md and "trained on 300-W train" in md


def test_headline_ranks_methods_by_auc_with_their_difference_to_the_reference():
    study, detail = _study(), _detail()
    text = R.headline_markdown(detail, study, "aflw-test")
    methods = detail["aflw-test"]["all"]["methods"]
    ranked = sorted(study.leaderboard_ids, key=lambda m: -methods[m]["rmse_box/auc@0.08"])
    assert "onet_s1" not in text
    assert [text.index(f"**{m}**") for m in ranked] == sorted(text.index(f"**{m}**") for m in ranked)
    assert "**dlib** " in text and "(reference)" in text and "vs dlib" in text
    assert f"{methods['onet']['rmse_box/auc@0.08']:.3f}" in text
    assert "mesh " in text and "(over the 23 faces it placed)" in text  # its NME leaves out the face it missed


def test_stage_times_line(tmp_path):
    timings, preds = tmp_path / "timings", tmp_path / "pred"
    timings.mkdir()
    (timings / "prepare.json").write_text(json.dumps({"stage": "prepare", "seconds": 200.4}))
    (timings / "train_onet.json").write_text(json.dumps({"stage": "train@onet", "session_seconds": 301.0,
                                                          "recipe": "fast", "epochs": 40,
                                                          "val_nme_interocular": 0.05516}))
    (timings / "report.json").write_text(json.dumps({"stage": "report", "seconds": 9.0}))
    (preds / "dlib").mkdir(parents=True)
    for name, seconds in (("a", 1.5), ("b", 2.0)):
        np.savez(preds / "dlib" / f"{name}.npz", seconds=np.array(seconds))
    line = R.stage_times_markdown(timings, preds)
    assert "prepare 200 s, train@onet 301 s (fast recipe, 40 epochs, validation NME (inter-ocular) 0.0552)," in line
    assert "2 predict stages" in line and "4 s" in line and "report" not in line


def test_study_caveats_collects_test_set_and_method_caveats():
    caveats = R.study_caveats(_study())
    assert "helen-test: dlib saw it." in caveats and "mesh: Mapped points." in caveats and "onet: Small net." in caveats


def test_load_metrics_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        R.load_metrics(tmp_path / "metrics.json")


def _speed():
    rate = lambda ms: {"ms_per_face": ms, "faces_per_s": 1e3 / ms}  # noqa: E731
    methods = {"onet": (0.3, 0.9, 420_000, 1.7), "dlib": (1.6, 1.7, 5_000_000, 99.7), "mesh": (5.0, 6.0, None, None),
               "onet_s1": (0.3, 0.9, 420_000, 1.7)}
    out = {m: {"batched": rate(b), "single": rate(s), "parameters": n, "mb_on_disk": mb,
               "ratio_to_reference": {"batched": round(1.6 / b, 2), "single": round(1.7 / s, 2)}}
           for m, (b, s, n, mb) in methods.items()}
    return {"methods": out, "definition": "image + box -> points", "rounds": 3, "torch_threads": 2,
            "environment": {"cpu": "Test CPU", "vector_isa": ["avx2"], "cores_available": 2}}


def test_leaderboard_ranks_every_method_with_accuracy_size_and_speed():
    study, detail, speed = _study(), _detail(), _speed()
    md = R.leaderboard_markdown(detail, study, speed, "aflw-test")
    rows = [line for line in md.splitlines() if line.startswith("| **")]
    assert [r.split("**")[1] for r in rows] == sorted(["onet", "dlib", "mesh"], key=lambda m: -detail["aflw-test"]["all"][
        "methods"][m]["rmse_box/auc@0.08"])  # seed repeats stay out of the leaderboard
    onet_row = next(r for r in rows if r.startswith("| **onet**"))
    onet = detail["aflw-test"]["all"]["methods"]["onet"]
    lo, hi = onet["nme_interocular/mean/ci95_lo"], onet["nme_interocular/mean/ci95_hi"]
    assert lo <= onet["nme_interocular/mean"] <= hi
    assert f"{onet['nme_interocular/mean']:.4f} [{lo:.4f}, {hi:.4f}]" in onet_row
    assert "| 0.42 M | 1.7 |" in onet_row and "| 0.300 | 0.900 | 5.3 / 1.9 |" in onet_row
    assert "Test CPU (avx2)" in R.speed_note(speed)
    assert "except" not in R.speed_note(speed)  # every CNN eager in fp32: nothing to point out
    speed["methods"]["onet"].update(runtime="compile, bf16, flip test", runtime_is_default=False)
    assert "CNNs run eager in fp32, except onet (compile, bf16, flip test)." in R.speed_note(speed)
    assert "forward passes" not in R.speed_note(speed)  # a speed.json from before images_per_pass was recorded
    speed["methods"]["onet"]["images_per_pass"] = 64
    assert "CNN forward passes of at most 64 images." in R.speed_note(speed)
    # without speed results the columns say n/a instead of failing
    assert "n/a" in R.leaderboard_markdown(detail, study, None, "aflw-test")


def test_seed_table_gives_mean_sd_and_range_over_the_seeds():
    study, detail = _study(), _detail()
    md = R.seeds_markdown(detail, study)
    values = [detail["aflw-test"]["all"]["methods"][m]["rmse_box/auc@0.08"] for m in ("onet", "onet_s1")]
    row = next(line for line in md.splitlines() if "| aflw-test |" in line)
    assert row.startswith("| onet | 0, 1 | aflw-test |")
    assert f"{np.mean(values):.3f} | {np.std(values, ddof=1):.3f} | {min(values):.3f} – {max(values):.3f}" in row
    # each seed's paired difference against the reference, with its interval
    vs = detail["aflw-test"]["all"]["vs_reference"]
    for m in ("onet", "onet_s1"):
        assert f"{vs[m]['rmse_box/auc@0.08/diff']:+.3f} [{vs[m]['rmse_box/auc@0.08/ci95_lo']:+.3f}," in row


def test_accuracy_speed_figure_has_a_point_per_timed_method():
    from flmlib.plots import accuracy_speed_figure

    study, detail, speed = _study(), _detail(), _speed()
    fig = accuracy_speed_figure(detail, speed, ["aflw-test", "helen-test"], study.leaderboard_ids, reference="dlib")
    axes = fig.get_axes()
    assert len(axes) == 2 and axes[0].get_xscale() == "log"
    assert sorted(t.get_text() for t in axes[0].texts) == ["dlib", "mesh", "onet"]
