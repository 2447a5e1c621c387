"""DVC's experiment queue on a project laid out like the study's: queued runs happen in copies under .dvc/tmp/exps/,
and envs/python.sh must give their stages the project's environment and the copy's own code.

A tiny project (one stage, one param, a one-line `flmlib`) stands in for the study, whose full pipeline is far too
long for a test; the README's sweep runs the same commands on the real one.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flmlib.paths import PROJECT_ROOT

VENV = Path(sys.executable).parents[1]
DVC = VENV / "bin" / "dvc"


def _run(cmd, cwd, env=None, timeout=120):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in this environment")
def test_queued_experiments_run_with_the_projects_environment_and_their_own_code(tmp_path):
    project = tmp_path / "study"
    (project / "envs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "envs" / "python.sh", project / "envs" / "python.sh")
    (project / ".venv").symlink_to(VENV, target_is_directory=True)  # the environment, as `make env` leaves it
    (project / "flmlib").mkdir()
    (project / "flmlib" / "__init__.py").write_text("")
    (project / ".gitignore").write_text(".venv\n.venv-mediapipe\nweights\n")
    # (A param may not be called `size` or `nfiles`: DVC leaves keys of those names out of its run-cache key.)
    (project / "params.yaml").write_text("width: 48\n")
    stage = ("sh envs/python.sh -c \"import flmlib, json, os, sys, yaml; "
             "width = yaml.safe_load(open('params.yaml'))['width']; "
             "json.dump({'width_seen': width, 'flmlib': flmlib.__file__, 'python': os.path.realpath(sys.prefix)}, open('result.json', 'w'))\"")
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"run": {
        "cmd": stage, "deps": ["flmlib/__init__.py"], "params": ["width"], "metrics": [{"result.json": {"cache": False}}]}}}))
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}  # queue workers call dvc
    _run(["git", "init", "-q"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty"], project)
    _run([str(DVC), "init", "-q"], project, env)
    _run([str(DVC), "repro", "-q"], project, env)
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "baseline"], project)

    for width in (40, 64):
        _run([str(DVC), "exp", "run", "--queue", "-S", f"width={width}"], project, env)
    _run([str(DVC), "queue", "start", "-j", "2"], project, env)
    deadline = time.time() + 240
    while time.time() < deadline:
        status = _run([str(DVC), "queue", "status"], project, env)
        if status.count("Success") == 2 or "Failed" in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status

    shown = json.loads(_run([str(DVC), "exp", "show", "--json"], project, env))
    runs = [exp["revs"][0]["data"] for row in shown for exp in (row.get("experiments") or [])]
    results = {r["params"]["params.yaml"]["data"]["width"]: r["metrics"]["result.json"]["data"] for r in runs}
    assert sorted(results) == [40, 64] and all(results[w]["width_seen"] == w for w in results), results
    for result in results.values():
        # the copy's own flmlib ran (not the environment's editable install), with the project's environment
        assert "/.dvc/tmp/exps/" in result["flmlib"] and Path(result["python"]).resolve() == VENV.resolve()
