"""dvc.yaml stays in step with the notebooks: every parameter is passed, every flmlib module used is a dependency."""
import ast
import re

import nbformat
import pytest
import yaml

from flmlib.paths import PROJECT_ROOT

# foreach stages keep their definition under "do"; matrix stages at the top level like plain ones.
STAGES = {name: stage.get("do", stage) for name, stage in yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"].items()}


def _flmlib_imports(source: str) -> set[str]:
    """Top-level flmlib modules imported by a piece of Python source (``flmlib.x`` -> ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flmlib"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("flmlib."))
    return {m for m in found if _source_files(m)}


def _source_files(module: str) -> list:
    """The files of a flmlib module: ``flmlib/<m>.py``, or every file of the package ``flmlib/<m>/``."""
    path = PROJECT_ROOT / "flmlib" / module
    return [path.with_suffix(".py")] if path.with_suffix(".py").is_file() else sorted(path.glob("*.py"))


def _dep_name(module: str) -> str:
    return f"flmlib/{module}.py" if (PROJECT_ROOT / "flmlib" / f"{module}.py").is_file() else f"flmlib/{module}"


def _closure(modules: set[str]) -> set[str]:
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for path in _source_files(module):
            todo.extend(_flmlib_imports(path.read_text()) - seen)
    return seen


def _notebook(stage: dict) -> nbformat.NotebookNode | None:
    path = next((d for d in stage["deps"] if str(d).startswith("notebooks/")), None)
    return nbformat.read(PROJECT_ROOT / path, as_version=4) if path else None


def _stage_code(stage: dict) -> str:
    """The Python a stage runs: its notebook's code, or the module of a ``python -m flmlib.<module>`` command."""
    nb = _notebook(stage)
    if nb is not None:
        return _code(nb)
    module = re.search(r"-m flmlib\.(\w+)", stage["cmd"]).group(1)
    return f"import flmlib.{module}\n"


def _code(nb) -> str:
    # IPython magics and shell lines are not Python; drop them before parsing.
    return "\n".join(ln for c in nb.cells if c.cell_type == "code" for ln in c.source.splitlines()
                     if not ln.lstrip().startswith(("%", "!")))


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_depends_on_every_flmlib_module_its_notebook_uses(name):
    stage = STAGES[name]
    used = _closure(_flmlib_imports(_stage_code(stage)))
    # a package is covered by a dependency on it, or (train) on the files of it that the stage's entry uses
    covered = lambda dep: dep in stage["deps"] or any(str(d).startswith(dep + "/") for d in stage["deps"])  # noqa: E731
    missing = sorted(_dep_name(m) for m in used if not covered(_dep_name(m)))
    assert not missing, f"stage {name}: add to deps {missing}"


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_passes_every_notebook_parameter(name):
    stage = STAGES[name]
    if _notebook(stage) is None:
        pytest.skip(f"stage {name} runs a module, not a notebook")
    params_cell = next(c for c in _notebook(stage).cells if "parameters" in c.metadata.get("tags", []))
    names = {t.id for node in ast.parse(params_cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    cmd = stage["cmd"]
    passed = set(re.findall(r"-p (\w+) ", cmd)) | set(re.findall(r"[{,]\s*(\w+):", cmd))
    assert not names - passed, f"stage {name}: notebook parameters not passed by dvc.yaml: {sorted(names - passed)}"


def test_only_the_committed_headline_file_is_a_dvc_metric():
    """`dvc metrics show` prints one small table, and `dvc metrics diff` can compare it with the last commit."""
    import subprocess

    declared = [next(iter(m)) if isinstance(m, dict) else m
                for stage in STAGES.values() for m in stage.get("metrics", [])]
    assert declared == ["reports/metrics.json"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "reports/metrics.json"], cwd=PROJECT_ROOT)
    assert ignored.returncode == 1, "reports/metrics.json must be committed, not ignored"


def test_metrics_diff_against_the_last_commit_runs():
    import json
    import shutil
    import subprocess

    dvc = shutil.which("dvc", path=str(PROJECT_ROOT / ".venv" / "bin")) or shutil.which("dvc")
    if dvc is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("needs dvc and the project's git history")
    run = subprocess.run([dvc, "metrics", "diff", "HEAD", "--json"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    json.loads(run.stdout or "{}")
    shown = subprocess.run([dvc, "metrics", "show"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    # The committed metrics file keeps to the headline numbers (the detail is metrics_detail.json), so the table
    # grows with methods x test sets only: at most three numbers per method and test set.
    metrics = json.loads((PROJECT_ROOT / "reports" / "metrics.json").read_text())
    assert all(len(row) <= 3 for per_set in metrics.values() for row in per_set.values())


def test_stage_commands_do_not_depend_on_path():
    """`.venv/bin/dvc repro` without an activated environment must find papermill and python: every command calls
    the project's interpreter through envs/python.sh (DVC removes a stage's outputs before running it)."""
    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    nb = next(v["NB"] for v in raw["vars"] if "NB" in v)
    assert nb.startswith("sh envs/python.sh -m papermill ")
    for name, stage in STAGES.items():
        for part in re.split(r"&&|;", stage["cmd"]):
            words = part.split()
            assert words[0] in ("mkdir", "${NB}") or words[:2] == ["sh", "envs/python.sh"], \
                f"stage {name}: {part.strip()!r}"
