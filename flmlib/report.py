"""Publishing the study: executed notebooks -> HTML pages with an index, and the README's results block.

* :func:`render_report` converts executed ``.ipynb`` files to standalone HTML (nbconvert's ``HTMLExporter``,
  figures embedded) in ``reports/html/`` and writes ``index.html`` linking them by title.
* :func:`results_markdown` turns the ``reports/metrics.json`` dict (:func:`flmlib.metrics.metrics_dict`) into the
  headline table; :func:`update_readme` writes it between ``<!-- results:start -->`` and ``<!-- results:end -->``
  in ``README.md``, leaving everything outside the markers untouched.
"""
from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from flmlib import metrics as M

RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"


@dataclass(frozen=True)
class Page:
    """One rendered notebook: its title and HTML file (a name relative to the index)."""

    title: str
    href: str
    source: str


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
    target = out_dir / f"{notebook.stem}.html"
    target.write_text(body, encoding="utf-8")
    return Page(title=title, href=target.name, source=str(notebook))


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
        f'<span class="src">({html.escape(Path(p.source).name)})</span></li>'
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
    hide_input: bool = False,
    title: str = "Report",
    notes: Sequence[str] = (),
) -> Path:
    """Render every notebook (in stage order) to HTML in ``out_dir`` and write the index; returns the index path."""
    pages = [render_notebook(nb, out_dir, hide_input=hide_input) for nb in notebooks]
    return write_index(pages, out_dir, title=title, notes=notes)


# --------------------------------------------------------------------------------------------------- README
def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


#: Entry of ``metrics[test_set]`` holding the detection rate (faces, detected, rate), shared by every method.
DETECTION_KEY = "detection"

#: What every reader must know next to the numbers (shown in the report index, the report notebook and the README).
CAVEATS = (
    "dlib's shape predictor was trained on 300-W with mirrored images added; whether the HELEN test images were in "
    "its training set is not documented, so its test_300w numbers may be optimistic.",
    "The YouTube-Faces keypoints are most likely machine-generated and their jaw line follows a different convention "
    "from 300-W's: test_youtube is a second, differently-labelled domain, not 300-W ground truth. O-Net was trained on "
    "that labelling style (YouTube training people) and dlib was not, so part of any O-Net advantage there can be the "
    "label convention rather than accuracy; the per-region errors separate the jaw from the inner face.",
    "test_300w = the 300-W re-annotation of the HELEN test subset (230 faces); test_youtube = YouTube-Faces frames of "
    "held-out people (re-split by person: the original frame split puts every test person in training).",
    "Faces the HOG detector missed are excluded for every method alike; the detection rate is reported per test set.",
)


def results_markdown(
    metrics: Mapping,
    *,
    error: str = M.PRIMARY_ERROR,
    thresholds: Sequence[float] = M.THRESHOLDS,
    figures: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The headline results as markdown: one table row per (test set, method), paired differences, CED figures.

    Args:
        metrics: the ``reports/metrics.json`` dict (:func:`flmlib.metrics.metrics_dict`); entries whose name
            contains ``-minus-`` are paired AUC differences, all others are methods.
        error: which error the table reports (its normaliser is written in the caption).
        thresholds: AUC / failure cut-offs to show (must be in the metrics).
        figures: test set -> relative path of its CED figure (linked below the table).
        notes: extra markdown lines (e.g. detection rates, caveats) appended as a list.
    """
    label = M.ERROR_LABELS.get(error, error)
    keys = [M.threshold_key(t) for t in thresholds]
    header = ["Test set", "Method", "Faces", *[f"AUC@{k}" for k in keys], *[f"Failure@{k}" for k in keys], "Mean", "Median"]
    lines = [
        f"Error: **{label}** (`{error}`). AUC = area under the CED up to the threshold, divided by it (higher is "
        "better); failure = share of faces above the threshold. Brackets: bootstrap 95% intervals (resampling "
        "persons, so the many frames of one YouTube person count as one unit).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    diffs = []
    for test_set, entries in metrics.items():
        for method, values in entries.items():
            if method == DETECTION_KEY:
                continue
            if "-minus-" in method:
                diffs.append((test_set, method, values))
                continue
            missing = [f"{error}/auc@{k}" for k in keys if f"{error}/auc@{k}" not in values]
            if missing:
                raise KeyError(f"metrics[{test_set!r}][{method!r}] lacks {missing}")
            aucs = []
            for k in keys:
                cell = _fmt(values[f"{error}/auc@{k}"])
                lo, hi = values.get(f"{error}/auc@{k}/ci95_lo"), values.get(f"{error}/auc@{k}/ci95_hi")
                if lo is not None and hi is not None:
                    cell += f" [{lo:.3f}, {hi:.3f}]"
                aucs.append(cell)
            fails = [_pct(values[f"{error}/fail@{k}"]) for k in keys]
            row = [test_set, method, str(values.get("n_faces", "")), *aucs, *fails,
                   _fmt(values.get(f"{error}/mean"), 4), _fmt(values.get(f"{error}/median"), 4)]
            lines.append("| " + " | ".join(row) + " |")
    if diffs:
        lines.append("")
        for test_set, name, values in diffs:
            a, b = name.split("-minus-", 1)
            for k in keys:
                d = values.get(f"{error}/auc@{k}/diff")
                if d is None:
                    continue
                lo, hi = values[f"{error}/auc@{k}/ci95_lo"], values[f"{error}/auc@{k}/ci95_hi"]
                lines.append(
                    f"- {test_set}: AUC@{k} ({error}) of {a} minus {b} = {d:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] "
                    f"(paired bootstrap over {values.get('n_faces')} faces"
                    + (f" resampled as {values['n_resampled_groups']} persons/photos"
                       if values.get("n_resampled_groups") not in (None, values.get("n_faces")) else "")
                    + f", {values.get('n_resamples')} resamples)"
                )
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    for test_set, path in (figures or {}).items():
        lines += ["", f"![CED on {test_set} ({error})]({path})"]
    return "\n".join(lines) + "\n"


def replace_marked_block(text: str, content: str, *, source: str = "text") -> str:
    """``text`` with everything between :data:`RESULTS_START` and :data:`RESULTS_END` replaced by ``content``.

    Raises:
        ValueError naming ``source`` when the markers are missing, duplicated or out of order.
    """
    starts, ends = text.count(RESULTS_START), text.count(RESULTS_END)
    if starts != 1 or ends != 1:
        raise ValueError(
            f"{source}: needs exactly one {RESULTS_START} and one {RESULTS_END} line (found {starts} and {ends})"
        )
    head, rest = text.split(RESULTS_START)
    if RESULTS_END not in rest:
        raise ValueError(f"{source}: {RESULTS_END} comes before {RESULTS_START}")
    _, tail = rest.split(RESULTS_END)
    return f"{head}{RESULTS_START}\n{content.strip()}\n{RESULTS_END}{tail}"


def update_readme(readme: str | Path, content: str) -> bool:
    """Rewrite the results block of ``readme`` with ``content``; returns whether the file changed.

    Text outside the markers is kept byte for byte; running it twice with the same content changes nothing.
    """
    readme = Path(readme)
    if not readme.is_file():
        raise FileNotFoundError(f"{readme}: README not found")
    old = readme.read_text(encoding="utf-8")
    new = replace_marked_block(old, content, source=str(readme))
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
    parser.add_argument("--title", default="flm-study: O-Net vs dlib, 68-point landmarks")
    args = parser.parse_args(argv)
    missing = [n for n in args.notebooks if not Path(n).is_file()]
    if missing:
        parser.error(f"notebook(s) not found: {', '.join(missing)}")
    index = render_report(args.notebooks, args.out, title=args.title, notes=CAVEATS)
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
