"""The Makefile's environment rules, dry-run (make -n) in a copy of the project's make files."""
import shutil
import subprocess

from flmlib.paths import PROJECT_ROOT


def _project_copy(tmp_path):
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path)
    shutil.copytree(PROJECT_ROOT / "mk", tmp_path / "mk")
    for name in ("requirements.lock", "pyproject.toml"):
        (tmp_path / name).write_text("")
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "mediapipe.lock").write_text("")
    return tmp_path


def _dry_run(root, target):
    return subprocess.run(["make", "-n", target], cwd=root, capture_output=True, text=True, check=True).stdout


def test_an_environment_built_elsewhere_is_rebuilt_here(tmp_path):
    root = _project_copy(tmp_path)
    (root / ".venv").mkdir()
    (root / ".venv" / ".installed").write_text("/somewhere/else\n")
    (root / ".venv" / ".project").write_text("/somewhere/else\n")
    out = _dry_run(root, "env")
    assert ".venv was built for /somewhere/else" in out and "rebuilding it here" in out
    assert "venv --clear .venv" in out and "-e ." in out
    assert not (root / ".venv" / ".installed").exists()


def test_an_environment_built_here_is_kept(tmp_path):
    root = _project_copy(tmp_path)
    (root / ".venv").mkdir()
    (root / ".venv" / ".installed").write_text(f"{root}\n")
    out = _dry_run(root, "env")
    assert "rebuilding" not in out and "pip install" not in out


def test_repro_checks_the_data_before_running_the_pipeline(tmp_path):
    root = _project_copy(tmp_path)
    out = _dry_run(root, "repro")
    assert out.index("dvc status --quiet data.dvc") < out.index("dvc repro")


def test_make_test_lints_first_in_its_own_environment(tmp_path):
    root = _project_copy(tmp_path)
    (root / "envs" / "lint.lock").write_text("ruff==0.16.9\n")
    out = _dry_run(root, "test")
    assert "-m venv .venv-lint" in out and "-r envs/lint.lock" in out
    assert out.index("ruff check flmlib tests") < out.index("-m pytest")


def test_make_repro_runs_stages_side_by_side_then_dvc_repro(tmp_path):
    out = _dry_run(_project_copy(tmp_path), "repro")
    assert "flmlib.parallel_repro --jobs 2" in out and out.index("parallel_repro") < out.index("dvc repro")
    assert "--jobs 1" in subprocess.run(["make", "-n", "repro", "JOBS=1"], cwd=tmp_path, capture_output=True,
                                        text=True, check=True).stdout
