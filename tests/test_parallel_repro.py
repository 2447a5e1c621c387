"""flmlib.parallel_repro on a small DVC project: independent stages side by side, each recorded in dvc.lock."""
import subprocess
import sys

import pytest

DVC_YAML = """
stages:
  source:
    cmd: echo 1 > a.txt
    outs: [a.txt]
  left:
    cmd: sleep 1 && cat a.txt > b.txt && date +%s.%N > b.time
    deps: [a.txt]
    outs: [b.txt, b.time]
  right:
    cmd: sleep 1 && cat a.txt > c.txt && date +%s.%N > c.time
    deps: [a.txt]
    outs: [c.txt, c.time]
  join:
    cmd: cat b.txt c.txt > d.txt
    deps: [b.txt, c.txt]
    outs: [d.txt]
"""


def _project(tmp_path, dvc_yaml=DVC_YAML):
    def run(*args):
        return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=True)

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    return run


def _repro(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "flmlib.parallel_repro", *args, "--log-dir", "logs"], cwd=tmp_path,
                          capture_output=True, text=True, env=_env())


def _env():
    import os

    from flmlib.paths import PROJECT_ROOT

    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


@pytest.mark.slow
def test_independent_stages_run_side_by_side_and_are_recorded(tmp_path):
    run = _project(tmp_path)
    done = _repro(tmp_path, "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "d.txt").read_text() == "1\n1\n"
    # left and right overlapped: each started before the other finished (both sleep 1 s)
    b, c = float((tmp_path / "b.time").read_text()), float((tmp_path / "c.time").read_text())
    assert abs(b - c) < 0.9
    status = run(sys.executable, "-m", "dvc", "status", "--json").stdout.strip()
    assert status == "{}"  # every stage recorded in dvc.lock, as `dvc repro` would have
    again = _repro(tmp_path, "--jobs", "2")
    assert "0 stage(s) to run" in again.stdout


@pytest.mark.slow
def test_a_failed_stage_stops_its_downstream_only(tmp_path):
    _project(tmp_path, DVC_YAML.replace("sleep 1 && cat a.txt > c.txt", "exit 3"))
    done = _repro(tmp_path, "--jobs", "2")
    assert done.returncode == 1
    assert "FAILED  right" in done.stdout and "skipped join" in done.stdout and "done    left" in done.stdout
    assert (tmp_path / "b.txt").is_file() and not (tmp_path / "d.txt").exists()
    assert (tmp_path / "logs" / "right.log").is_file()
    dry = _repro(tmp_path, "--dry")
    assert "2 stage(s) to run" in dry.stdout and "right" in dry.stdout and "join" in dry.stdout
