"""Forward-pass size: how a CNN landmarker's batched speed depends on the images its networks take per pass.

A landmarker splits a ``predict_batch`` call into forward passes of ``batch_size`` images (with the flip test,
``batch_size // 2`` faces and their mirror images). The pipeline runs every network at
``DEFAULT_BATCH_SIZE`` (64); on some CPUs a smaller
pass is much faster (cache-sized activations), on others it makes no difference. This benchmark builds each method
once per size, times one ``predict_batch`` call of ``--faces`` faces (the 300-W test faces of the prepare stage)
for every size and for the reference method (dlib) in alternating rounds (:func:`flmlib.speed.round_times`: median
times, ratios to the reference paired by round), and checks that every size gives the same points as the first (the
largest difference, in pixels, is reported: a forward pass computes each image on its own, so it should be 0).

    python -m flmlib.bench_batch                                   # every CNN method of the leaderboard
    python -m flmlib.bench_batch --methods onet --sizes 256 64 16  # -> reports/bench_batch.json and a table

It writes JSON (ms per face per method and size, ratio to the reference, the CPU and its vector instructions) and
prints a markdown table. It is part of ``make bench``, not of the pipeline.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from flmlib.bench import BenchError, environment, load_faces
from flmlib.config import load_config
from flmlib.landmarkers import build_method
from flmlib.report import cpu_label
from flmlib.speed import paired_ratios, round_times

DEFAULT_SIZES = (256, 128, 64, 32, 16)


def cnn_methods(study, method_ids: Sequence[str] | None = None) -> list[str]:
    """``method_ids`` checked to be CNN methods of the study (``ValueError`` naming the others); ``None``: every CNN
    method of the leaderboard (seed repeats run the same networks as their entry)."""
    if method_ids is None:
        return [m for m in study.leaderboard_ids if study.method_spec(m).kind == "cnn"]
    unknown = sorted(set(method_ids) - set(study.method_ids))
    if unknown:
        raise ValueError(f"{unknown}: not methods of the study ({study.method_ids})")
    not_cnn = [f"{m} ({study.method_spec(m).kind})" for m in method_ids if study.method_spec(m).kind != "cnn"]
    if not_cnn:
        raise ValueError(f"{not_cnn}: only CNN methods run forward passes whose size can be set")
    return list(method_ids)


def sweep(method_ids: Sequence[str] | None, sizes: Sequence[int], prepared: Path,
          params_path: str | Path = "params.yaml", faces: int = 256, rounds: int = 7) -> dict:
    """Time every method (``None``: :func:`cnn_methods`) at every forward-pass size against the reference method, in
    one run (module docstring)."""
    if not sizes or any(size < 1 for size in sizes):
        raise ValueError(f"sizes={list(sizes)}: need at least one size, each at least 1")
    study = load_config(params_path)
    method_ids = cnn_methods(study, method_ids)
    images, boxes, _ = load_faces(prepared)
    order = np.resize(np.arange(len(boxes)), faces)
    batch_images, batch_boxes = [images[i] for i in order], [boxes[i : i + 1] for i in order]
    reference = build_method(study.method_spec(study.reference))
    calls = {study.reference: {"batched": lambda: reference.predict_batch(batch_images, batch_boxes)}}
    largest_difference: dict[str, float] = {}
    for method in method_ids:
        first_points = None
        for size in sizes:
            # batch_size reaches every network of the method (both of a two-pass one), as in flm predict --batch-size
            landmarker = build_method(study.method_spec(method), batch_size=size)
            points = np.concatenate(landmarker.predict_batch(batch_images, batch_boxes))  # also the warm-up (compile)
            if first_points is None:
                first_points = points
            difference = float(np.nanmax(np.abs(points - first_points))) if len(points) else 0.0
            largest_difference[method] = max(largest_difference.get(method, 0.0), difference)
            calls[f"{method}@{size}"] = {"batched": lambda lm=landmarker: lm.predict_batch(batch_images, batch_boxes)}
    times = round_times(calls, rounds, warmup=0)
    ratios = paired_ratios(times, study.reference)
    ref_ms = float(np.median(times[study.reference]["batched"])) * 1000 / faces
    methods = {}
    for method in method_ids:
        per_size = {}
        for size in sizes:
            ms = float(np.median(times[f"{method}@{size}"]["batched"])) * 1000 / faces
            ratio = ratios[f"{method}@{size}"]["batched"]["median"]
            per_size[str(size)] = {"ms_per_face": round(ms, 4), "ratio_to_reference": round(ratio, 2)}
        best = min(sizes, key=lambda s: per_size[str(s)]["ms_per_face"])
        methods[method] = {"sizes": per_size, "fastest_size": int(best),
                           "largest_point_difference_px": round(largest_difference[method], 6)}
    return {"environment": environment(), "torch_threads": torch.get_num_threads(), "reference": study.reference,
            "reference_ms_per_face": round(ref_ms, 4), "faces_per_call": faces, "rounds": rounds,
            "sizes": [int(s) for s in sizes],
            "definition": "image + face box -> 68 points, one predict_batch call of faces_per_call 300-W test faces;"
                          " sizes: images per forward pass of each network (with the flip test, half as many faces);"
                          " medians over alternating rounds, the reference method in the same rounds;"
                          " ratio_to_reference: median over the rounds of the reference's time over the method's in"
                          " the same round",
            "methods": methods}


def markdown(result: dict) -> str:
    """The sweep as a table: ms per face batched, one column per forward-pass size."""
    sizes = result["sizes"]
    rows = ["| landmarker | " + " | ".join(f"{s} / pass" for s in sizes) + " | fastest | max Δ points, px |",
            "|---|" + "---:|" * (len(sizes) + 2)]
    for method, r in result["methods"].items():
        cells = [f"{r['sizes'][str(s)]['ms_per_face']:.3f}" for s in sizes]
        rows.append(f"| {method} | " + " | ".join(cells) + f" | {r['fastest_size']} | "
                    f"{r['largest_point_difference_px']:.4f} |")
    env = result["environment"]
    rows += ["", f"ms per face in one predict_batch call of {result['faces_per_call']} faces; {result['reference']}: "
             f"{result['reference_ms_per_face']:.3f} ms per face in the same rounds; medians of {result['rounds']} "
             f"alternating rounds; CPU {cpu_label(env)}, torch "
             f"threads {result['torch_threads']}."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, metavar="ID",
                        help="CNN methods of params.yaml (default: every CNN method of the leaderboard)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES), metavar="N",
                        help="images per forward pass (default: 256 128 64 32 16)")
    parser.add_argument("--faces", type=int, default=256, help="faces per predict_batch call (default 256)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", default="prepared")
    parser.add_argument("--out", default="reports/bench_batch.json")
    args = parser.parse_args(argv)
    try:
        result = sweep(args.methods, args.sizes, Path(args.prepared), args.params, args.faces, args.rounds)
    except (BenchError, ValueError, KeyError, OSError) as exc:
        print(f"bench_batch: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
