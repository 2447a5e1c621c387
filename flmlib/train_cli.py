"""Train one model from the command line, alone or data-parallel under ``torchrun``.

The pipeline trains through ``notebooks/02-train.ipynb``; this entry point runs the same :func:`flmlib.train.train`
without a notebook, which is what ``torchrun`` needs to start several processes::

    python -m flmlib.train_cli --params params.yaml --model onet --out models/onet.pt
    torchrun --nproc_per_node 2 -m flmlib.train_cli --params params.yaml --model onet --out models/onet.pt
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m flmlib.train_cli --params params.yaml --model resnet50_wflw --out models/resnet50_wflw.pt

``--set key=value`` overrides a field of :class:`flmlib.train.TrainConfig` (``--set epochs=2 --set augment=false``).
Without ``--params`` the run starts from TrainConfig's defaults. ``batch_size`` is the global batch: each of the N
processes takes ``batch_size / N`` faces per step (see :mod:`flmlib.distributed`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from flmlib import train as T


def _override(config: T.TrainConfig, items: list[str]) -> T.TrainConfig:
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in T.TrainConfig.__dataclass_fields__:
            raise SystemExit(f"--set {item!r}: expected key=value with key one of "
                             f"{sorted(T.TrainConfig.__dataclass_fields__)}")
        changes[key] = yaml.safe_load(value)
    return config.replace(**changes) if changes else config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, help="params.yaml: take the run from models.<--model>")
    parser.add_argument("--model", help="a models: entry of --params")
    parser.add_argument("--train", type=Path, help="training split .npz (default: <train_data>/train.npz)")
    parser.add_argument("--val", type=Path, help="validation split .npz (default: <train_data>/val.npz)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the trained model (.pt)")
    parser.add_argument("--checkpoint-dir", type=Path, help="resumable state (default: checkpoints/<out's name>)")
    parser.add_argument("--live-dir", type=Path, help="DVCLive folder for the curves (default: none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field")
    args = parser.parse_args(argv)

    if args.params is not None:
        from flmlib.config import load_config

        if not args.model:
            parser.error("--params needs --model")
        study = load_config(args.params)
        config = T.config_for_model(study, args.model)
        data = Path(study.models[args.model].train_data)
        args.train = args.train or data / "train.npz"
        args.val = args.val or data / "val.npz"
    else:
        config = T.TrainConfig()
        if args.train is None or args.val is None:
            parser.error("without --params, give --train and --val")
    try:
        config = _override(config, args.set)
        result = T.train(config, args.train, args.val, args.out,
                         args.checkpoint_dir or Path("checkpoints") / args.out.stem, args.live_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"flmlib.train_cli: {exc}", file=sys.stderr)
        return 2
    final = result.final.get("val/nme_interocular")
    if final is not None and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 speaks for the run
        print(f"{args.out}: {len(result.history)} epochs, validation inter-ocular NME {final:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
