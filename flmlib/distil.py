"""Distil a two-pass model's flip test into a second network that runs once per face.

A two-pass method's second network with the flip test runs twice per face (the aligned face and its mirror image) and
averages the answers; that costs about as much as the rest of the method together. This experiment asks whether one
network can learn the averaged answer. The student starts as the first teacher's second network and is trained, on
the same augmented aligned training crops, to reproduce the teachers' flip-averaged points (the mean over every
teacher: several seeds of one entry make a stronger target). Ground truth does not enter the loss.

    python -m flmlib.distil --teachers models/onet_two_pass.pt models/onet_two_pass_seed1.pt \\
        models/onet_two_pass_seed2.pt --data crops/aligned96 --out models/distilled/onet_two_pass.pt \\
        --report reports/distil/onet_two_pass.json --seed 0

It writes a two-pass model file (the first teacher's first pass, the student as second network; open it with
``flm predict --checkpoint`` or :func:`flmlib.landmarkers.cnn.build`, without the flip test) and a JSON report:
validation NME (inter-ocular, on the plain aligned crops and on crops jittered like the first pass's alignment
error) of the teachers and the student with and without the flip test, and, for every test set whose reference
predictions exist (``reports/predictions/<reference>/<test set>.npz``), AUC@0.08 of RMSE / sqrt(w·h) of the face box
with its bootstrap CI and the paired difference against the reference method, next to each teacher's own committed
predictions; and the batched speed of the distilled method against the reference method and the first teacher
in alternating rounds (``--rounds``), as the speed stage times them. It is an experiment (``make distil``), not a
pipeline stage. A run killed halfway resumes from the checkpoint next to ``--out``; a finished one is not repeated.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from flmlib.augment import AugmentConfig, augment
from flmlib.bench import BenchError
from flmlib.landmarkers.cnn import unmirror_box_units
from flmlib.losses import build_loss
from flmlib.metrics import nme_interocular
from flmlib.models import build_from_blob, read_model_file
from flmlib.paths import project_path
from flmlib.train import load_training_split, read_checkpoint, set_threads

N_POINTS = 68
#: Draws of the alignment jitter per validation face (fixed seed): the second pass sees faces aligned by a first pass.
JITTER_DRAWS = 4
JITTER_SEED = 123


def load_teachers(paths: Sequence[str | Path]) -> tuple[list[torch.nn.Module], dict]:
    """The second networks of ``paths`` (two-pass model files sharing one first pass) in eval mode, and the first
    file's blob (its first pass and config are the student's).

    Raises:
        ValueError: no path, a file that is not a two-pass model, or teachers with different first passes or inputs.
    """
    if not paths:
        raise ValueError("no teacher: give at least one two-pass model file")
    blobs = [read_model_file(project_path(p)) for p in paths]
    for path, blob in zip(paths, blobs):
        if "first_pass" not in blob:
            raise ValueError(f"{path}: not a two-pass model file (no first_pass): a teacher must be one")
    first = blobs[0]
    for path, blob in zip(paths[1:], blobs[1:]):
        same_first = all(torch.equal(blob["first_pass"]["state_dict"][k], v)
                         for k, v in first["first_pass"]["state_dict"].items())
        if not same_first:
            raise ValueError(f"{path}: its first pass differs from {paths[0]}'s; the student keeps one first pass")
        for key in ("model", "input_size", "crop_size", "context_factor"):
            if blob["config"].get(key) != first["config"].get(key):
                raise ValueError(f"{path}: second network {key}={blob['config'].get(key)!r}, but {paths[0]} has "
                                 f"{first['config'].get(key)!r}")
    teachers = [build_from_blob(blob, str(path))[0].eval() for path, blob in zip(paths, blobs)]
    return teachers, first


@torch.no_grad()
def flip_averaged(models: Sequence[torch.nn.Module], images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """``(N, 3, s, s)`` float 0..255 -> ``(N, 68, 2)`` box units: the mean over ``models`` of each one's points, with
    the flip test (the mirrored input's points renumbered and reflected back, then averaged with the plain ones)."""
    total = torch.zeros(len(images), N_POINTS, 2)
    for model in models:
        model.eval()
        plain = model(images).reshape(-1, N_POINTS, 2).float()
        if flip:
            mirrored = unmirror_box_units(model(images.flip(3)).reshape(-1, N_POINTS, 2).float().numpy())
            plain = (plain + torch.from_numpy(mirrored)) / 2
        total += plain
    return total / len(models)


def validation_sets(split, augmentation: AugmentConfig, out_size: int) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """``plain``: the central box of every validation face; ``jitter``: :data:`JITTER_DRAWS` draws per face of the
    teacher's shift, scale and rotation (no flip, no colour change), as a first pass's alignment error would move
    it. Each is ``(images (M, 3, s, s) float, points (M, 68, 2) box units)``."""
    images, points = augment(split.crops, split.points, None, out_size=out_size, context_factor=split.context_factor)
    sets = {"plain": (images, points.reshape(-1, N_POINTS, 2).numpy())}
    jitter = AugmentConfig(flip=0.0, shift=augmentation.shift, scale=augmentation.scale, rotate=augmentation.rotate,
                           brightness=0.0, contrast=0.0)
    generator = torch.Generator().manual_seed(JITTER_SEED)
    draws = [augment(split.crops, split.points, jitter, generator, out_size, split.context_factor)
             for _ in range(JITTER_DRAWS)]
    sets["jitter"] = (torch.cat([d[0] for d in draws]),
                      torch.cat([d[1] for d in draws]).reshape(-1, N_POINTS, 2).numpy())
    return sets


def validation_nme(models: Sequence[torch.nn.Module], sets: dict, flip: bool, batch: int = 256) -> dict[str, float]:
    """Mean inter-ocular NME of ``models`` (flip-averaged with ``flip``) on each validation set (box units in, a
    ratio out, so the box size cancels)."""
    out = {}
    for name, (images, points) in sets.items():
        pred = torch.cat([flip_averaged(models, images[i : i + batch], flip) for i in range(0, len(images), batch)])
        out[name] = float(nme_interocular(pred.numpy(), points).mean())
    return out


def fingerprint(args: dict, paths: Sequence[Path]) -> str:
    """What a checkpoint belongs to: the run's settings and the teachers' and data files' sizes and times."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return hashlib.sha256(json.dumps([args, stats], sort_keys=True, default=str).encode()).hexdigest()[:16]


def distil(teacher_paths: Sequence[str | Path], data_dir: str | Path, out: str | Path, epochs: int = 40,
           lr: float = 1e-3, batch_size: int = 64, seed: int = 0, threads: int = 0, progress: bool = True,
           on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train the student (module docstring) and write the two-pass model file ``out``; returns the run's summary
    (settings, minutes, per-epoch history, validation NME before and after). ``on_epoch_end(epoch)`` is called after
    each epoch's checkpoint is written (epochs count from 1)."""
    from tqdm import tqdm

    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size}, lr={lr}: need positive values")
    set_threads(threads)
    teachers, blob = load_teachers(teacher_paths)
    config = blob["config"]
    data_dir, out = project_path(data_dir), project_path(out)
    train_path, val_path = data_dir / "train.npz", data_dir / "val.npz"
    train_split, val_split = load_training_split(train_path), load_training_split(val_path)
    if train_split.align_mean is None:
        raise ValueError(f"{train_path}: not aligned crops (training_crops --aligned); the second pass trains on them")
    if (train_split.crop_size, train_split.context_factor) != (config["crop_size"], config["context_factor"]):
        raise ValueError(f"{data_dir}: crops of {train_split.crop_size} px at context {train_split.context_factor}, "
                         f"but the teachers trained on {config['crop_size']} px at {config['context_factor']}")
    trained = config["train"]
    augmentation = AugmentConfig(**trained["augmentation"])
    loss_fn = build_loss(trained["loss"], **trained.get("loss_params", {}))
    out_size = int(config["input_size"])
    settings = dict(teachers=[str(p) for p in teacher_paths], data=str(data_dir), epochs=epochs, lr=lr,
                    batch_size=batch_size, seed=seed)
    key = fingerprint(settings, [project_path(p) for p in teacher_paths] + [train_path, val_path])
    if out.is_file():  # a finished run is not repeated (checked before any validation or training work)
        done = read_model_file(out)["config"].get("distilled", {})
        if done.get("fingerprint") == key:
            print(f"{out}: already distilled with these settings and files; not trained again", file=sys.stderr)
            return {k: v for k, v in done.items() if k not in ("about", "fingerprint")}
    sets = validation_sets(val_split, augmentation, out_size)

    student = copy.deepcopy(teachers[0]).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=float(trained.get("weight_decay", 0.0)))
    steps = max(1, len(train_split) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    checkpoint = out.with_name(out.stem + ".distil-checkpoint.pt")
    start, history = 0, []
    state = read_checkpoint(checkpoint) if checkpoint.is_file() else None  # None: unreadable, said on stderr
    if state is not None:
        if state["fingerprint"] == key:
            student.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            start, history = int(state["epoch"]), list(state["history"])
            print(f"resuming {checkpoint} after epoch {start} of {epochs}", file=sys.stderr)
    before = {"teachers_flip": validation_nme(teachers, sets, flip=True),
              "first_teacher": validation_nme(teachers[:1], sets, flip=False),
              "first_teacher_flip": validation_nme(teachers[:1], sets, flip=True)}
    bar = tqdm(range(start, epochs), initial=start, total=epochs, desc="distil epochs", disable=not progress)
    for epoch in bar:
        started = time.perf_counter()
        order = torch.randperm(len(train_split), generator=generator)
        total = 0.0
        student.train()
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            images, _ = augment(train_split.crops[idx], train_split.points[idx], augmentation, generator, out_size,
                                train_split.context_factor)
            target = flip_averaged(teachers, images)
            loss = loss_fn(student(images), target.reshape(len(idx), -1), None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        history.append({"epoch": epoch + 1, "loss": total / steps, "seconds": time.perf_counter() - started})
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"fingerprint": key, "epoch": epoch + 1, "history": history, "model": student.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, checkpoint)
        bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    bar.close()
    after = {"student": validation_nme([student], sets, flip=False),
             "student_flip": validation_nme([student], sets, flip=True)}
    summary = {**settings, "minutes": sum(row["seconds"] for row in history) / 60, "history": history,
               "val_nme_interocular": {**before, **after}, "val_faces": len(val_split)}
    state = {k: v.detach().cpu() for k, v in student.eval().state_dict().items()}
    student_config = {**config, "distilled": {**summary, "fingerprint": key,
                                              "about": "trained to reproduce the teachers' flip-averaged points "
                                                       "(flmlib.distil); run it without the flip test"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save({"state_dict": state, "config": json.loads(json.dumps(student_config, default=str)),
                "first_pass": blob["first_pass"]}, tmp)
    os.replace(tmp, out)
    checkpoint.unlink(missing_ok=True)
    return summary


def score(model_path: str | Path, teacher_ids: Sequence[str], params_path: str | Path = "params.yaml",
          prepared_dir: str | Path = "prepared", predictions_dir: str | Path = "reports/predictions",
          test_sets: Sequence[str] | None = None) -> dict:
    """The student's two-pass method (no flip test) on each test set whose reference predictions exist: AUC@0.08 of
    ``rmse_box`` with its person-level bootstrap CI and the paired difference against the study's reference
    method, next to the reference and the ``teacher_ids`` (their committed predictions, where present)."""
    from flmlib.compare import (ALL, aligned_points, error_table, limit_split, load_predictions, load_split,
                                predict_test_set, predictions_path, study_metrics)
    from flmlib.config import load_config
    from flmlib.landmarkers.cnn import build
    from flmlib.landmarkers.base import MethodSpec

    study = load_config(project_path(params_path))
    landmarker = build(MethodSpec(id="distilled", kind="cnn"), model_path, flip_test=False)
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
                 prepared_dir: str | Path = "prepared", batch: int = 256, rounds: int = 7) -> dict:
    """ms per face, batched, of the distilled method (run as the teacher method's options say, without the flip
    test), the reference method and the teacher method (``teacher_id``, when it is a method of the study), timed in
    alternating rounds as the speed stage times them (:func:`flmlib.speed.time_rounds`), with the ratios to the
    reference from this run and the CPU they ran on."""
    from flmlib.bench import environment, load_faces
    from flmlib.config import load_config
    from flmlib.landmarkers.base import MethodSpec, build_method
    from flmlib.landmarkers.cnn import build
    from flmlib.report import cpu_label
    from flmlib.speed import images_per_pass, runtime_of, time_rounds

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
    landmarkers["distilled"] = build(MethodSpec(id="distilled", kind="cnn"), model_path, **options)
    calls = {m: {"batched": lambda lm=lm: lm.predict_batch(batch_images, batch_boxes)} for m, lm in landmarkers.items()}
    seconds = time_rounds(calls, rounds)
    ms = {m: 1000 * s["batched"] / batch for m, s in seconds.items()}
    env = environment()
    return {"cpu": cpu_label(env), "environment": env, "batch": batch, "rounds": rounds,
            "ms_per_face_batched": {m: round(v, 4) for m, v in ms.items()},
            "ratio_to_reference": {m: round(ms[study.reference] / v, 2) for m, v in ms.items()},
            "runtime": {m: runtime_of(lm) for m, lm in landmarkers.items()},
            "images_per_pass": {m: images_per_pass(lm) for m, lm in landmarkers.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", nargs="+", required=True, help="two-pass model files sharing one first pass")
    parser.add_argument("--data", required=True, help="aligned training crops: a folder with train.npz and val.npz")
    parser.add_argument("--out", required=True, help="the distilled two-pass model file to write")
    parser.add_argument("--report", help="JSON report to write (default: next to --out)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    parser.add_argument("--test-sets", nargs="*", help="test sets to score (default: every one of params.yaml)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rounds", type=int, default=7,
                        help="alternating timing rounds against the reference and the first teacher (0: no timing)")
    args = parser.parse_args(argv)
    try:
        summary = distil(args.teachers, args.data, args.out, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=args.seed, threads=args.threads)
        teacher_ids = [Path(p).stem for p in args.teachers]
        summary["test"] = score(args.out, teacher_ids, args.params, test_sets=args.test_sets)
        if args.rounds > 0:
            summary["speed"] = time_against(args.out, teacher_ids[0], args.params, rounds=args.rounds)
    except (FileNotFoundError, ValueError, KeyError, BenchError) as exc:
        sys.exit(f"error: {exc}")
    report = project_path(args.report) if args.report else project_path(args.out).with_suffix(".json")
    report.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in summary.items() if k != "history"} | {"history": summary["history"]}
    report.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("val_nme_interocular", "test", "speed") if k in summary}, indent=1))
    print(f"wrote {args.out} and {report}")


if __name__ == "__main__":
    main()
