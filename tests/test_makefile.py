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
