"""flmlib.parallel_repro on a small DVC project: independent stages side by side, each recorded in dvc.lock."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


@pytest.mark.slow
def test_skipping_an_up_to_date_stage_leaves_its_downstream_stages_in(tmp_path):
    _project(tmp_path)
    assert _repro(tmp_path, "--jobs", "2").returncode == 0
    # join's command changes, so join is stale; left (skipped) is up to date and must not hold join back
    (tmp_path / "dvc.yaml").write_text(DVC_YAML.replace("cat b.txt c.txt > d.txt", "cat c.txt b.txt > d.txt"))
    dry = _repro(tmp_path, "--dry", "--skip", "left")
    assert "1 stage(s) to run" in dry.stdout and "join" in dry.stdout, dry.stdout


@pytest.mark.slow
def test_skipping_a_stale_stage_leaves_out_its_downstream_stages(tmp_path):
    _project(tmp_path)
    dry = _repro(tmp_path, "--dry", "--skip", "left")
    assert "2 stage(s) to run" in dry.stdout, dry.stdout
    listed = dry.stdout.split(":", 1)[1]
    assert "source" in listed and "right" in listed and "left" not in listed and "join" not in listed


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_to_the_runner_stops_its_running_stages(tmp_path, signum):
    # The stage runs in a session of its own; the runner must stop it, or it would go on writing its outputs.
    _project(tmp_path, "stages:\n  slow:\n    cmd: echo $$ > shell.pid && sleep 60 && touch finished\n"
                       "    outs: [finished]\n")
    runner = subprocess.Popen([sys.executable, "-m", "flmlib.parallel_repro", "--log-dir", "logs"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                              # as a script's background job: SIGINT ignored, which the runner must override
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    pid_file = tmp_path / "shell.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pid_file.is_file(), "the stage never started"
    stage_group = int(pid_file.read_text())
    runner.send_signal(signum)
    out, _ = runner.communicate(timeout=30)
    assert runner.returncode == 130, out
    assert "stopped slow (not recorded)" in out
    assert _live_members(stage_group) == []  # the stage's shell and its sleep are gone
    assert not (tmp_path / "finished").exists()


def _live_members(group: int) -> list[int]:
    """Processes of a process group that are not zombies (an orphan's zombie waits for init to reap it)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


@pytest.mark.slow
def test_a_stage_waiting_to_run_alone_does_not_keep_other_ready_stages_waiting(tmp_path):
    # All three are ready at once and lone must run alone: quick and long belong side by side, and lone after them
    # (the runner lists them quick, lone, long; once quick runs, lone waits, and long takes the free slot)
    stamp = "date +%s.%N >> {0}.times"
    stage = "  {0}:\n    cmd: " + stamp + " && sleep {1} && " + stamp + " && touch {0}.out\n    outs: [{0}.out]\n"
    dvc_yaml = "stages:\n" + stage.format("long", 3) + stage.format("lone", 0.5) + stage.format("quick", 0.5)
    _project(tmp_path, dvc_yaml)
    done = _repro(tmp_path, "--jobs", "2", "--alone", "lone")
    assert done.returncode == 0, done.stdout + done.stderr

    def times(name):
        return [float(t) for t in (tmp_path / f"{name}.times").read_text().split()]

    (long_start, long_end), (quick_start, quick_end), lone_start = times("long"), times("quick"), times("lone")[0]
    assert quick_start < long_end and long_start < quick_end  # quick and long overlapped
    assert lone_start >= max(long_end, quick_end)  # and lone still ran with nothing beside it
