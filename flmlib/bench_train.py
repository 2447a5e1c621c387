"""Training-throughput benchmark (augmentation on vs model only), and synthetic prepared splits.

Run ``python -m flmlib.bench_train`` (options: ``--batch-size``, ``--threads``, ``--seconds``, ``--repeats``, ``--out``). Both
variants run in the same process on synthetic tensors of the same batch size, alternating, so a machine shared with
other jobs slows both alike:

* ``model_only``: a training step (forward, loss, backward, optimizer) on ready ``(B, 3, 48, 48)`` float inputs;
* ``augmented``: the same step preceded by the full augmentation of ``(B, 3, 96, 96)`` uint8 context crops
  (gather from an in-memory set, affine warp, photometric jitter, landmark transform), as :func:`flmlib.train.train`
  does.

The report (printed and written as JSON, default ``reports/train_bench.json``) gives the median samples/s of each
and their ratio; the target is ``augmented / model_only >= 0.9``.

:func:`synthetic_arrays` / :func:`write_synthetic_split` make small fake prepared splits in the format of
``prepared/*.npz`` (faces are drawn as dots at their landmarks so a model has something to learn); tests and
notebook smoke runs use them when real data are not wanted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from flmlib.augment import AugmentConfig, augment
from flmlib.crops import box_units_to_image
from flmlib.losses import build_loss
from flmlib.models import build_model
from flmlib.paths import project_path
from flmlib.train import set_threads


def synthetic_arrays(n: int, seed: int = 0, crop_size: int = 96, context_factor: float = 2.0,
                     sources: tuple[str, ...] = ("300w/synthetic", "youtube-faces/synthetic")) -> dict[str, np.ndarray]:
    """A fake prepared split of ``n`` faces with every array of ``prepared/*.npz``.

    Each face is a random template shape (box units), moved by a small random similarity, drawn as bright dots on a
    noisy background in its context crop. Boxes are ``(0, 0, w, w)`` image pixels with ``w`` in 60..140, so
    ``landmarks_image`` is the crop landmarks mapped into that box. ``face_id`` alternates over ``sources``.
    """
    rng = np.random.default_rng(seed)
    template = np.random.default_rng(12345).uniform(0.15, 0.85, (68, 2))
    template[36], template[45] = (0.3, 0.4), (0.7, 0.4)
    angle = rng.uniform(-0.2, 0.2, n)
    scale = rng.uniform(0.9, 1.1, n)
    shift = rng.uniform(-0.05, 0.05, (n, 2))
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    units = (template - 0.5) @ rot.transpose(0, 2, 1) * scale[:, None, None] + 0.5 + shift[:, None]
    inner = crop_size / context_factor
    edge = (crop_size - inner) / 2 - 0.5
    points = (units * inner + edge).astype(np.float32)
    crops = rng.integers(40, 90, (n, crop_size, crop_size, 3)).astype(np.uint8)
    ij = np.clip(np.round(points).astype(int), 1, crop_size - 2)
    for k in range(n):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                crops[k, ij[k, :, 1] + dy, ij[k, :, 0] + dx] = (230, 200, 180)
    width = rng.uniform(60, 140, n)
    boxes = np.stack([np.zeros(n), np.zeros(n), width, width], -1).astype(np.float32)
    return {
        "crops": crops,
        "landmarks": points,
        "landmarks_image": box_units_to_image(units, boxes).astype(np.float32),
        "boxes": boxes,
        "face_id": np.array([f"{sources[k % len(sources)]}/face_{seed}_{k}" for k in range(n)]),
        "detected": np.ones(n, bool),
        "crop_size": np.int64(crop_size),
        "context_factor": np.float64(context_factor),
    }


def write_synthetic_split(path: str | Path, n: int, seed: int = 0, **kwargs) -> Path:
    """Write :func:`synthetic_arrays` as an ``.npz`` at ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **synthetic_arrays(n, seed, **kwargs))
    return path


def benchmark(batch_size: int = 256, seconds: float = 5.0, repeats: int = 5, threads: int = 0, pool: int = 2048,
              seed: int = 0) -> dict:
    """Median training throughput (samples/s) with and without augmentation, and their ratio (see module doc)."""
    threads = set_threads(threads)
    torch.manual_seed(seed)
    data = synthetic_arrays(pool, seed)
    crops = torch.from_numpy(np.ascontiguousarray(data["crops"].transpose(0, 3, 1, 2)))
    points = torch.from_numpy(data["landmarks"])
    aug_config, gen = AugmentConfig(), torch.Generator().manual_seed(seed)
    loss_fn = build_loss("mse")
    ready = torch.rand(batch_size, 3, 48, 48) * 255
    ready_targets = torch.rand(batch_size, 136)

    def run(augmented: bool) -> float:
        model = build_model("onet")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            if augmented:
                idx = torch.randint(pool, (batch_size,), generator=gen)
                images, targets = augment(crops[idx], points[idx], aug_config, gen)
                targets = targets.reshape(batch_size, -1)
            else:
                images, targets = ready, ready_targets
            loss = loss_fn(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step(), step()  # warm-up: allocator and kernel selection
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step()
            done += batch_size
        return done / (time.perf_counter() - start)

    model_only, augmented = [], []
    for _ in range(repeats):
        model_only.append(run(False))
        augmented.append(run(True))
    ratios = [a / m for a, m in zip(augmented, model_only)]
    # Augmentation alone, for the record: how much of a step it is.
    idx = torch.randint(pool, (batch_size,), generator=gen)
    start, k = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        augment(crops[idx], points[idx], aug_config, gen)
        k += 1
    return {
        "batch_size": batch_size,
        "threads": threads,
        "seconds_per_measurement": seconds,
        "repeats": repeats,
        "model_only_samples_per_s": model_only,
        "augmented_samples_per_s": augmented,
        "ratios": ratios,
        "median_model_only_samples_per_s": statistics.median(model_only),
        "median_augmented_samples_per_s": statistics.median(augmented),
        "median_ratio": statistics.median(ratios),
        "augmentation_only_samples_per_s": k * batch_size / (time.perf_counter() - start),
        "target_ratio": 0.9,
        "torch": torch.__version__,
        "note": "synthetic tensors; CPU; a shared machine slows both variants, which alternate in one process",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timed measurement")
    parser.add_argument("--repeats", type=int, default=5, help="alternating measurements of each variant")
    parser.add_argument("--threads", type=int, default=0, help="0: all cores of this process")
    parser.add_argument("--out", default="reports/train_bench.json")
    args = parser.parse_args(argv)
    result = benchmark(args.batch_size, args.seconds, args.repeats, args.threads)
    out = project_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"batch {result['batch_size']}, {result['threads']} threads, {result['repeats']} x {args.seconds:g} s each:")
    print(f"  model only : {result['median_model_only_samples_per_s']:8.1f} samples/s (median)")
    print(f"  augmented  : {result['median_augmented_samples_per_s']:8.1f} samples/s (median)")
    print(f"  ratio      : {result['median_ratio']:.3f} (median of per-pair ratios; target >= 0.9)")
    print(f"  augmentation alone: {result['augmentation_only_samples_per_s']:.0f} samples/s")
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()
