"""Publishing the study: executed notebooks -> HTML pages with an index, and the README's results block.

* :func:`render_report` converts executed ``.ipynb`` files to standalone HTML (nbconvert's ``HTMLExporter``,
  figures embedded) in ``reports/html/`` and writes ``index.html`` linking them by title.
* :func:`results_markdown` turns ``reports/metrics_detail.json`` (:func:`flmlib.compare.study_metrics`) into one
  table per test set with every method, with each test set's and each method's caveats from the configuration; :func:`update_readme` writes it between ``<!-- results:start -->`` and ``<!-- results:end -->``
  in ``README.md``, leaving everything outside the markers untouched.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat
import numpy as np

from flmlib import metrics as M

RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"


@dataclass(frozen=True)
class Page:
    """One rendered notebook: its title and HTML file (a name relative to the index); ``code_href`` is the same
    notebook with its code cells, when rendered."""

    title: str
    href: str
    source: str
    code_href: str | None = None


# --------------------------------------------------------------------------------------------------- HTML
def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown ``# heading`` of a notebook, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return fallback


def render_notebook(notebook: str | Path, out_dir: str | Path, *, hide_input: bool = False) -> Page:
    """Convert one executed notebook to ``<out_dir>/<stem>.html``.

    Args:
        notebook: path of an ``.ipynb`` (normally the executed copy papermill wrote to ``reports/``).
        out_dir: destination folder (created if missing).
        hide_input: drop code cells' source and prompts, keeping outputs and markdown.
    Returns:
        :class:`Page` with the notebook's title and the HTML file name.
    Raises:
        FileNotFoundError / ValueError naming the notebook when it is missing or not a notebook.
    """
    from nbconvert import HTMLExporter  # heavy import, only needed here

    notebook, out_dir = Path(notebook), Path(out_dir)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found (did its stage run?)")
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for bad files
        raise ValueError(f"{notebook}: not a readable notebook ({exc})") from exc
    title = notebook_title(nb, notebook.stem)
    exporter = HTMLExporter(template_name="lab", exclude_input=hide_input, exclude_input_prompt=hide_input,
                            exclude_output_prompt=hide_input)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{notebook.stem}{'' if hide_input else CODE_SUFFIX}.html"
    target.write_text(offline_html(body), encoding="utf-8")
    return Page(title=title, href=target.name, source=str(notebook))


#: File-name suffix of the pages that show the code cells too.
CODE_SUFFIX = "-code"
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.IGNORECASE)


def offline_html(page: str) -> str:
    """``page`` without the scripts nbconvert's template loads from CDNs (require.js for widgets, MathJax): the
    study's pages have neither widgets nor formulas, and a report read offline must not wait on the network."""
    return _REMOTE_SCRIPT.sub("", page)


_INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 2.5rem auto; padding: 0 1rem; line-height: 1.5;
       color: #1b1b1b; }}
h1 {{ font-size: 1.6rem; }}
ol {{ padding-left: 1.4rem; }}
li {{ margin: 0.4rem 0; }}
.src {{ color: #666; font-size: 0.85rem; }}
.note {{ background: #f5f5f0; border-left: 3px solid #b0a060; padding: 0.4rem 0.8rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
{notes}
<ol>
{items}
</ol>
</body>
</html>
"""


def write_index(pages: Sequence[Page], out_dir: str | Path, *, title: str = "Report", notes: Sequence[str] = ()) -> Path:
    """Write ``<out_dir>/index.html`` linking every page in order; ``notes`` are plain-text paragraphs shown above."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = "\n".join(
        f'<li><a href="{html.escape(p.href, quote=True)}">{html.escape(p.title)}</a> '
        + (f'<span class="src">(<a href="{html.escape(p.code_href, quote=True)}">with code</a>, ' if p.code_href
           else '<span class="src">(')
        + f'{html.escape(Path(p.source).name)})</span></li>'
        for p in pages
    )
    notes_html = "\n".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    target = out_dir / "index.html"
    target.write_text(_INDEX_TEMPLATE.format(title=html.escape(title), notes=notes_html, items=items), encoding="utf-8")
    return target


def render_report(
    notebooks: Sequence[str | Path],
    out_dir: str | Path,
    *,
    with_code: bool = True,
    title: str = "Report",
    notes: Sequence[str] = (),
) -> Path:
    """Render every notebook (in stage order) to HTML in ``out_dir`` and write the index; returns the index path.

    Each notebook's page shows its figures, tables and text without code (what a reader of the comparison wants);
    with ``with_code`` a second page, ``<stem>-code.html``, linked from the index, shows the code cells too.
    """
    pages = []
    for nb in notebooks:
        page = render_notebook(nb, out_dir, hide_input=True)
        if with_code:
            page = replace(page, code_href=render_notebook(nb, out_dir, hide_input=False).href)
        pages.append(page)
    return write_index(pages, out_dir, title=title, notes=notes)


# --------------------------------------------------------------------------------------------------- README
def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


#: Entry of ``detail[test_set]["all"]`` holding the detection rates (shared by every method).
DETECTION_KEY = "detection"

#: Caveats that hold for every number of the study (method and test-set caveats come from params.yaml).
GENERAL_CAVEATS = (
    "Every method gets the same faces with the same box. With detector boxes, faces the HOG detector missed are "
    "excluded for every method alike; the detection rate is reported per test set (and per yaw bin).",
    "Bootstrap intervals resample persons (a YouTube person's frames, a 300-W photo's faces count as one unit).",
)


def _auc_cell(values: Mapping, key: str) -> str:
    cell = _fmt(values.get(key))
    lo, hi = values.get(f"{key}/ci95_lo"), values.get(f"{key}/ci95_hi")
    return cell + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def _diff_cell(values: Mapping | None, key: str) -> str:
    if not values or values.get(f"{key}/diff") is None:
        return "reference" if values is None else "n/a"
    lo, hi = values[f"{key}/ci95_lo"], values[f"{key}/ci95_hi"]
    return f"{values[f'{key}/diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def detection_note(test_set: str, rates: Mapping) -> str:
    """One line on how many faces the detector found in a test set (and per yaw bin)."""
    if rates.get("detection_rate") is None:
        return f"{test_set}: no readable face"
    text = (f"HOG detection (upsample and IoU threshold from params): {rates['detected']} of {rates['readable']} faces "
            f"({100 * rates['detection_rate']:.1f}%); evaluated: {rates['evaluated']}")
    if "by_yaw" in rates:
        text += "; by yaw: " + ", ".join(f"{k} {v['detected']}/{v['readable']} ({_pct(v['detection_rate'])})"
                                         for k, v in rates["by_yaw"].items())
    if "by_subset" in rates:
        text += "; by subset: " + ", ".join(f"{k} {v['detected']}/{v['readable']}" for k, v in rates["by_subset"].items())
    return text


def test_set_markdown(test_set: str, groups: Mapping, *, description: str = "", caveats: Sequence[str] = (),
                      mapped: Sequence[str] = (), reference: str, error: str = M.PRIMARY_ERROR,
                      threshold: float = M.THRESHOLDS[0], figure: str | None = None,
                      methods: Sequence[str] | None = None) -> str:
    """One test set's results: a table with every method (overall, then per subset or yaw bin), its detection rate,
    its caveats and its CED figure.

    Args:
        groups: ``detail[test_set]`` of :func:`flmlib.compare.study_metrics` (group -> methods / vs_reference).
        mapped: methods whose points are mapped from another scheme (their rows say so).
        reference: the method the paired differences are taken against.
        methods: the methods to show (default: every method in ``groups``), e.g. without seed repeats.
    """
    k = M.threshold_key(threshold)
    auc_key = f"{error}/auc@{k}"
    header = ["Faces", "Method", "N", f"AUC@{k}", f"Failure@{k}", "NME io (68)", "NME io (51 inner)",
              "NME gt box", f"AUC@{k} − {reference}"]
    lines = [f"### {test_set}" + (f": {description}" if description else ""), "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for group, entry in groups.items():
        for method, values in entry["methods"].items():
            if methods is not None and method not in methods:
                continue
            name = method + (" (mapped)" if method in mapped else "")
            failed = values.get("n_failed", 0)
            n = str(values.get("n_faces", "")) + (f" ({failed} unplaced)" if failed else "")
            vs = None if method == reference else entry["vs_reference"].get(method, {})
            row = [group, name, n, _auc_cell(values, auc_key), _pct(values.get(f"{error}/fail@{k}")),
                   _fmt(values.get("nme_interocular/mean"), 4), _fmt(values.get("nme_interocular_inner/mean"), 4),
                   _fmt(values.get("nme_gtbox/mean"), 4), _diff_cell(vs, auc_key)]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if DETECTION_KEY in groups.get("all", {}):
        lines.append(f"- {detection_note(test_set, groups['all'][DETECTION_KEY])}")
    lines.extend(f"- {c}" for c in caveats)
    if figure:
        lines += ["", f"![CED on {test_set} ({error})]({figure})"]
    return "\n".join(lines) + "\n"


def results_markdown(detail: Mapping, study, *, error: str = M.PRIMARY_ERROR, threshold: float = M.THRESHOLDS[0],
                     figures: Mapping[str, str] | None = None, order: Sequence[str] | None = None) -> str:
    """The study's results as markdown: how to read the tables, one section per test set (:func:`test_set_markdown`),
    then every method's training data and caveats from its spec.

    Args:
        detail: ``reports/metrics_detail.json`` (:func:`flmlib.compare.study_metrics` plus detection rates).
        study: the loaded configuration (:func:`flmlib.config.load_config`): test set descriptions and caveats,
            method specs, the reference method.
        figures: test set -> path of its CED figure, relative to where the markdown is shown.
        order: test sets in the order to show (default: as in ``detail``).
    """
    k = M.threshold_key(threshold)
    specs = {m: study.method_spec(m) for m in study.leaderboard_ids}
    mapped = [m for m, s in specs.items() if s.mapped]
    lines = [
        f"AUC@{k} and Failure@{k}: of **{M.ERROR_LABELS.get(error, error)}** (`{error}`), the area under the CED up "
        "to the threshold divided by it (higher is better) and the share of faces above it. NME io (68) and NME io (51 "
        "inner): mean point error / inter-ocular distance (outer eye corners 36, 45) over all 68 points and over the "
        "51 inner points (17-67, no jaw); NME gt box: mean point error / sqrt(w·h) of the annotated points' box, the "
        "usual normaliser on AFLW2000-3D (the inter-ocular distance collapses on profile faces). NMEs are means over "
        "the faces a method placed; AUC and failure rate count an unplaced face as a failure. Brackets: bootstrap 95% intervals; the last column is the paired bootstrap "
        f"difference of AUC@{k} against the reference method, **{study.reference}**. A face a method could not place "
        "is a failure for it (\"unplaced\"). The box is the HOG detection box, or on test sets with landmark-derived "
        "boxes that box; every method gets the same one.",
        "",
    ]
    for test_set in order or list(detail):
        config = study.test_sets[test_set]
        lines.append(test_set_markdown(test_set, detail[test_set], description=config.description,
                                       caveats=config.caveats, mapped=mapped, reference=study.reference,
                                       error=error, threshold=threshold, figure=(figures or {}).get(test_set),
                                       methods=study.leaderboard_ids))
    lines.append("### Methods")
    lines.append("")
    for method, spec in specs.items():
        lines.append(f"- **{method}** ({spec.kind}{', points mapped' if spec.mapped else ''}): trained on "
                     f"{spec.trained_on or 'n/a'}." + "".join(f" {c}" for c in spec.caveats))
    lines.extend(f"- {c}" for c in GENERAL_CAVEATS)
    return "\n".join(lines) + "\n"


def _mean_cell(values: Mapping, key: str, digits: int = 4) -> str:
    cell = _fmt(values.get(f"{key}/mean"), digits)
    lo, hi = values.get(f"{key}/mean/ci95_lo"), values.get(f"{key}/mean/ci95_hi")
    return cell + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else "")


def _count(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.0f} k"


def leaderboard_markdown(detail: Mapping, study, speed: Mapping | None, test_set: str, *,
                         error: str = M.PRIMARY_ERROR, threshold: float = M.THRESHOLDS[0]) -> str:
    """One test set's leaderboard: every compared method (seed repeats aside), best AUC first, with accuracy (AUC and
    inter-ocular NME with bootstrap CIs, failure rate, paired AUC difference against the reference), size
    (parameters, MB on disk) and landmarker speed (ms per face batched and single, ratio to the reference) from
    ``speed`` (:mod:`flmlib.speed`, ``reports/speed.json``; columns say n/a without it)."""
    k = M.threshold_key(threshold)
    auc_key = f"{error}/auc@{k}"
    entry = detail[test_set]["all"]
    timed = (speed or {}).get("methods", {})
    methods = [m for m in study.leaderboard_ids if m in entry["methods"]]
    methods.sort(key=lambda m: -(entry["methods"][m].get(auc_key) or 0.0))
    ref = study.reference
    header = ["Method", f"AUC@{k} [95% CI]", "NME io (68) [95% CI]", f"Failure@{k}", f"AUC − {ref} [95% CI]",
              "Params", "MB", "ms/face batched", "ms/face single", f"× {ref} (batched / single)"]
    lines = [f"#### Leaderboard: {test_set} ({max(v.get('n_faces', 0) for v in entry['methods'].values())} faces)",
             "", "| " + " | ".join(header) + " |", "|---|" + "|".join(["---:"] * (len(header) - 1)) + "|"]
    for method in methods:
        values, t = entry["methods"][method], timed.get(method, {})
        vs = None if method == ref else entry["vs_reference"].get(method, {})
        ratio = t.get("ratio_to_reference", {})
        row = [f"**{method}**", _auc_cell(values, auc_key), _mean_cell(values, "nme_interocular"),
               _pct(values.get(f"{error}/fail@{k}")), _diff_cell(vs, auc_key), _count(t.get("parameters")),
               _fmt(t.get("mb_on_disk"), 1), _fmt(t.get("batched", {}).get("ms_per_face"), 3),
               _fmt(t.get("single", {}).get("ms_per_face"), 3),
               f"{ratio['batched']:.1f} / {ratio['single']:.1f}" if ratio else "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def cpu_label(env: dict) -> str:
    """``"<CPU model> (<vector instruction sets>)"`` from :func:`flmlib.bench.environment`'s dict, e.g. ``AMD EPYC (avx2, fma)``:
    the line every timing table ends with, since the numbers move between CPUs."""
    return f"{env.get('cpu') or 'this CPU'} ({', '.join(env.get('vector_isa') or ['no AVX2'])})"


def speed_note(speed: Mapping | None) -> str:
    """Where the speed columns come from: the CPU, its vector ISA, threads and the timing definition."""
    if not speed:
        return "Speed columns: n/a (no reports/speed.json; run the speed stage or `make bench`)."
    env = speed["environment"]
    # CNNs run eager in fp32 unless their params entry sets other options; name those, since they change the speed
    special = [f"{m} ({t['runtime']})" for m, t in speed["methods"].items() if t.get("runtime_is_default") is False]
    runtimes = f" CNNs run eager in fp32, except {', '.join(special)}." if special else ""
    sizes = sorted({t["images_per_pass"] for t in speed["methods"].values() if t.get("images_per_pass")})
    passes = f" CNN forward passes of at most {' or '.join(map(str, sizes))} images." if sizes else ""
    return (f"Speed columns: {speed['definition']}; {cpu_label(env)}, "
            f"{env['cores_available']} cores, torch threads {speed['torch_threads']}, {speed['rounds']} rounds."
            f"{runtimes}{passes} They move between machines: compare the ratios, measured in one run.")


def seeds_markdown(detail: Mapping, study, *, error: str = M.PRIMARY_ERROR,
                   threshold: float = M.THRESHOLDS[0]) -> str:
    """The seed table: for each model trained with several seeds (``repeat_of`` entries), its AUC per test set as
    mean, standard deviation and range over the seeds, next to the reference's AUC on the same faces, and each seed's
    paired AUC difference against the reference with its 95% CI (whether a lead over it survives the seed)."""
    k = M.threshold_key(threshold)
    auc_key = f"{error}/auc@{k}"
    repeats = study.repeats()
    if not repeats:
        return ""
    lines = [f"| Model | seeds | Test set | AUC@{k} mean | sd | min – max | {study.reference} | "
             f"AUC − {study.reference} per seed [95% CI] |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for model, runs in repeats.items():
        seeds = [study.seed_of(r) for r in runs]
        for test_set in detail:
            methods = detail[test_set]["all"]["methods"]
            values = [methods[r][auc_key] for r in runs if r in methods and methods[r].get(auc_key) is not None]
            if len(values) < 2:
                continue
            ref = methods.get(study.reference, {}).get(auc_key)
            diffs = "; ".join(_diff_cell(detail[test_set]["all"]["vs_reference"].get(r, {}), auc_key)
                              for r in runs if r in methods)
            lines.append(f"| {model} | {', '.join(map(str, seeds))} | {test_set} | {np.mean(values):.3f} | "
                         f"{np.std(values, ddof=1):.3f} | {min(values):.3f} – {max(values):.3f} | {_fmt(ref)} | "
                         f"{diffs} |")
    return "\n".join(lines) + "\n"


def headline_markdown(detail: Mapping, study, test_set: str, *, error: str = M.PRIMARY_ERROR,
                      threshold: float = M.THRESHOLDS[0]) -> str:
    """The answer in one paragraph: every method on ``test_set`` (the report's headline test set), ranked by its
    AUC, with the paired difference against the reference and the inner-face NME; every number from ``detail``."""
    k = M.threshold_key(threshold)
    auc_key = f"{error}/auc@{k}"
    entry = detail[test_set]["all"]
    config = study.test_sets[test_set]
    methods = sorted((m for m in entry["methods"] if m in study.leaderboard_ids),
                     key=lambda m: -(entry["methods"][m].get(auc_key) or 0.0))
    n_faces = max(v.get("n_faces", 0) for v in entry["methods"].values())
    parts = []
    for method in methods:
        values = entry["methods"][method]
        vs = "reference" if method == study.reference else _diff_cell(entry["vs_reference"].get(method), auc_key) + \
            f" vs {study.reference}"
        parts.append(f"**{method}** {_auc_cell(values, auc_key)} ({vs})")
    def inner_nme(method: str) -> str:
        values = entry["methods"][method]
        failed = values.get("n_failed", 0)
        placed = f" (over the {values['n_faces'] - failed} faces it placed)" if failed else ""
        return f"{method} {_fmt(values.get('nme_interocular_inner/mean'), 4)}{placed}"

    inner = ", ".join(inner_nme(m) for m in methods)
    return (f"**Answer on `{test_set}`** ({config.description}; {n_faces} faces), ranked by AUC@{k} of "
            f"{M.ERROR_LABELS.get(error, error)}: " + "; ".join(parts) + ". Inter-ocular NME over the 51 inner "
            f"points: {inner}. Brackets: bootstrap 95% intervals; the sections below give every test set, the "
            "breakdowns by yaw and subset, and the caveats.\n")


def stage_times_markdown(timings_dir: str | Path, predictions_dir: str | Path) -> str:
    """One line with the wall time of each stage of the last ``dvc repro`` (from ``reports/timings/*.json`` and the
    predictions files; the report stage writes this line, so its own time is not in it)."""
    import numpy as np

    parts = []
    for path in sorted(Path(timings_dir).glob("*.json"), key=lambda p: ("prepare", "train", "compare").index(
            p.stem.split("_")[0]) if p.stem.split("_")[0] in ("prepare", "train", "compare") else 9):
        record = json.loads(path.read_text())
        seconds = record.get("session_seconds", record.get("seconds"))
        if seconds is not None and record.get("stage", path.stem) != "report":
            detail = ""
            if "val_nme_interocular" in record:  # a train stage: what it trained, and how well on validation
                detail = (f" ({record.get('recipe', '')} recipe, {record.get('epochs')} epochs, validation NME "
                          f"(inter-ocular) {record['val_nme_interocular']:.4f})")
            parts.append(f"{record.get('stage', path.stem)} {seconds:.0f} s{detail}")
    predicted = sorted(Path(predictions_dir).glob("*/*.npz"))
    if predicted:
        total = sum(float(np.load(p)["seconds"]) for p in predicted)
        parts.append(f"{len(predicted)} predict stages (the methods' own time, without starting each notebook) "
                     f"{total:.0f} s")
    return "Stage wall times of the `dvc repro` that made these numbers: " + ", ".join(parts) + ".\n"


def study_caveats(study) -> list[str]:
    """Every caveat of the study: the general ones, each test set's and each method's (for the report index)."""
    out = list(GENERAL_CAVEATS)
    out += [f"{ts}: {c}" for ts, config in study.test_sets.items() for c in config.caveats]
    out += [f"{m}: {c}" for m in study.method_ids for c in study.method_spec(m).caveats]
    return out


def replace_marked_block(text: str, content: str, *, source: str = "text", start: str = RESULTS_START,
                         end: str = RESULTS_END) -> str:
    """``text`` with everything between the ``start`` and ``end`` marker lines (default :data:`RESULTS_START`,
    :data:`RESULTS_END`) replaced by ``content``.

    Raises:
        ValueError naming ``source`` when the markers are missing, duplicated or out of order.
    """
    starts, ends = text.count(start), text.count(end)
    if starts != 1 or ends != 1:
        raise ValueError(f"{source}: needs exactly one {start} and one {end} line (found {starts} and {ends})")
    head, rest = text.split(start)
    if end not in rest:
        raise ValueError(f"{source}: {end} comes before {start}")
    _, tail = rest.split(end)
    return f"{head}{start}\n{content.strip()}\n{end}{tail}"


def update_readme(readme: str | Path, content: str, *, start: str = RESULTS_START, end: str = RESULTS_END) -> bool:
    """Rewrite the results block of ``readme`` with ``content``; returns whether the file changed.

    Text outside the markers is kept byte for byte; running it twice with the same content changes nothing.
    """
    readme = Path(readme)
    if not readme.is_file():
        raise FileNotFoundError(f"{readme}: README not found")
    old = readme.read_text(encoding="utf-8")
    new = replace_marked_block(old, content, source=str(readme), start=start, end=end)
    if new != old:
        readme.write_text(new, encoding="utf-8")
    return new != old


def load_metrics(path: str | Path) -> dict:
    """Read ``reports/metrics.json``; a clear error names the file when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: metrics file not found (run the compare stage)") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flmlib.report NOTEBOOK... --out DIR``: render executed notebooks and the index page."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flmlib.report", description=main.__doc__)
    parser.add_argument("notebooks", nargs="+", help="executed notebooks, in stage order")
    parser.add_argument("--out", required=True, help="output folder for the HTML pages and index.html")
    parser.add_argument("--title", default="flm-study: 68-point landmarkers compared")
    parser.add_argument("--params", default="params.yaml", help="the study configuration (for the caveats)")
    args = parser.parse_args(argv)
    missing = [n for n in args.notebooks if not Path(n).is_file()]
    if missing:
        parser.error(f"notebook(s) not found: {', '.join(missing)}")
    from flmlib.config import load_config

    index = render_report(args.notebooks, args.out, title=args.title, notes=study_caveats(load_config(args.params)))
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
