"""HTML rendering of notebooks, the index, and the README results block."""
import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from flmlib import metrics as M
from flmlib import report as R


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
    assert "forty-two-output" in page and "secret_source_marker" in page
    assert re.search(r"<title>\s*Compare the methods\s*</title>", page)
    text = index.read_text()
    hrefs = re.findall(r'<a href="([^"]+)">([^<]+)</a>', text)
    assert hrefs == [("03-compare.html", "Compare the methods"), ("04-report.html", "Report &amp; figures")]
    assert all((out / h).is_file() for h, _ in hrefs)
    assert "dlib may have seen these faces" in text


def test_render_hides_input_on_request(tmp_path):
    nb = _tiny_notebook(tmp_path / "a.ipynb")
    R.render_notebook(nb, tmp_path / "html", hide_input=True)
    page = (tmp_path / "html" / "a.html").read_text()
    assert "forty-two-output" in page and "secret_source_marker" not in page


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


def _metrics():
    rng = np.random.default_rng(0)
    rows = []
    for test_set in ("helen-test", "youtube-test"):
        for method, scale in (("onet", 0.05), ("dlib", 0.03)):
            rows.append(pd.DataFrame({"test_set": test_set, "method": method, "face_id": [f"f{i}" for i in range(25)],
                                      "rmse_box": rng.gamma(2.0, scale / 2, 25)}))
    errors = pd.concat(rows, ignore_index=True)
    return M.metrics_dict(errors, paired=("onet", "dlib"), auc_ci=True, n_resamples=100, seed=0)


def test_results_markdown_names_normaliser_test_set_and_numbers(tmp_path):
    metrics = _metrics()
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    metrics = R.load_metrics(path)
    md = R.results_markdown(metrics, figures={"helen-test": "reports/figures/ced_helen-test.png"},
                            notes=["YouTube labels are machine-generated."])
    assert "RMSE / sqrt(w·h) of the detection box" in md
    rows = [line for line in md.splitlines() if line.startswith("| helen-test") or line.startswith("| youtube-test")]
    assert len(rows) == 4
    onet = metrics["helen-test"]["onet"]
    assert f"{onet['rmse_box/auc@0.08']:.3f} [{onet['rmse_box/auc@0.08/ci95_lo']:.3f}," in md
    diff = metrics["youtube-test"]["onet-minus-dlib"]["rmse_box/auc@0.08/diff"]
    assert f"youtube-test: AUC@0.08 (rmse_box) of onet minus dlib = {diff:+.3f}" in md
    assert "![CED on helen-test (rmse_box)](reports/figures/ced_helen-test.png)" in md
    assert "- YouTube labels are machine-generated." in md


def test_results_markdown_refuses_a_missing_error():
    with pytest.raises(KeyError, match="nme_interpupil"):
        R.results_markdown(_metrics(), error="nme_interpupil")


def test_load_metrics_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        R.load_metrics(tmp_path / "metrics.json")
