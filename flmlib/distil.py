"""Distil a two-pass model's flip test into a second network that runs once per face (the ``distil@<id>`` stages).

A two-pass method's second network with the flip test runs twice per face (the aligned face and its mirror image) and
averages the answers; that costs about as much as the rest of the method together. A student network learns the
averaged answer: it starts as the first teacher's second network (or a narrower O-Net cut from it) and is trained, on
the same augmented aligned training crops, to reproduce the teachers' flip-averaged points (the mean over every
teacher: several seeds of one entry make a stronger target). Ground truth does not enter the loss.

    python -m flmlib.distil --config distil.yaml --entry onet_distilled \\
        --out models/distilled/onet_distilled.pt --report reports/distil/onet_distilled.json

(or ``--teachers <two-pass model files> --data crops/aligned96`` instead of an entry). It writes a two-pass model file
(the first teacher's first pass, the student as second network: the ``methods:`` entry of params.yaml with the same
id runs it without the flip test, and so can ``flm predict --checkpoint`` and :func:`flmlib.landmarkers.cnn.build`)
and a JSON report: the settings, the per-epoch loss, and validation NME (inter-ocular, on the plain aligned crops and
on crops jittered like the first pass's alignment error) of the teachers and the student, with and without the flip
test. A run killed halfway resumes from the checkpoint next to ``--out``; a finished one is not repeated. It trains
on a GPU when there is one (``--device auto``); the stage also writes its wall time (``--timing``).
:mod:`flmlib.distil_experiment` scores and times students outside the pipeline (other seeds, widths).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from flmlib.augment import AugmentConfig, augment, hflip
from flmlib.device import resolve_device
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
    """``(N, 3, s, s)`` float 0..255 -> ``(N, 68, 2)`` box units on the images' device: the mean over ``models`` (on
    that device) of each one's points, with the flip test (the mirrored input's points renumbered and reflected back,
    then averaged with the plain ones)."""
    total = torch.zeros(len(images), N_POINTS, 2, device=images.device)
    for model in models:
        model.eval()
        plain = model(images).reshape(-1, N_POINTS, 2).float()
        if flip:
            # the mirrored input's points back on the unmirrored face: hflip's renumbering and x -> 1 - x is its own
            # inverse (as flmlib.landmarkers.cnn.unmirror_box_units, in torch, so the target stays on the device)
            _, mirrored = hflip(images[:0], model(images.flip(3)).reshape(-1, N_POINTS, 2).float())
            plain = (plain + mirrored) / 2
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
    ratio out, so the box size cancels), run on the models' device in batches of ``batch``."""
    device = next(models[0].parameters()).device
    out = {}
    for name, (images, points) in sets.items():
        pred = torch.cat([flip_averaged(models, images[i : i + batch].to(device), flip).cpu()
                          for i in range(0, len(images), batch)])
        out[name] = float(nme_interocular(pred.numpy(), points).mean())
    return out


def narrowed_onet(model: torch.nn.Module, width: float) -> torch.nn.Module:
    """A narrower copy of an O-Net (:class:`flmlib.nets.onet.ONet`, any width): ``width`` times MTCNN's channels in
    every layer, each layer keeping the output channels (conv filters, fc units) of largest L1 weight norm of
    ``model`` (Li et al. 2017, "Pruning filters for efficient ConvNets"), in their order, with the weights that join
    kept channels. A starting point for a student, not a finished network."""
    from flmlib.nets.onet import ONet

    if not isinstance(model, ONet):
        raise ValueError(f"a narrower student needs an O-Net teacher, not {type(model).__name__}")
    narrow = ONet(pixel_mean=model.pixel_mean, pixel_scale=model.pixel_scale, n_points=model.n_points, width=width,
                  input_size=model.input_size)
    convs = [i for i, layer in enumerate(model.features) if isinstance(layer, torch.nn.Conv2d)]
    keep_in = torch.arange(model.features[convs[0]].in_channels)
    with torch.no_grad():
        for i in convs:
            wide, small = model.features[i], narrow.features[i]
            norms = wide.weight[:, keep_in].abs().sum(dim=(1, 2, 3))
            keep = norms.topk(small.out_channels).indices.sort().values
            small.weight.copy_(wide.weight[keep][:, keep_in])
            small.bias.copy_(wide.bias[keep])
            narrow.features[i + 1].weight.copy_(model.features[i + 1].weight[keep])  # the PReLU after it
            keep_in = keep
        side = model.fc[1].in_features // model.features[convs[-1]].out_channels
        features = (keep_in[:, None] * side + torch.arange(side)[None]).flatten()  # flatten() is channel-major
        wide_fc, small_fc = model.fc[1], narrow.fc[1]
        units = wide_fc.weight[:, features].abs().sum(dim=1).topk(small_fc.out_features).indices.sort().values
        small_fc.weight.copy_(wide_fc.weight[units][:, features])
        small_fc.bias.copy_(wide_fc.bias[units])
        narrow.fc[3].weight.copy_(model.fc[3].weight[units])
        narrow.head.weight.copy_(model.head.weight[:, units])
        narrow.head.bias.copy_(model.head.bias)
    return narrow


def fingerprint(args: dict, paths: Sequence[Path]) -> str:
    """What a checkpoint belongs to: the run's settings and the teachers' and data files' sizes and times."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return hashlib.sha256(json.dumps([args, stats], sort_keys=True, default=str).encode()).hexdigest()[:16]


def distil(teacher_paths: Sequence[str | Path], data_dir: str | Path, out: str | Path, epochs: int = 40,
           lr: float = 1e-3, batch_size: int = 64, seed: int = 0, threads: int = 0, student_width: float = 1.0,
           device: str = "auto", progress: bool = True, on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train the student (module docstring) and write the two-pass model file ``out``; returns the run's summary
    (settings, device, minutes, per-epoch history, validation NME before and after). ``student_width`` 1 starts the
    student as the first teacher's second network; below 1, as an O-Net that much narrower cut from it
    (:func:`narrowed_onet`). ``device``: ``auto`` (a GPU when there is one), ``cpu`` or ``cuda``; the random draws stay
    on the CPU, so a run on the CPU is repeatable bit for bit, and a GPU run differs from it only by its arithmetic.
    ``on_epoch_end(epoch)`` is called after each epoch's checkpoint is written (epochs count from 1)."""
    from tqdm import tqdm

    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size}, lr={lr}: need positive values")
    set_threads(threads)
    device = resolve_device(device)
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
    # (student_width only when it is not 1, so that runs from before it existed keep their fingerprint)
    width = {"student_width": student_width} if student_width != 1 else {}
    settings = dict(teachers=[str(p) for p in teacher_paths], data=str(data_dir), epochs=epochs, lr=lr,
                    batch_size=batch_size, seed=seed, **width)
    key = fingerprint(settings, [project_path(p) for p in teacher_paths] + [train_path, val_path])
    if out.is_file():  # a finished run is not repeated (checked before any validation or training work)
        done = read_model_file(out)["config"].get("distilled", {})
        if done.get("fingerprint") == key:
            print(f"{out}: already distilled with these settings and files; not trained again", file=sys.stderr)
            return {k: v for k, v in done.items() if k not in ("about", "fingerprint")}
    sets = validation_sets(val_split, augmentation, out_size)

    if student_width == 1:
        student = copy.deepcopy(teachers[0])
    else:
        student = narrowed_onet(teachers[0], student_width)
        config = {**config, "model_kwargs": {**config.get("model_kwargs", {}), "width": student_width}}
    teachers = [teacher.to(device) for teacher in teachers]
    student = student.to(device).train()
    crops, points = train_split.crops.to(device), train_split.points.to(device)
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
            idx = order[step * batch_size : (step + 1) * batch_size].to(device)
            images, _ = augment(crops[idx], points[idx], augmentation, generator, out_size, train_split.context_factor)
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
    minutes = sum(row["seconds"] for row in history) / 60
    summary = {**settings, "device": str(device), "minutes": minutes, "history": history,
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


#: The settings of a ``distil.yaml`` entry, with :func:`distil`'s defaults (read from its signature).
ENTRY_DEFAULTS = {name: inspect.signature(distil).parameters[name].default
                  for name in ("epochs", "lr", "batch_size", "seed", "student_width")}


def read_entry(config_path: str | Path, entry_id: str, params_path: str | Path = "params.yaml") -> dict:
    """The :func:`distil` arguments of entry ``entry_id`` of a ``distil.yaml`` (``teachers``: two_pass ids of
    ``params_path``, as their model files; ``data``; and :data:`ENTRY_DEFAULTS`' keys). ``train.epochs`` > 0 in
    ``params_path`` replaces the entry's epochs, as it does every recipe's (smoke runs).

    Raises:
        ValueError: naming the file and the key: an unknown entry or key, or a teacher that is not a two_pass entry.
    """
    import yaml

    from flmlib.config import load_config

    path = project_path(config_path)
    entries = (yaml.safe_load(path.read_text()) or {}).get("distil") or {}
    if entry_id not in entries:
        raise ValueError(f"{path}: no distil entry {entry_id!r} (it has {sorted(entries)})")
    entry = dict(entries[entry_id])
    unknown = sorted(set(entry) - {"teachers", "data", *ENTRY_DEFAULTS})
    if unknown:
        raise ValueError(f"{path}: distil.{entry_id}: unknown keys {unknown} (it takes teachers, data and "
                         f"{sorted(ENTRY_DEFAULTS)})")
    missing = [key for key in ("teachers", "data") if not entry.get(key)]
    if missing:
        raise ValueError(f"{path}: distil.{entry_id} lacks {missing} (it needs teachers and data)")
    study = load_config(project_path(params_path))
    for teacher in entry["teachers"]:
        if teacher not in study.two_pass:
            raise ValueError(f"{path}: distil.{entry_id}.teachers: {teacher!r} is not a two_pass entry of "
                             f"{params_path} ({sorted(study.two_pass)})")
    settings = {**ENTRY_DEFAULTS, **{k: v for k, v in entry.items() if k in ENTRY_DEFAULTS}}
    if study.train.epochs > 0:
        settings["epochs"] = study.train.epochs
    return {"teacher_paths": [study.model_path(t) for t in entry["teachers"]], "data_dir": entry["data"], **settings}


def teacher_ids(settings: dict) -> list[str]:
    """The teachers' method ids of :func:`settings_from`'s (or :func:`read_entry`'s) settings: their model files'
    names without the suffix (the study writes a two-pass entry's model to ``models/<id>.pt``)."""
    return [Path(p).stem for p in settings["teacher_paths"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say what to distil: a ``distil.yaml`` entry, or teachers and data given here."""
    parser.add_argument("--config", help="a distil.yaml: train its --entry (settings from the file)")
    parser.add_argument("--entry", help="the entry of --config to train")
    parser.add_argument("--params", default="params.yaml", help="the study's params file (teachers, train.epochs)")
    parser.add_argument("--teachers", nargs="+", help="two-pass model files sharing one first pass (without --config)")
    parser.add_argument("--data", help="aligned training crops: a folder with train.npz and val.npz (without --config)")
    parser.add_argument("--out", required=True, help="the distilled two-pass model file to write")
    parser.add_argument("--report", help="JSON report to write (default: next to --out)")
    for flag, kind, text in (("--epochs", int, "epochs"), ("--lr", float, "peak learning rate (one-cycle)"),
                             ("--batch-size", int, "faces per step"), ("--seed", int, "seed"),
                             ("--student-width", float, "student channels as a fraction of O-Net's (1: the first "
                                                        "teacher's second network)")):
        default = ENTRY_DEFAULTS[flag[2:].replace("-", "_")]
        parser.add_argument(flag, type=kind, help=f"{text} (default: the entry's, else {default})")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda "
                                                         "(default: %(default)s)")


def settings_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """:func:`distil`'s keyword arguments from :func:`add_arguments`' options (flags given override the entry)."""
    if args.config or args.entry:
        if not (args.config and args.entry) or args.teachers or args.data:
            parser.error("give --config with --entry, or --teachers with --data")
        settings = read_entry(args.config, args.entry, args.params)
    elif args.teachers and args.data:
        settings = {"teacher_paths": args.teachers, "data_dir": args.data, **ENTRY_DEFAULTS}
    else:
        parser.error("give --config with --entry, or --teachers with --data")
    flags = {k: getattr(args, k) for k in ENTRY_DEFAULTS if getattr(args, k) is not None}
    return {**settings, **flags, "out": args.out, "threads": args.threads, "device": args.device}


def write_report(summary: dict, path: str | Path) -> Path:
    """The run's summary as JSON at ``path``, its per-epoch history last."""
    path = project_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in summary.items() if k != "history"} | {"history": summary["history"]}
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def write_timing(summary: dict, seconds: float, path: str | Path, stage: str) -> Path:
    """The stage's wall time ``seconds`` with what it trained (the report's stage-time line reads ``seconds``,
    ``recipe``, ``epochs`` and ``val_nme_interocular``: here the student's, without the flip test, on the plain
    aligned validation crops)."""
    path = project_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage, "seconds": round(seconds, 1), "recipe": "distil", "epochs": summary["epochs"],
              "train_minutes": round(summary["minutes"], 2), "device": summary.get("device"),
              "val_nme_interocular": summary["val_nme_interocular"]["student"]["plain"]}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--timing", help="JSON file for the run's wall time (the stage's reports/timings/ file)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = distil(**settings_from(args, parser))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        sys.exit(f"error: {exc}")
    report = write_report(summary, args.report or project_path(args.out).with_suffix(".json"))
    if args.timing:
        write_timing(summary, time.perf_counter() - started, args.timing,
                     f"distil@{args.entry}" if args.entry else "distil")
    print(json.dumps(summary["val_nme_interocular"], indent=1))
    print(f"wrote {args.out} and {report}")


if __name__ == "__main__":
    main()
