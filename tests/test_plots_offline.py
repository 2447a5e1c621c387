"""`dvc plots show` works without a network: plots/template.html loads Vega, Vega-Lite and vega-embed from
plots/vendor/ (filled by `make plots-vendor`, mk/plots.mk) instead of DVC's CDN, and .dvc/config points
`dvc plots show` at it. The last tests render a page in headless Chromium with every host unresolvable."""
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from flmlib.paths import PROJECT_ROOT

PLOTS = PROJECT_ROOT / "plots"
TEMPLATE = PLOTS / "template.html"
VENDOR = PLOTS / "vendor"
# DVC writes the page to <out>/index.html; the template's paths are relative to it, and `make plots` (like a plain
# `dvc plots show` from the project root) uses the default out dir.
PAGE_DIR = PROJECT_ROOT / "dvc_plots"
NEEDS_VENDOR = pytest.mark.skipif(
    not VENDOR.is_dir(), reason="plots/vendor/ is absent: run `make plots-vendor` (or `make plots`) to vendor Vega")


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.inline: list[str] = []
        self._in_inline = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            src = dict(attrs).get("src")
            if src is not None:
                self.srcs.append(src)
            self._in_inline = src is None

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_inline = False

    def handle_data(self, data):
        if self._in_inline:
            self.inline.append(data)


def _scripts(html: str) -> _Scripts:
    parser = _Scripts()
    parser.feed(html)
    return parser


def test_template_loads_no_script_from_the_network():
    html = TEMPLATE.read_text(encoding="utf-8")
    scripts = _scripts(html)
    assert len(scripts.srcs) == 3 and [s.rsplit("/", 1)[-1] for s in scripts.srcs] == [
        "vega.min.js", "vega-lite.min.js", "vega-embed.min.js"], scripts.srcs  # vega-embed needs the other two first
    remote = [s for s in scripts.srcs if re.match(r"^([a-z][a-z0-9+.-]*:|//)", s, re.IGNORECASE)]
    assert not remote, f"scripts from the network: {remote}"
    assert not any("http://" in s or "https://" in s for s in scripts.inline)
    # DVC fills "{scripts}" with its CDN <script> tags, so the template must not have that placeholder.
    assert "{scripts}" not in html
    from dvc_render.html import HTML

    HTML(html)  # DVC accepts it (it needs "{plot_divs}")


def test_dvc_config_points_plots_show_at_the_template():
    from configobj import ConfigObj

    config = ConfigObj(str(PROJECT_ROOT / ".dvc" / "config"))
    value = config.get("plots", {}).get("html_template")
    assert value, "set it with `dvc config plots.html_template ../plots/template.html`"
    # DVC resolves a relative plots.html_template against .dvc/ (dvc/commands/plots.py)
    assert (PROJECT_ROOT / ".dvc" / value).resolve() == TEMPLATE.resolve()


def test_the_make_target_vendors_before_it_renders(tmp_path):
    shutil.copytree(PROJECT_ROOT / "mk", tmp_path / "mk")
    (tmp_path / "plots").mkdir()
    for name in ("package.json", "package-lock.json", "template.html"):
        shutil.copy(PLOTS / name, tmp_path / "plots")
    (tmp_path / "Makefile").write_text("BIN := .venv/bin\ninclude mk/plots.mk\n")
    out = subprocess.run(["make", "-n", "plots"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.index("npm ci --prefix plots") < out.index(
        ".venv/bin/dvc plots show --html-template plots/template.html -o dvc_plots")
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        assert f"/{name}" in out

    # without npm the target stops and says what to install
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "rm"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    run = subprocess.run(["make", "plots-vendor"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": str(bin_dir)})
    assert run.returncode != 0 and "needs npm" in run.stdout + run.stderr and "apt-get install nodejs npm" in run.stdout


@NEEDS_VENDOR
def test_every_script_of_the_template_is_vendored():
    for src in _scripts(TEMPLATE.read_text(encoding="utf-8")).srcs:
        for base in (PAGE_DIR, TEMPLATE.parent):  # the same files from the page DVC writes and from the template
            path = (base / src).resolve()
            assert path.is_file() and path.stat().st_size > 10_000, f"{src} (from {base}) -> {path}: missing"


@NEEDS_VENDOR
def test_the_vendored_builds_are_the_pinned_versions():
    pins = json.loads((PLOTS / "package.json").read_text())["dependencies"]
    assert set(pins) == {"vega", "vega-lite", "vega-embed"}
    for package, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{package} is not pinned to one version: {version}"
        assert f'"{version}"' in (VENDOR / f"{package}.min.js").read_text(encoding="utf-8"), (
            f"plots/vendor/{package}.min.js is not {package}@{version}: run `make plots-vendor`")


# --- rendered in headless Chromium, offline -----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OFFLINE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=10000", "--window-size=1400,1400",
]
TRAIN_TSV = "timestamp\tstep\tloss\n" + "".join(f"{1700000000000 + i}\t{i}\t{10 / (i + 1):.4f}\n" for i in range(20))
CED_CSV = "threshold,dlib,onet\n" + "".join(f"{t / 100:.6f},{min(1, t / 5):.6f},{min(1, t / 8):.6f}\n" for t in range(11))


def _plot_repo(root):
    """A DVC repo with a training curve (dvclive layout) and a CED table, declared like dvc.yaml's plots, and the
    project's plots/ (template and vendored scripts) one level up from the page, as in the project."""
    (root / "dvclive" / "m" / "plots" / "metrics" / "train").mkdir(parents=True)
    (root / "dvclive" / "m" / "plots" / "metrics" / "train" / "loss.tsv").write_text(TRAIN_TSV)
    (root / "reports" / "ced").mkdir(parents=True)
    (root / "reports" / "ced" / "test_a.csv").write_text(CED_CSV)
    (root / "dvc.yaml").write_text(
        "plots:\n"
        "  - dvclive/m/plots/metrics:\n      x: step\n"
        "  - ced_test_a:\n      template: linear\n      x: threshold\n"
        "      y:\n        reports/ced/test_a.csv: [dlib, onet]\n")
    (root / "plots").symlink_to(PLOTS)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=root, check=True, timeout=120)
    from configobj import ConfigObj

    template = ConfigObj(str(PROJECT_ROOT / ".dvc" / "config")).get("plots", {}).get("html_template")
    assert template, "the project's .dvc/config sets no plots.html_template"
    subprocess.run([*dvc, "config", "plots.html_template", template], cwd=root, check=True, timeout=120)
    return dvc


def _drawn(page) -> tuple[int, list[str]]:
    """(number of plot divs DVC wrote, ids of those Vega drew a non-empty canvas or svg in), from Chromium's DOM."""
    run = subprocess.run([CHROMIUM, *OFFLINE_FLAGS, f"--user-data-dir={page.parent / 'chromium-profile'}",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    ids = re.findall(r'<div id="([^"]+)"', dom)
    plot_ids = [i for i in ids if i.startswith(("dvclive_", "reports_", "ced_"))]
    drawn = []
    for i, plot_id in enumerate(plot_ids):
        start = dom.index(f'<div id="{plot_id}"')
        end = dom.index(f'<div id="{plot_ids[i + 1]}"') if i + 1 < len(plot_ids) else len(dom)
        chunk = dom[start:end]
        sizes = re.findall(r'<canvas width="(\d+)" height="(\d+)"', chunk) + re.findall(
            r'<svg[^>]*class="marks"[^>]*width="(\d+)" height="(\d+)"', chunk)
        if any(int(w) > 0 and int(h) > 0 for w, h in sizes):
            drawn.append(plot_id)
    return len(plot_ids), drawn


@NEEDS_VENDOR
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_plain_dvc_plots_show_draws_the_curves_offline(tmp_path):
    dvc = _plot_repo(tmp_path)
    run = subprocess.run([*dvc, "plots", "show"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    page = tmp_path / "dvc_plots" / "index.html"
    assert not [s for s in _scripts(page.read_text(encoding="utf-8")).srcs if "//" in s]
    n_plots, drawn = _drawn(page)
    assert n_plots == 2 and drawn == ["dvclive_m_plots_metrics_train_loss_tsv", "ced_test_a"], (n_plots, drawn)

    # Control: DVC's own page (CDN scripts) draws nothing under the same flags, so no network was reached above.
    from dvc_render.html import PAGE_HTML

    (tmp_path / "cdn.html").write_text(PAGE_HTML)
    subprocess.run([*dvc, "plots", "show", "--html-template", "cdn.html", "-o", "cdn_plots"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=300)
    assert _drawn(tmp_path / "cdn_plots" / "index.html") == (2, [])


def test_dvc_yaml_declares_a_ced_plot_per_test_set_with_every_leaderboard_method():
    import yaml

    from flmlib.config import load_config

    study = load_config()
    plots = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["plots"]
    ced = {name: spec for entry in plots for name, spec in entry.items() if name.startswith("ced_")}
    assert set(ced) == {f"ced_{ts}" for ts in study.test_sets}
    for test_set in study.test_sets:
        spec = ced[f"ced_{test_set}"]
        assert spec["x"] == "threshold" and spec["y"] == {f"reports/ced/{test_set}.csv": study.leaderboard_ids}
