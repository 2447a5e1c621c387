"""How long the full zoo (``make zoo``) trains on this machine: a few epochs of every model, extrapolated.

``python -m flmlib.bench_zoo`` (on a GPU machine: ``train.device: auto`` picks CUDA) merges ``zoo.yaml`` into
``params.yaml`` in memory, and for each model trains its own recipe for ``--epochs`` epochs with
:func:`flmlib.train.train`: the same code, batch size, augmentation, validation and checkpointing as the pipeline.
The faces are synthetic (:func:`flmlib.bench_train.synthetic_arrays`) but shaped like the real splits: the same
number of training and validation faces and the crop size of the model's ``train_data``. An epoch's time depends on
those shapes, not on the pixels, so the study's data need not travel to the machine that is timed.

The estimate for a model is the measured epochs plus the recipe's remaining epochs at the median time of the measured
epochs after the first (the first pays for kernel selection and warm-up). It leaves out the pipeline's other stages
(prepare, crops, predict, compare: about 20 minutes on the study's 2-core CPU, see ``reports/timings``), which a GPU
does not speed up much.

Writes ``reports/bench_zoo.json`` and ``reports/bench_zoo.md`` (``--out``) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flmlib.bench_train import synthetic_arrays
from flmlib.paths import project_path
from flmlib.device import resolve_device
from flmlib.train import config_for_model, train

#: Distinct synthetic faces drawn per split; larger splits repeat them (an epoch's time does not see the pixels).
POOL = 128


def write_timing_split(path: Path, n: int, crop_size: int, context_factor: float, seed: int) -> Path:
    """A prepared-format split of ``n`` faces at ``crop_size`` px (``POOL`` synthetic faces repeated)."""
    pool = synthetic_arrays(min(n, POOL), seed, crop_size=crop_size, context_factor=context_factor)
    idx = np.arange(n) % len(pool["face_id"])
    arrays = {k: (v[idx] if getattr(v, "ndim", 0) >= 1 else v) for k, v in pool.items()}
    arrays["face_id"] = np.array([f"{fid}_{k}" for k, fid in enumerate(arrays["face_id"])])
    np.savez(path, **arrays)
    return path


def time_model(study, model_id: str, epochs: int, train_faces: int, val_faces: int, workdir: Path) -> dict:
    """Train ``model_id``'s recipe for ``epochs`` epochs (at most the recipe's) on synthetic faces; the per-epoch
    times and the estimate (the measured time itself when the whole recipe ran)."""
    recipe_epochs = study.train.recipes[study.models[model_id].recipe].epochs
    config = config_for_model(study, model_id, epochs=min(epochs, recipe_epochs))
    crop = study.train_crop_size(model_id)
    context = study.prepare.context_factor
    folder = workdir / model_id
    folder.mkdir(parents=True, exist_ok=True)
    train_path = write_timing_split(folder / "train.npz", train_faces, crop, context, seed=0)
    val_path = write_timing_split(folder / "val.npz", val_faces, crop, context, seed=1)
    result = train(config, train_path, val_path, folder / "model.pt", folder / "checkpoints", progress=False)
    seconds = [row["seconds"] for row in result.history]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    estimate = sum(seconds) + max(0, recipe_epochs - len(seconds)) * steady
    return {
        "model": model_id,
        "architecture": config.model,
        "input_size": result.model.input_size,
        "crop_size": crop,
        "recipe": study.models[model_id].recipe,
        "recipe_epochs": recipe_epochs,
        "batch_size": config.batch_size,
        "precision": config.precision,
        "epochs_timed": len(seconds),
        "epoch_seconds": seconds,
        "steady_epoch_seconds": steady,
        "estimated_minutes": estimate / 60,
    }


def split_size(path: Path, parser: argparse.ArgumentParser, flag: str) -> int:
    """Faces in a prepared split (its ``face_id`` array); without the file, a usage error naming the flag to give."""
    if not path.is_file():
        parser.error(f"{path} not found: give --{flag.replace('_', '-')} (the number of faces to time with)")
    with np.load(path, allow_pickle=False) as data:
        return int(len(data["face_id"]))


def machine() -> dict:
    device = resolve_device("auto")
    info = {"device": device.type, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown(report: dict) -> str:
    m = report["machine"]
    where = m.get("gpu", f"CPU ({m['cpu']})")
    lines = [
        f"Full zoo training time on {where}, torch {m['torch']}: each model's recipe timed for "
        f"{report['epochs']} epochs on synthetic faces shaped like the study's splits ({report['train_faces']} "
        f"training, {report['val_faces']} validation faces), extrapolated to the recipe's epochs.",
        "",
        "| model | input | recipe | epochs | batch | s/epoch (first) | s/epoch (steady) | estimated minutes |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["models"]:
        lines.append(f"| {row['model']} | {row['input_size']} | {row['recipe']} | {row['recipe_epochs']} | "
                     f"{row['batch_size']} | {row['epoch_seconds'][0]:.2f} | {row['steady_epoch_seconds']:.2f} | "
                     f"{row['estimated_minutes']:.1f} |")
    lines.append(f"| **all trainings, one after another** | | | | | | | **{report['total_minutes']:.1f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m flmlib.bench_zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(project_path("params.yaml")))
    parser.add_argument("--zoo", default=str(project_path("zoo.yaml")), help="overlay to time ('' for params alone)")
    parser.add_argument("--models", nargs="*", help="models to time (default: every trained model)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs timed per model, at most its recipe's (default: %(default)s)")
    parser.add_argument("--train-faces", type=int, help="faces per epoch (default: those of prepared/train.npz)")
    parser.add_argument("--val-faces", type=int, help="validation faces (default: those of prepared/val.npz)")
    parser.add_argument("--out", default=str(project_path("reports/bench_zoo")), help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")
    for flag, split in (("train_faces", "train"), ("val_faces", "val")):
        if getattr(args, flag) is None:  # the study's own split sizes, where the prepared data is at hand
            setattr(args, flag, split_size(project_path(f"prepared/{split}.npz"), parser, flag))

    from flmlib.config import load_config
    from flmlib.zoo import merged_study

    study = merged_study(args.params, args.zoo) if args.zoo else load_config(args.params)
    models = args.models or list(study.models)
    unknown = [m for m in models if m not in study.models]
    if unknown:
        parser.error(f"--models {unknown}: not trained models of {args.params}"
                     f"{' + ' + args.zoo if args.zoo else ''} ({list(study.models)})")
    report = {"machine": machine(), "epochs": args.epochs, "train_faces": args.train_faces,
              "val_faces": args.val_faces, "models": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_zoo_") as tmp:
        for model_id in models:
            row = time_model(study, model_id, args.epochs, args.train_faces, args.val_faces, Path(tmp))
            report["models"].append(row)
            print(f"{model_id}: {row['steady_epoch_seconds']:.2f} s/epoch, about {row['estimated_minutes']:.1f} min "
                  f"for {row['recipe_epochs']} epochs", flush=True)
    report["total_minutes"] = sum(row["estimated_minutes"] for row in report["models"])
    report["bench_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = markdown(report)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
