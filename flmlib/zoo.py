"""The full zoo as an overlay of params.yaml: ``zoo.yaml`` holds every source's network at its own input size and
recipe; merged into params.yaml it is what ``make zoo`` runs (a DVC experiment).

    python -m flmlib.zoo zoo.yaml [--params params.yaml] [--check]

Merging: a mapping merges key by key, any other value replaces the one in params.yaml, ``null`` removes the key.
params.yaml keeps its comments and order (ruamel.yaml round trip). The merged configuration is validated
(:func:`flmlib.config.parse_config`) before anything is written, so a bad overlay never leaves a broken params.yaml.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Mapping

import yaml

from flmlib.config import ConfigError, Study, parse_config


def overlay(base: Mapping, changes: Mapping) -> dict:
    """``base`` with ``changes`` merged in (plain dicts; neither argument is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_in_place(node, changes: Mapping) -> None:
    """Merge ``changes`` into a ruamel round-trip mapping, keeping its comments and key order."""
    for key, value in changes.items():
        if value is None:
            if key in node:
                del node[key]
        elif isinstance(value, Mapping) and isinstance(node.get(key), Mapping):
            _merge_in_place(node[key], value)
        else:
            node[key] = copy.deepcopy(value)


def merged_study(params_path: str | Path, zoo_path: str | Path) -> Study:
    """The configuration params.yaml + zoo.yaml would give (``ConfigError`` naming the key if it is invalid)."""
    base = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    changes = yaml.safe_load(Path(zoo_path).read_text(encoding="utf-8")) or {}
    return parse_config(overlay(base, changes), f"{params_path} + {zoo_path}")


def apply(params_path: str | Path, zoo_path: str | Path) -> Study:
    """Merge ``zoo_path`` into ``params_path`` in place (validated first); returns the merged configuration."""
    from ruamel.yaml import YAML

    study = merged_study(params_path, zoo_path)
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    path = Path(params_path)
    with path.open(encoding="utf-8") as f:
        document = rt.load(f)
    _merge_in_place(document, yaml.safe_load(Path(zoo_path).read_text(encoding="utf-8")) or {})
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        rt.dump(document, f)
    tmp.replace(path)
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flmlib.zoo", description=__doc__.split("\n\n")[0])
    parser.add_argument("zoo", help="the overlay (zoo.yaml)")
    parser.add_argument("--params", default="params.yaml", help="params file to merge into (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only validate the merged configuration")
    args = parser.parse_args(argv)
    try:
        study = merged_study(args.params, args.zoo) if args.check else apply(args.params, args.zoo)
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    action = "valid" if args.check else f"merged into {args.params}"
    print(f"{args.zoo}: {action}; models: {', '.join(study.models)}; crops: {study.crops.sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
