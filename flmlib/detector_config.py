"""The face detectors' configuration: ``detectors.yaml`` read into typed, validated sections.

    >>> from flmlib.detector_config import load_detector_config
    >>> config = load_detector_config("detectors.yaml")
    >>> list(config.detectors), config.detector_study.default
    (['hog1', 'hog0', 'blazeface', 'blazeface_full', 'mtcnn'], 'hog1')

Sections:

* ``detectors``: id -> :class:`Detector` (``kind`` and that kind's options, see :mod:`flmlib.face_detectors`);
* ``detector_study``: the ``detectors`` stage (:class:`DetectorStudy`).

The file sits beside ``params.yaml`` rather than inside it: every stage parses ``params.yaml`` through
:mod:`flmlib.config`, so a section added there changes a dependency of the whole pipeline. Given the study's
configuration, :func:`load_detector_config` also checks the names it shares with ``params.yaml`` (the landmarker,
the test sets). A bad value raises :class:`flmlib.config.ConfigError` naming the file and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flmlib.config import ConfigError
from flmlib.paths import project_path

DEFAULT_PATH = "detectors.yaml"


class Detector(BaseModel):
    """A face detector: ``kind`` and that kind's options (``dlib_hog``: ``upsample``; ``mediapipe_blazeface``:
    ``model`` short/full, ``min_confidence``; ``mtcnn``: ``min_face``, ``thresholds``, ``factor``)."""
    model_config = ConfigDict(extra="allow", frozen=True)
    kind: Literal["dlib_hog", "mediapipe_blazeface", "mtcnn"]
    description: str = ""

    @property
    def options(self) -> dict[str, Any]:
        """The kind's options: every key but ``kind`` and ``description``."""
        return dict(self.model_extra or {})


class DetectorStudy(BaseModel):
    """The ``detectors`` stage: every detector on every annotated face of ``test_sets``, ``landmarker`` (a method
    of params.yaml) in its boxes; ``calibration_faces`` training faces fit the non-HOG detectors' box calibrations.
    ``default`` is the detector of the study's ``boxes: detector`` test sets and of ``flm predict``."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    default: str = "hog1"
    landmarker: str = "onet"
    calibration_faces: int = Field(600, ge=5)
    test_sets: list[str] = ["test_300w_common", "test_aflw2000"]
    limit: int = Field(0, ge=0)           # faces per test set, 0 = all (smoke runs)
    seed: int = 0


class DetectorConfig(BaseModel):
    """The whole of ``detectors.yaml``."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    detectors: dict[str, Detector]
    detector_study: DetectorStudy = DetectorStudy()

    @model_validator(mode="after")
    def _check(self):
        if not self.detectors:
            raise ValueError("detectors: at least one detector is needed")
        if self.detector_study.default not in self.detectors:
            raise ValueError(f"detector_study.default: {self.detector_study.default!r} is not one of detectors "
                             f"{list(self.detectors)}")
        return self


def parse_detector_config(raw: dict, source: str = "detectors.yaml", study=None) -> DetectorConfig:
    """Validate an already-read mapping (and, with ``study``, its names against params.yaml)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        config = DetectorConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                 + (f" (got {e.get('input')!r})" if e["loc"] and e["type"] != "missing" else "") for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    if study is not None:
        ds = config.detector_study
        if ds.landmarker not in study.method_ids:
            raise ConfigError(f"{source}: detector_study.landmarker: {ds.landmarker!r} is not one of the methods of "
                              f"params.yaml {study.method_ids}")
        unknown = [t for t in ds.test_sets if t not in study.test_sets]
        if unknown:
            raise ConfigError(f"{source}: detector_study.test_sets: {unknown} are not test sets of params.yaml "
                              f"{list(study.test_sets)}")
    return config


def load_detector_config(path: str | Path = DEFAULT_PATH, study=None) -> DetectorConfig:
    """Read and validate ``detectors.yaml`` (relative paths: from the project root)."""
    path = project_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: detector configuration not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_detector_config(raw, str(path), study)
