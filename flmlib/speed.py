"""The leaderboard's speed and size columns: every compared method timed the same way, in one run, on this machine.

    python -m flmlib.speed --out reports/speed.json          (the ``speed`` stage of dvc.yaml; also ``make bench``)

For every method of params.yaml (the trained models, dlib, MediaPipe) it measures the **landmarker alone**
(image + face box -> 68 points; detection excluded, the boxes are the prepare stage's detections of 300-W test
faces):

* ``batched``: all faces of a batch (the test faces repeated to ``batch`` faces) in one ``predict_batch`` call, which
  a CNN splits into forward passes of its own ``batch_size`` (``images_per_pass``: 64 by default, as the pipeline runs
  it);
* ``single``: one face per ``predict`` call (a webcam frame with one face), over the first ``single_faces`` faces;

in ``rounds`` rounds that alternate the methods (so a noisy neighbour on a shared machine slows every method of a
round alike), reporting the median over rounds of the time per face and the ratio to the reference method
(``reference`` in params.yaml, dlib): the median over rounds of the reference's time over the method's **in the
same round**, with its range over the rounds. Sizes: parameters and the model file's MB on disk.
The CPU model and its vector instruction sets go with the numbers: they move between machines.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from flmlib.bench import dlib_model_size, environment, load_faces, rate
from flmlib.config import load_config
from flmlib.landmarkers import build_method
from flmlib.paths import project_path
from flmlib.report import cpu_label


def model_size(spec, landmarker) -> dict:
    """Parameters and MB on disk of a method's model (what can be known of it)."""
    if spec.kind == "cnn":
        path = project_path(spec.options["checkpoint"])
        # a two-pass method counts both of its networks
        nets = landmarker.networks if hasattr(landmarker, "networks") else (landmarker.model,)
        n = sum(p.numel() for net in nets for p in net.parameters()) if all(net is not None for net in nets) else None
        return {"parameters": int(n) if n is not None else None, "mb_on_disk": round(path.stat().st_size / 1e6, 3),
                "file": str(spec.options["checkpoint"])}
    if spec.kind == "dlib_predictor":
        size = dlib_model_size(Path(landmarker.model_path))
        return {"parameters": size["parameters"], "mb_on_disk": size["mb_on_disk"], "file": Path(size["file"]).name}
    return {"parameters": None, "mb_on_disk": None, "file": None}


#: :func:`runtime_of` a CNN run as the study runs CNNs unless their params entry says otherwise: eager, fp32.
DEFAULT_RUNTIME = "torch, fp32"


def images_per_pass(landmarker) -> int | None:
    """The images a CNN method's forward passes carry at most (a two-pass method: its second network's, which its
    first shares); ``None`` for a method that is not a CNN of the study (MediaPipe's ``batch_size`` counts the crops
    of a request to its worker, not a forward pass)."""
    net = getattr(landmarker, "second", landmarker)
    return net.batch_size if hasattr(net, "backend") else None


def runtime_of(landmarker) -> str | None:
    """How a CNN method runs, e.g. ``compile, bf16, flip test`` (a two-pass method: its second network's settings,
    which its first shares except the flip test); ``None`` for a method that is not a CNN of the study."""
    net = getattr(landmarker, "second", landmarker)
    if not hasattr(net, "backend"):
        return None
    return ", ".join([net.backend, net.precision] + (["flip test"] if getattr(net, "flip_test", False) else []))


def round_times(calls: dict[str, dict[str, Callable[[], object]]], rounds: int, warmup: int = 1) -> dict:
    """``calls[method][mode]()`` timed in ``rounds`` alternating rounds (each round calls every method's modes once,
    in order, after ``warmup`` untimed rounds); returns each call's seconds per round, ``[method][mode] -> list``."""
    for _ in range(warmup):
        for modes in calls.values():
            for fn in modes.values():
                fn()
    times: dict = {m: {mode: [] for mode in modes} for m, modes in calls.items()}
    for _ in tqdm(range(rounds), desc="speed rounds", mininterval=2.0):
        for method, modes in calls.items():
            for mode, fn in modes.items():
                start = time.perf_counter()
                fn()
                times[method][mode].append(time.perf_counter() - start)
    return times


def time_rounds(calls: dict[str, dict[str, Callable[[], object]]], rounds: int, warmup: int = 1) -> dict:
    """``calls[method][mode]()`` timed in ``rounds`` alternating rounds (:func:`round_times`); returns median seconds
    per call."""
    times = round_times(calls, rounds, warmup)
    return {m: {mode: float(np.median(v)) for mode, v in modes.items()} for m, modes in times.items()}


def paired_ratios(times: dict, reference: str) -> dict:
    """Per method and mode, the reference's time over the method's **in the same round**, from :func:`round_times`'
    output: ``{"median": ..., "range": [min, max]}`` over the rounds.

    Pairing each round with itself keeps a slow spell of a shared machine, which slows one round's methods alike,
    out of the ratio; the range shows how far single rounds scatter.
    """
    out = {}
    for method, modes in times.items():
        out[method] = {}
        for mode, seconds in modes.items():
            ratios = np.asarray(times[reference][mode]) / np.asarray(seconds)
            out[method][mode] = {"median": float(np.median(ratios)),
                                 "range": [float(ratios.min()), float(ratios.max())]}
    return out


#: Rounds of the speed stage: about 10 s each for the whole leaderboard on a 2-core CPU. The ratios to dlib scatter by
#: about ±20% between single rounds on a shared machine; nine give a steady median.
DEFAULT_ROUNDS = 9


def run(method_ids: Sequence[str], prepared: Path, params_path: str | Path = "params.yaml",
        rounds: int = DEFAULT_ROUNDS,
        batch: int = 256, single_faces: int = 32, log: Callable[[str], None] = print) -> dict:
    """Time every method (module docstring) and return the result dict."""
    study = load_config(params_path)
    images, boxes, _ = load_faces(prepared)
    order = np.resize(np.arange(len(boxes)), batch)
    batch_images, batch_boxes = [images[i] for i in order], [boxes[i : i + 1] for i in order]
    singles = [(images[i], boxes[i : i + 1]) for i in range(min(single_faces, len(boxes)))]
    built, calls, sizes, skipped = {}, {}, {}, {}
    for method in method_ids:
        spec = study.method_spec(method)
        log(f"speed: building {method} ({spec.kind}) ...")
        try:
            landmarker = built[method] = build_method(spec)
            runtime = runtime_of(landmarker)
            sizes[method] = {**model_size(spec, landmarker), "runtime": runtime,
                             "runtime_is_default": runtime in (None, DEFAULT_RUNTIME),
                             "images_per_pass": images_per_pass(landmarker)}
        except (OSError, ValueError, RuntimeError) as exc:
            skipped[method] = f"{type(exc).__name__}: {exc}"
            continue
        # Each CNN runs forward passes of its own size (DEFAULT_BATCH_SIZE unless its options set one), as the
        # pipeline and `flm predict` run it: the batched call hands it all `batch` faces, split into passes.
        calls[method] = {
            "batched": lambda lm=landmarker: lm.predict_batch(batch_images, batch_boxes),
            "single": lambda lm=landmarker: [lm.predict(image, box) for image, box in singles],
        }
    try:
        times = round_times(calls, rounds)
    finally:
        for landmarker in built.values():  # a method with a worker process (MediaPipe) stops it here
            if callable(getattr(landmarker, "close", None)):
                landmarker.close()
    faces_per_call = {"batched": batch, "single": len(singles)}
    per_face = {m: {mode: float(np.median(t)) / faces_per_call[mode] for mode, t in modes.items()}
                for m, modes in times.items()}
    ratios = paired_ratios(times, study.reference) if study.reference in times else None
    out: dict = {}
    for method in method_ids:
        if method in skipped:
            out[method] = {"skipped": skipped[method]}
            continue
        entry = {"batched": rate(per_face[method]["batched"]), "single": rate(per_face[method]["single"]),
                 **sizes[method]}
        if ratios:
            entry["ratio_to_reference"] = {mode: round(r["median"], 2) for mode, r in ratios[method].items()}
            entry["ratio_range"] = {mode: [round(v, 2) for v in r["range"]] for mode, r in ratios[method].items()}
        out[method] = entry
    return {"environment": environment(), "reference": study.reference,
            "faces": {"set": "300-W test faces of the prepare stage (detection boxes)", "distinct_faces": len(boxes),
                      "batch": batch, "single_faces": len(singles)},
            "rounds": rounds, "torch_threads": torch.get_num_threads(),
            "definition": "image + face box -> 68 points, detection excluded; batched: one predict_batch call of"
                          f" {batch} faces (each CNN in forward passes of its own size); single: one face per predict"
                          " call; medians over alternating rounds;"
                          " ratio_to_reference: median over the rounds of the reference's time over this method's in"
                          " the same round (ratio_range: their lowest and highest)",
            "methods": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flmlib.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--prepared", default="prepared", help="prepared data folder (default: %(default)s)")
    parser.add_argument("--out", default="reports/speed.json", help="JSON output (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="alternating rounds (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=256, help="faces per batched call (default: %(default)s)")
    parser.add_argument("--single-faces", type=int, default=32, help="faces timed one by one (default: %(default)s)")
    parser.add_argument("--methods", nargs="*", default=None, metavar="ID",
                        help="method ids (default: every method of the leaderboard; seed repeats time the same as"
                             " their entry)")
    args = parser.parse_args(argv)
    study = load_config(args.params)
    methods = study.leaderboard_ids if args.methods is None else args.methods
    unknown = sorted(set(methods) - set(study.method_ids))
    if unknown:
        parser.error(f"--methods {unknown}: not methods of {args.params} {study.method_ids}")
    result = run(methods, project_path(args.prepared), args.params, args.rounds, args.batch, args.single_faces,
                 log=lambda m: print(m, file=sys.stderr))
    out = project_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    env = result["environment"]
    limits = env["isa_in_use"]["limits"]
    print(f"{cpu_label(env)}, torch threads {result['torch_threads']},"
          f" torch kernels {env['isa_in_use']['torch']}" + (f", limited by {limits}" if limits else ""))
    for method, entry in result["methods"].items():
        if "skipped" in entry:
            print(f"{method:>20}: skipped ({entry['skipped']})")
            continue
        ratio = entry.get("ratio_to_reference", {})
        print(f"{method:>20}: batched {entry['batched']['ms_per_face']:8.3f} ms/face ({ratio.get('batched', '-')}x),"
              f" single {entry['single']['ms_per_face']:8.3f} ms/face ({ratio.get('single', '-')}x)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
