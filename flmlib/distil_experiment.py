"""How a distilled student (:mod:`flmlib.distil`) compares: trained, then scored on every test set and timed.

``make distil`` runs it for several seeds of a ``distil.yaml`` entry. It trains the student as :mod:`flmlib.distil`
does, then adds to its JSON report, for every test set whose reference predictions exist
(``reports/predictions/<reference>/<test set>.npz``), AUC@0.08 of RMSE / sqrt(w·h) of the face box with its bootstrap
CI and the paired difference against the reference method, next to each teacher's committed predictions; and the
batched speed of the distilled method against the reference method and the first teacher in alternating rounds
(``--rounds``), as the speed stage times them.

    python -m flmlib.distil_experiment --config distil.yaml --entry onet_distilled --seed 1 \\
        --out reports/distil/onet_distilled_seed1.pt

The pipeline's own student (the ``distil@<id>`` stage) is scored by the compare stage and timed by the speed stage
like every method; this module is for the questions around it (other seeds, widths, the student's flip test).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from flmlib.bench import BenchError
from flmlib.distil import add_arguments, distil, settings_from, teacher_ids, write_report
from flmlib.paths import project_path


def score(model_path: str | Path, teacher_ids: Sequence[str], params_path: str | Path = "params.yaml",
          prepared_dir: str | Path = "prepared", predictions_dir: str | Path = "reports/predictions",
          test_sets: Sequence[str] | None = None, flip_test: bool = False) -> dict:
    """The student's two-pass method (with ``flip_test``, the student's own flip test) on each test set whose reference
    predictions exist: AUC@0.08 of ``rmse_box`` with its person-level bootstrap CI and the paired difference against
    the study's reference method, next to the reference and the ``teacher_ids`` (their committed predictions, where
    present)."""
    from flmlib.compare import (ALL, aligned_points, error_table, limit_split, load_predictions, load_split,
                                predict_test_set, predictions_path, study_metrics)
    from flmlib.config import load_config
    from flmlib.landmarkers.cnn import build
    from flmlib.landmarkers.base import MethodSpec

    study = load_config(project_path(params_path))
    landmarker = build(MethodSpec(id="distilled", kind="cnn"), model_path, flip_test=flip_test)
    faces = pd.read_csv(project_path(prepared_dir) / "faces.csv")
    image_paths = dict(zip(faces["face_id"], faces["image_path"]))
    out = {}
    for test_set in test_sets or list(study.test_sets):
        reference = project_path(predictions_path(predictions_dir, study.reference, test_set))
        if not reference.is_file():
            print(f"{test_set}: no {reference}, not scored", file=sys.stderr)
            continue
        split = limit_split(load_split(project_path(prepared_dir) / f"{test_set}.npz"), study.compare.limit)
        predictions = {"distilled": predict_test_set(landmarker, split, image_paths, desc=test_set)}
        for method in (study.reference, *teacher_ids):
            path = project_path(predictions_path(predictions_dir, method, test_set))
            if path.is_file():
                predictions[method] = aligned_points(load_predictions(path), split, method)
        errors = error_table(test_set, split, predictions)
        detail = study_metrics(errors, study.reference, ["rmse_box"], study.compare.n_resamples,
                               study.compare.seed)[test_set][ALL]
        out[test_set] = {
            "faces": int(len(split["face_id"])),
            "auc@0.08": {m: [v["rmse_box/auc@0.08"], v["rmse_box/auc@0.08/ci95_lo"], v["rmse_box/auc@0.08/ci95_hi"]]
                         for m, v in detail["methods"].items()},
            f"vs_{study.reference}": {m: [v["rmse_box/auc@0.08/diff"], v["rmse_box/auc@0.08/ci95_lo"],
                                          v["rmse_box/auc@0.08/ci95_hi"]] for m, v in detail["vs_reference"].items()},
        }
    return out


def time_against(model_path: str | Path, teacher_id: str | None, params_path: str | Path = "params.yaml",
                 prepared_dir: str | Path = "prepared", batch: int = 256, rounds: int = 7,
                 flip_test: bool = False) -> dict:
    """ms per face, batched, of the distilled method (run as the teacher method's options say, the flip test as
    ``flip_test`` says), the reference method and the teacher method (``teacher_id``, when it is a method of the
    study), timed in alternating rounds as the speed stage times them (:func:`flmlib.speed.round_times`), with the
    ratios to the reference paired by round (:func:`flmlib.speed.paired_ratios`: median and range) and the CPU they
    ran on."""
    from flmlib.bench import environment, load_faces
    from flmlib.config import load_config
    from flmlib.landmarkers.base import MethodSpec, build_method
    from flmlib.landmarkers.cnn import build
    from flmlib.report import cpu_label
    from flmlib.speed import images_per_pass, paired_ratios, round_times, runtime_of

    study = load_config(project_path(params_path))
    images, boxes, _ = load_faces(project_path(prepared_dir))
    order = np.resize(np.arange(len(boxes)), batch)
    batch_images, batch_boxes = [images[i] for i in order], [boxes[i : i + 1] for i in order]
    landmarkers = {study.reference: build_method(study.method_spec(study.reference))}
    options: dict = {}
    if teacher_id in study.method_ids:
        spec = study.method_spec(teacher_id)
        landmarkers[teacher_id] = build_method(spec)
        options = {k: v for k, v in spec.options.items() if k not in ("checkpoint", "flip_test")}
    landmarkers["distilled"] = build(MethodSpec(id="distilled", kind="cnn"), model_path, flip_test=flip_test,
                                     **options)
    calls = {m: {"batched": lambda lm=lm: lm.predict_batch(batch_images, batch_boxes)} for m, lm in landmarkers.items()}
    times = round_times(calls, rounds)
    ms = {m: 1000 * float(np.median(t["batched"])) / batch for m, t in times.items()}
    ratios = paired_ratios(times, study.reference)
    env = environment()
    return {"cpu": cpu_label(env), "environment": env, "batch": batch, "rounds": rounds,
            "ms_per_face_batched": {m: round(v, 4) for m, v in ms.items()},
            "ratio_to_reference": {m: round(r["batched"]["median"], 2) for m, r in ratios.items()},
            "ratio_range": {m: [round(v, 2) for v in r["batched"]["range"]] for m, r in ratios.items()},
            "runtime": {m: runtime_of(lm) for m, lm in landmarkers.items()},
            "images_per_pass": {m: images_per_pass(lm) for m, lm in landmarkers.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--flip-test", action="store_true",
                        help="score and time the student with its own flip test (default: one pass per face)")
    parser.add_argument("--test-sets", nargs="*", help="test sets to score (default: every one of --params)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="alternating timing rounds against the reference and the first teacher (0: no timing)")
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args, parser)
        summary = distil(**settings)
        summary["flip_test"] = args.flip_test
        teachers = teacher_ids(settings)
        summary["test"] = score(args.out, teachers, args.params, test_sets=args.test_sets, flip_test=args.flip_test)
        if args.rounds > 0:
            summary["speed"] = time_against(args.out, teachers[0], args.params, rounds=args.rounds,
                                            flip_test=args.flip_test)
    except (FileNotFoundError, ValueError, KeyError, BenchError) as exc:
        sys.exit(f"error: {exc}")
    report = write_report(summary, args.report or project_path(args.out).with_suffix(".json"))
    print(json.dumps({k: summary[k] for k in ("val_nme_interocular", "test", "speed") if k in summary}, indent=1))
    print(f"wrote {args.out} and {report}")


if __name__ == "__main__":
    main()
