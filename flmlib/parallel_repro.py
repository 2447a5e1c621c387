"""Run the out-of-date stages of the DVC pipeline a few at a time, recording each one in ``dvc.lock`` as it ends.

``dvc repro`` runs one stage after another. On a 2-core laptop that leaves a core idle for most of the study: each
training runs on one thread (the fastest setting for these small networks, see params.yaml ``train.threads``), and
the train and predict stages of different models do not depend on each other. This runner walks the same DAG,
starts every stage whose upstream stages are done, up to ``--jobs`` at once, and after each successful command
records it with ``dvc commit -f <stage>`` (what ``dvc repro`` records: the hashes of its dependencies and outputs).

* Stages named by ``--alone`` (default: ``speed``, ``video`` and ``detectors``, whose timings a neighbour would
  disturb) run with nothing beside them. While one waits for the others to finish, free slots go to the other ready
  stages, so an idle core is left only when nothing else can run.
* Before a stage runs, its outputs are removed as ``dvc repro`` removes them (``persist`` outputs stay, so a killed
  training resumes from its checkpoint).
* A failed stage stops everything downstream of it; the others go on. The exit status is non-zero when any failed.
  Each stage's output goes to ``<log-dir>/<stage>.log``.

Afterwards ``dvc status`` is clean for every stage that ran, and a plain ``dvc repro`` has nothing left to do. Unlike
``dvc repro``, the runner does not look up DVC's run-cache (a stage whose exact inputs ran before is run again), and
Ctrl-C, ``kill`` (SIGTERM) or a closed terminal (SIGHUP) stops the running stages without recording them.

    python -m flmlib.parallel_repro --jobs 2            # every stale stage
    python -m flmlib.parallel_repro --jobs 2 --skip report   # all but the report
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_ALONE = ("speed", "video", "detectors")


def _stage_name(stage) -> str:
    return stage.addressing


def stale_stages(repo, skip: tuple[str, ...] = ()) -> tuple[list, dict]:
    """The pipeline stages that ``dvc repro`` would run, upstream first, and each one's stale upstream stages.

    A stage is stale when its own entries changed or any stage upstream of it is stale. Stale stages whose name (or
    ``foreach`` group, the part before ``@``) is in ``skip`` are left out, and so is everything downstream of them;
    skipping a stage that is up to date leaves its downstream stages as they are (``--skip train`` still runs the
    predictions of the models already trained).
    """
    import networkx as nx

    graph = repo.index.graph  # edges: stage -> the stages it depends on
    order = [s for s in reversed(list(nx.topological_sort(graph))) if s.cmd]
    stale: dict = {}
    for stage in order:
        name = _stage_name(stage)
        upstream = [u for u in graph.successors(stage) if u in stale]
        if not upstream and not stage.changed():
            continue  # up to date: nothing to run, and nothing for its downstream stages to wait for
        skipped = name in skip or name.split("@")[0] in skip
        stale[stage] = None if skipped or any(stale[u] is None for u in upstream) else upstream
    runnable = [s for s in order if stale.get(s) is not None]
    return runnable, {s: stale[s] for s in runnable}


def _commit(stage_name: str, log) -> bool:
    """``dvc commit -f <stage>``, retried while another dvc process holds the repository lock."""
    for attempt in range(10):
        done = subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", stage_name], stdout=log,
                              stderr=subprocess.STDOUT)
        if done.returncode == 0:
            return True
        time.sleep(3 * (attempt + 1))
    return False


def run(jobs: int = 2, alone: tuple[str, ...] = DEFAULT_ALONE, skip: tuple[str, ...] = (),
        log_dir: str | Path = "reports/logs/repro", dry: bool = False) -> int:
    """Run the stale stages, ``jobs`` at a time; returns the number of stages that failed (or could not run)."""
    from dvc.repo import Repo

    repo = Repo(".")
    with repo.lock:  # held only while reading; each `dvc commit` below takes it in turn
        stages, upstream = stale_stages(repo, tuple(skip))
    names = [_stage_name(s) for s in stages]
    print(f"{len(stages)} stage(s) to run, {jobs} at a time: {', '.join(names) or 'none'}", flush=True)
    if dry or not stages:
        return 0
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    pending, running, done, failed = list(stages), {}, set(), set()
    started_all = time.perf_counter()
    previous_handlers = _raise_on_stop_signals()
    try:
        _schedule(stages, upstream, jobs, alone, repo, log_dir, pending, running, done, failed)
    finally:  # Ctrl-C, kill, a closed terminal or an error here: stop the stages still running (not recorded)
        for signum in previous_handlers:
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the stopping short
        _stop_stages(running)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    print(f"{len(done)} stage(s) done, {len(failed)} failed, in {(time.perf_counter() - started_all) / 60:.1f} min",
          flush=True)
    return len(failed)


class Stopped(Exception):
    """The runner was asked to stop by a signal (SIGINT, SIGTERM or SIGHUP)."""


# Each stage runs in a session of its own (so that stopping it reaches papermill and its kernel), which means a
# signal sent to the runner alone does not reach the stages: the runner turns these signals into ``Stopped`` and
# stops them itself. SIGINT is included because a runner started in the background of a script ignores it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE_SECONDS = 10.0


def _raise_on_stop_signals() -> dict:
    """Make the stop signals raise ``Stopped`` in the runner; returns the handlers they had before."""

    def stop(signum, _frame):
        raise Stopped(f"stopped by {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers; a caller in another thread keeps its own
    return {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}


def _stop_stages(running: dict) -> None:
    """SIGTERM to each running stage's process group, SIGKILL to those still alive after the grace period.

    Waiting for them matters: a stage left running would go on writing the outputs (and checkpoints) that the next
    run starts again.
    """
    for process, _, _ in running.values():
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the shell and everything it started (papermill, kernel)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for stage, (process, log, _) in running.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the group outlived the shell (a kernel, say)
        except ProcessLookupError:
            pass
        log.close()
        print(f"  stopped {_stage_name(stage)} (not recorded)", flush=True)


def _schedule(stages, upstream, jobs, alone, repo, log_dir, pending, running, done, failed) -> None:
    """Start ready stages while slots are free, record finished ones; returns when nothing is left."""

    def is_alone(stage) -> bool:
        return _stage_name(stage) in alone or _stage_name(stage).split("@")[0] in alone

    while pending or running:
        for stage in [s for s in pending if any(u in failed for u in upstream[s])]:
            pending.remove(stage)
            failed.add(stage)
            print(f"  skipped {_stage_name(stage)}: an upstream stage failed", flush=True)
        ready = [s for s in pending if all(u in done for u in upstream[s])]
        for stage in ready:
            if len(running) >= jobs or any(is_alone(s) for s in running):
                break
            if is_alone(stage) and running:
                continue  # it waits for an empty machine; the free slot goes to the next ready stage meanwhile
            pending.remove(stage)
            name = _stage_name(stage)
            with repo.lock:
                stage.remove_outs(ignore_remove=False, force=False)
            log = open(log_dir / f"{name.replace('/', '_')}.log", "w")
            process = subprocess.Popen(stage.cmd, shell=True, cwd=stage.wdir, stdout=log, stderr=subprocess.STDOUT,
                                       executable="/bin/bash", start_new_session=True)
            running[stage] = (process, log, time.perf_counter())
            print(f"  started {name}", flush=True)
        time.sleep(1.0)
        for stage, (process, log, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[stage]
            name, minutes = _stage_name(stage), (time.perf_counter() - started) / 60
            if process.returncode == 0 and _commit(name, log):
                done.add(stage)
                print(f"  done    {name} ({minutes:.1f} min; {len(done)}/{len(stages)})", flush=True)
            else:
                failed.add(stage)
                print(f"  FAILED  {name} (exit {process.returncode}; log {log.name})", flush=True)
            log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-j", type=int, default=2, help="stages at once (default 2)")
    parser.add_argument("--alone", nargs="*", default=list(DEFAULT_ALONE),
                        help="stages (or foreach groups) that run with nothing beside them (default: speed video detectors)")
    parser.add_argument("--skip", nargs="*", default=[], help="stages (or groups) to leave out, with their downstream")
    parser.add_argument("--log-dir", default="reports/logs/repro", help="one log file per stage")
    parser.add_argument("--dry", action="store_true", help="list the stages that would run")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be at least 1")
    try:
        failed = run(args.jobs, tuple(args.alone), tuple(args.skip), args.log_dir, args.dry)
    except Stopped as stopped:
        print(str(stopped), flush=True)
        sys.exit(130)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
