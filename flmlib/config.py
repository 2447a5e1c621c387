"""The study's configuration: ``params.yaml`` read whole into typed, validated sections by one loader.

    >>> from flmlib.config import load_config
    >>> study = load_config("params.yaml")
    >>> study.prepare.upsample, list(study.test_sets), study.reference
    (1, ['test_300w_common', 'test_aflw2000', 'test_aflw2000_lmbox', 'test_youtube'], 'dlib')

Sections (one per stage kind, so each DVC stage names exactly the sections it reads):

* ``data``, ``prepare``: the raw data and the prepare stage (detection, matching, crops).
* ``test_sets``: id -> :class:`TestSet` (which faces, which boxes, how results are broken down, caveats).
* ``train``: the knobs every training run shares, and the named ``recipes`` (optimiser and schedule).
* ``models``: id -> :class:`Model`, the networks the study trains (one ``train@<id>`` stage each). Each is also a
  compared method with the same id (kind ``cnn``, one ``predict_model@<id>-<test set>`` stage each).
* ``two_pass``: id -> :class:`TwoPass`, two-pass landmarkers: a ``models`` entry as first pass and a second network
  trained on aligned crops (one ``train_two_pass@<id>`` and one ``predict_two_pass@<id>-<test set>`` stage each).
* ``methods``: id -> :class:`Method`, the compared landmarkers that come with their own weights (dlib, MediaPipe;
  one ``predict@<method>-<test set>`` stage each).
* ``reference``: the method every other is compared against (paired differences).
* ``compare``, ``report``: the evaluation and the report.

A bad value raises :class:`ConfigError` naming the file and the key (``params.yaml: prepare.upsample: ...``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flmlib.paths import PROJECT_ROOT

DEFAULT_PARAMS = PROJECT_ROOT / "params.yaml"
#: Data sources: 300-W (``.pts``), YouTube-Faces frames (CSV), AFLW2000-3D (CSV with yaw/pitch/roll).
SOURCES = ("300w", "youtube", "aflw2000")
#: A kind is a module of flmlib.landmarkers (``cnn``) or the dotted path of a module elsewhere (a plug-in package).
#: Ids that name the training files of the prepare stage; a test set with one would overwrite them.
RESERVED_TEST_SET_IDS = ("train", "val", "faces")
_KIND = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")


#: Point schemes a method can report in. ``ibug68``: the 68 iBUG points themselves; ``mapped``: points mapped from
#: another scheme (e.g. a 468-vertex mesh), so some rows follow another definition (the face oval is not iBUG's jaw).
POINT_SCHEMES = ("ibug68", "mapped")


@dataclass(frozen=True)
class MethodSpec:
    """A compared method, as ``params.yaml`` describes it (``methods.<id>``).

    Attributes:
        id: the method id (key of its predictions, metrics and figures).
        kind: the module that builds it with its ``build(spec, **options)``: a module of :mod:`flmlib.landmarkers`
            (``cnn``, ``dlib_predictor``, ``mediapipe_mesh``) or a dotted module path outside flmlib (a plug-in).
        points: :data:`POINT_SCHEMES` entry.
        needs_box: whether it places points inside a given face box (every method here does; the comparison gives
            every method the same box).
        trained_on: where its training data came from, in words (shown in the report).
        caveats: sentences the report prints next to this method's numbers.
        model: id of the study-trained model it runs (``models.<id>`` in params.yaml), if any.
        options: keyword arguments for the kind's ``build``.
    """

    id: str
    kind: str
    points: str = "ibug68"
    needs_box: bool = True
    trained_on: str = ""
    caveats: tuple[str, ...] = ()
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not _KIND.match(self.kind):
            raise ValueError(f"method {self.id!r}: kind={self.kind!r} must name a module (of flmlib.landmarkers, or a"
                             " dotted module path)")
        if self.points not in POINT_SCHEMES:
            raise ValueError(f"method {self.id!r}: points={self.points!r}; choose one of {POINT_SCHEMES}")

    @property
    def mapped(self) -> bool:
        """True when the points are mapped from another scheme (report rows are flagged 'mapped')."""
        return self.points == "mapped"


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise; sections are read-only once loaded.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Data(_Section):
    root: str = "data"
    seed: int = 0
    youtube_test_share: float = Field(0.2, gt=0, lt=1)
    val_share: float = Field(0.1, ge=0, lt=1)
    skip_bad_files: bool = False


class Prepare(_Section):
    upsample: int = Field(1, ge=0)
    iou_threshold: float = Field(0.3, gt=0, le=1)
    train_fallback_box: bool = True
    crop_size: int = Field(96, ge=8)
    context_factor: float = Field(2.0, ge=1)
    workers: int = Field(2, ge=0)
    limit: int = Field(0, ge=0)
    sheet_faces: int = Field(24, ge=0)


class TestSet(_Section):
    """One test set: faces of ``source`` held out from training (``subsets`` narrows 300-W to named subsets).

    ``boxes``: ``detector`` (faces the HOG detector found, with its box; misses are counted) or ``landmarks`` (every
    face, with a box derived from its annotated points by the prepare stage's fitted fallback model, so
    landmarking is compared apart from detection). ``breakdown``: rows per ``subset`` or per ``yaw`` bin besides the
    overall one; ``yaw_bins`` are the |yaw| edges in degrees.
    """

    source: Literal["300w", "youtube", "aflw2000"]
    subsets: tuple[str, ...] = ()
    boxes: Literal["detector", "landmarks"] = "detector"
    breakdown: Literal["none", "subset", "yaw"] = "none"
    yaw_bins: tuple[float, ...] = (30.0, 60.0)
    description: str = ""
    caveats: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self):
        if self.source == "300w" and not self.subsets:
            raise ValueError("a 300-W test set names its subsets (e.g. [helen/testset, lfpw/testset])")
        if list(self.yaw_bins) != sorted(set(self.yaw_bins)) or any(b <= 0 for b in self.yaw_bins):
            raise ValueError(f"yaw_bins {list(self.yaw_bins)} must be positive and increasing")
        return self


class Recipe(_Section):
    """How a model is optimised (see :class:`flmlib.train.TrainConfig` for the meaning of each key)."""

    epochs: int = Field(ge=1)
    optimizer: Literal["sgd", "adamw"]
    lr: float = Field(gt=0)
    schedule: Literal["step", "onecycle", "cosine", "plateau"]
    lr_steps: str = ""
    plateau_factor: float = Field(0.1, gt=0, lt=1)   # schedule plateau: lr x factor after patience epochs without
    plateau_patience: int = Field(5, ge=0)           #   a lower validation loss (PyTorch's ReduceLROnPlateau)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["mse", "wing", "smooth_l1"]


class Train(_Section):
    """Knobs every training run shares. ``epochs`` > 0 overrides every recipe's epochs (smoke runs)."""

    epochs: int = Field(0, ge=0)
    seed: int = 0
    device: str = "auto"
    threads: int = Field(1, ge=0)
    init_mean_shape: bool = True
    figure_faces: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    use_300w: bool = True
    use_youtube: bool = True
    wing_w: float = Field(0.1, gt=0)
    wing_epsilon: float = Field(0.02, gt=0)
    smooth_l1_beta: float = Field(0.02, gt=0)
    augment: bool = True
    aug_flip: float = Field(0.5, ge=0, le=1)
    aug_shift: float = Field(0.05, ge=0)
    aug_scale: float = Field(0.1, ge=0)
    aug_rotate: float = Field(15.0, ge=0)
    aug_brightness: float = Field(0.1, ge=0)
    aug_contrast: float = Field(0.2, ge=0)
    recipes: dict[str, Recipe]


class Crops(_Section):
    """Training crops at other sizes (``crops@<size>`` stages), cut from prepare's boxes for larger networks."""

    sizes: list[int] = []
    aligned_sizes: list[int] = []  # aligned crops for second passes (aligned_crops@<size>: crops/aligned<size>)
    workers: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _check(self):
        for size in [*self.sizes, *self.aligned_sizes]:
            if not (isinstance(size, int) and 16 <= size <= 1024):
                raise ValueError(f"sizes: {size!r} is not a crop side between 16 and 1024 pixels")
        return self


class Model(_Section):
    """A network the study trains: ``architecture`` (a module of :mod:`flmlib.nets`) with ``architecture_kwargs``,
    trained with ``recipe`` on the context crops in ``train_data`` (``prepared``, ``crops/<size>`` for a network
    whose input is larger than prepare's face box, or ``external/<name>`` for faces a user brings, written by
    :mod:`flmlib.external_split` in any point scheme), optionally starting from pretrained weights ``init``
    (:mod:`flmlib.pretrained`)."""

    architecture: str
    architecture_kwargs: dict[str, Any] = {}
    recipe: str
    train_data: str
    init: str = ""
    seed: int | None = None  # overrides train.seed (repeat runs of one entry with other seeds)
    repeat_of: str | None = None  # this entry is <id> trained again with another seed (seed table, not leaderboard)
    # source -> 68-point regions (jaw, brows, nose, eyes, mouth) treated as unannotated for that source's faces
    ignore_points: dict[Literal["300w", "youtube"], list[Literal["jaw", "brows", "nose", "eyes", "mouth"]]] = {}
    ablation_of: str | None = None  # this entry is <id> trained with one change (ablation table, not leaderboard)
    description: str = ""
    trained_on: str = ""
    caveats: tuple[str, ...] = ()
    options: dict[str, Any] = {}   # keyword arguments of the cnn landmarker (backend, batch_size, ...)
    # this entry's augmentation strengths instead of train.aug_<name> (e.g. a second pass's smaller shifts)
    augmentation: dict[Literal["flip", "shift", "scale", "rotate", "brightness", "contrast"], float] = {}


class TwoPass(Model):
    """A two-pass landmarker (:mod:`flmlib.landmarkers.two_pass`): the trained model ``first`` (a ``models:`` entry)
    places the points on the face box, and this entry's network, trained on aligned crops (``train_data:
    crops/aligned<size>``), refines them on the crop those points align. ``train_two_pass@<id>`` writes both networks
    into ``models/<id>.pt``."""

    first: str


class Method(_Section):
    """A compared landmarker (fields as in :class:`flmlib.landmarkers.base.MethodSpec`)."""

    kind: str
    points: str = "ibug68"
    needs_box: bool = True
    trained_on: str = ""
    caveats: tuple[str, ...] = ()
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self):
        if self.points not in POINT_SCHEMES:
            raise ValueError(f"points={self.points!r}; choose one of {list(POINT_SCHEMES)}")
        return self


class PartialLabels(_Section):
    """The partial-annotation experiment (``partial_labels`` stage): the Kaggle facial-keypoints setting rebuilt on
    this study's hand-annotated 300-W faces. Every training face keeps the 15 Kaggle keypoints taken from its 68;
    ``reduced_share`` of them (seeded) keep only the 4 points the Kaggle set usually has. One network is trained the
    same way under each strategy and tested on the fully annotated faces of ``test_set``."""
    architecture: str = "onet"
    architecture_kwargs: dict[str, Any] = {}
    recipe: str = "fast"
    epochs: int = Field(0, ge=0)          # > 0 overrides the recipe's epochs; train.epochs > 0 (smoke runs) wins
    reduced_share: float = Field(0.7, ge=0, lt=1)
    seed: int = 0
    test_set: str = "test_300w_common"
    strategies: list[Literal["drop_incomplete", "fill_previous", "two_models", "masked_loss"]] = [
        "drop_incomplete", "fill_previous", "two_models", "masked_loss"]


class Video(_Section):
    """``flm video`` smoothing (One-Euro filter) and the video stage (stability on synthetic clips, throughput)."""
    method: str = "onet"                  # the landmarker the video stage measures
    min_cutoff: float = Field(1.0, gt=0)  # One-Euro: cutoff at rest, Hz (lower: steadier, more lag)
    beta: float = Field(0.15, ge=0)       # One-Euro: cutoff growth with speed (higher: less lag when moving)
    d_cutoff: float = Field(2.0, gt=0)    # One-Euro: cutoff of the speed estimate, Hz
    test_set: str = "test_300w_common"    # still faces the synthetic clips are made from
    clips: int = Field(4, ge=1)
    frames: int = Field(90, ge=12)
    width: int = Field(640, ge=64)
    height: int = Field(480, ge=64)
    noise: float = Field(2.0, ge=0)       # camera-like pixel noise per frame, grey levels (sd)
    max_lag_frames: float = Field(1.0, ge=0)  # the stated bound: smoothing may add at most this much lag


class Compare(_Section):
    n_resamples: int = Field(2000, ge=10)
    seed: int = 0
    region_normaliser: Literal["interocular", "interpupil", "gtbox", "box"] = "interocular"
    limit: int = Field(0, ge=0)


class Report(_Section):
    headline_test_set: str = "test_aflw2000"   # the test set the README's answer is about (one no method trained on)
    examples: int = Field(12, ge=0)
    worst: int = Field(6, ge=0)
    seed: int = 0


class Study(_Section):
    """The whole of ``params.yaml``."""

    data: Data
    prepare: Prepare
    test_sets: dict[str, TestSet]
    crops: Crops = Crops()
    train: Train
    models: dict[str, Model]
    two_pass: dict[str, TwoPass] = {}
    methods: dict[str, Method]
    reference: str
    compare: Compare
    report: Report
    partial_labels: PartialLabels = PartialLabels()
    video: Video = Video()

    @model_validator(mode="after")
    def _check(self):
        if not self.test_sets:
            raise ValueError("test_sets: at least one test set is needed")
        for test_set_id in self.test_sets:  # the id names prepared/<id>.npz, next to train.npz and val.npz
            if test_set_id in RESERVED_TEST_SET_IDS or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", test_set_id):
                raise ValueError(f"test_sets.{test_set_id}: not usable as a test set id (letters, digits, _ and -;"
                                 f" not {list(RESERVED_TEST_SET_IDS)})")
        for model_id, model in self.models.items():
            if model.recipe not in self.train.recipes:
                raise ValueError(f"models.{model_id}.recipe: {model.recipe!r} is not one of train.recipes "
                                 f"{sorted(self.train.recipes)}")
            known = ["prepared", *(f"crops/{size}" for size in self.crops.sizes)]
            if model.train_data not in known and not re.match(r"^external/[A-Za-z0-9][A-Za-z0-9_.-]*$",
                                                              model.train_data):
                raise ValueError(f"models.{model_id}.train_data: {model.train_data!r} is not one of {known} (add the"
                                 " size to crops.sizes) or external/<name> (python -m flmlib.external_split);"
                                 " aligned crops are for two_pass entries")
        for pass_id, entry in self.two_pass.items():
            aligned = [f"crops/aligned{size}" for size in self.crops.aligned_sizes]
            if entry.recipe not in self.train.recipes:
                raise ValueError(f"two_pass.{pass_id}.recipe: {entry.recipe!r} is not one of train.recipes "
                                 f"{sorted(self.train.recipes)}")
            if entry.train_data not in aligned:
                raise ValueError(f"two_pass.{pass_id}.train_data: {entry.train_data!r} is not one of {aligned} (add "
                                 "the size to crops.aligned_sizes)")
            if entry.first not in self.models:
                raise ValueError(f"two_pass.{pass_id}.first: {entry.first!r} is not one of the models "
                                 f"{sorted(self.models)}")
            if entry.ablation_of:
                raise ValueError(f"two_pass.{pass_id}.ablation_of: ablations are models: entries")
        for model_id, model in self.models.items():
            if model.ablation_of is not None and (model.ablation_of not in self.models or model.repeat_of):
                raise ValueError(f"models.{model_id}.ablation_of: {model.ablation_of!r} is not another model entry "
                                 "(and an ablation is not a seed repeat)")
        if self.partial_labels.recipe not in self.train.recipes:
            raise ValueError(f"partial_labels.recipe: {self.partial_labels.recipe!r} is not one of train.recipes")
        # The two optional sections are checked against the study when params.yaml gives them.
        if "video" in self.model_fields_set and self.video.method not in self.method_ids:
            raise ValueError(f"video.method: {self.video.method!r} is not one of the methods {self.method_ids}")
        for section in ("partial_labels", "video"):
            if section not in self.model_fields_set:
                continue
            test_set = getattr(self, section).test_set
            if test_set not in self.test_sets:
                raise ValueError(f"{section}.test_set: {test_set!r} is not one of the test sets {sorted(self.test_sets)}")
        # A seed repeat trains an entry of its own section (models: or two_pass:) again, the same way.
        for section, entries in (("models", self.models), ("two_pass", self.two_pass)):
            for model_id, model in entries.items():
                if model.repeat_of is None:
                    continue
                base = entries.get(model.repeat_of)
                if base is None or base.repeat_of is not None:
                    raise ValueError(f"{section}.{model_id}.repeat_of: {model.repeat_of!r} is not a {section} entry "
                                     "of its own")
                same = ("architecture", "architecture_kwargs", "recipe", "train_data", "init", "augmentation",
                        *(("first",) if section == "two_pass" else ()))
                differ = [k for k in same if getattr(model, k) != getattr(base, k)]
                if differ:
                    raise ValueError(f"{section}.{model_id}: a repeat of {model.repeat_of!r} must train it the same "
                                     f"way; {differ} differ")
                if self.seed_of(model_id) == self.seed_of(model.repeat_of):
                    raise ValueError(f"{section}.{model_id}.seed: a repeat of {model.repeat_of!r} needs another seed")
        if self.report.headline_test_set not in self.test_sets:
            raise ValueError(f"report.headline_test_set: {self.report.headline_test_set!r} is not one of the test "
                             f"sets {sorted(self.test_sets)}")
        for name, other in (("methods", self.methods), ("two_pass", self.two_pass)):
            both = set(self.models) & set(other)
            if both:
                raise ValueError(f"{name}: ids {sorted(both)} are also models (a trained model is already a method)")
        both = set(self.two_pass) & set(self.methods)
        if both:
            raise ValueError(f"methods: ids {sorted(both)} are also two_pass entries")
        if self.reference not in self.method_ids:
            raise ValueError(f"reference: {self.reference!r} is not one of the methods {self.method_ids}")
        return self

    @property
    def leaderboard_ids(self) -> list[str]:
        """The compared methods without the seed repeats of a model (those go to the seed table) and its ablations
        (the ablation table)."""
        trained = {**self.models, **self.two_pass}
        return [m for m in self.method_ids if m not in trained
                or (trained[m].repeat_of is None and trained[m].ablation_of is None)]

    def ablations(self) -> dict[str, list[str]]:
        """Model id -> the entries that train it with one change (``ablation_of``)."""
        out: dict[str, list[str]] = {}
        for model_id, model in self.models.items():
            if model.ablation_of is not None:
                out.setdefault(model.ablation_of, []).append(model_id)
        return out

    def repeats(self) -> dict[str, list[str]]:
        """Model or two-pass id -> its runs with other seeds (itself first), for the entries that have repeats."""
        out: dict[str, list[str]] = {}
        for model_id, model in {**self.models, **self.two_pass}.items():
            if model.repeat_of is not None:
                out.setdefault(model.repeat_of, [model.repeat_of]).append(model_id)
        return out

    @property
    def method_ids(self) -> list[str]:
        """Every compared method: the trained models, the two-pass entries, then the methods with their own weights."""
        return [*self.models, *self.two_pass, *self.methods]

    def method_spec(self, method_id: str) -> MethodSpec:
        """The :class:`MethodSpec` of a model or method id (``KeyError`` naming the known ids)."""
        if method_id in self.models or method_id in self.two_pass:
            m = self.trainable(method_id)
            return MethodSpec(id=method_id, kind="cnn", trained_on=m.trained_on, caveats=tuple(m.caveats),
                              model=method_id, options={"checkpoint": self.model_path(method_id), **m.options})
        if method_id not in self.methods:
            raise KeyError(f"unknown method {method_id!r}; params.yaml lists {self.method_ids}")
        m = self.methods[method_id]
        return MethodSpec(id=method_id, kind=m.kind, points=m.points, needs_box=m.needs_box, trained_on=m.trained_on,
                          caveats=tuple(m.caveats), options=dict(m.options))

    def test_set(self, test_set_id: str) -> TestSet:
        """``test_sets.<id>`` (``KeyError`` naming the known ids)."""
        if test_set_id not in self.test_sets:
            raise KeyError(f"unknown test set {test_set_id!r}; params.yaml lists {sorted(self.test_sets)}")
        return self.test_sets[test_set_id]

    def train_crop_size(self, model_id: str) -> int:
        """Side of the context crops ``models.<model_id>`` (or ``two_pass.<model_id>``) trains on, pixels."""
        data = self.trainable(model_id).train_data
        if data.startswith("external/"):
            raise ValueError(f"models.{model_id} trains on {data}: its crop size is in that folder's train.npz")
        return self.prepare.crop_size if data == "prepared" else int(data.split("/")[1].removeprefix("aligned"))

    def trainable(self, model_id: str) -> Model:
        """The training entry of a trained method: ``models.<id>`` or ``two_pass.<id>`` (``KeyError`` naming both)."""
        if model_id in self.models:
            return self.models[model_id]
        if model_id in self.two_pass:
            return self.two_pass[model_id]
        raise KeyError(f"unknown model {model_id!r}; params.yaml lists models {sorted(self.models)} and two_pass "
                       f"{sorted(self.two_pass)}")

    def seed_of(self, model_id: str) -> int:
        """The seed a trained method is trained with: its own ``seed``, else ``train.seed``."""
        seed = self.trainable(model_id).seed
        return self.train.seed if seed is None else seed

    def model_path(self, model_id: str) -> str:
        """Where ``train@<model_id>`` writes the trained model, relative to the project root."""
        return f"models/{model_id}.pt"


def _location(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


#: Key names DVC leaves out of its run-cache key (it drops every ``size`` and ``nfiles`` field of a stage's lock
#: entry, params included): a stage whose only change were such a param would get an earlier run's outputs back.
DVC_UNHASHED_KEYS = ("size", "nfiles")


def _unhashed_keys(node, where: str = "") -> list[str]:
    if isinstance(node, dict):
        found = [f"{where}{k}" for k in node if k in DVC_UNHASHED_KEYS]
        return found + [p for k, v in node.items() for p in _unhashed_keys(v, f"{where}{k}.")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _unhashed_keys(v, f"{where}{i}.")]
    return []


def parse_config(raw: dict, source: str = "params") -> Study:
    """Validate an already-read params mapping; errors name ``source`` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    unhashed = _unhashed_keys(raw)
    if unhashed:
        raise ConfigError(f"{source}: {', '.join(unhashed)}: DVC's run cache ignores keys named "
                          f"{' or '.join(DVC_UNHASHED_KEYS)}, so a change to them could bring back stale outputs; "
                          "rename the key")
    try:
        return Study.model_validate(raw)
    except ValidationError as exc:
        # A whole-study check (empty location) has the whole file as its input: its message says what is wrong.
        lines = [f"{_location(e)}: missing" if e["type"] == "missing"
                 else f"{_location(e)}: {e['msg']}" if not e["loc"]
                 else f"{_location(e)}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def load_config(path: str | Path = DEFAULT_PARAMS) -> Study:
    """Read and validate a params file (relative paths: from the project root).

    Raises:
        ConfigError: the file is missing or not YAML, or a value is invalid (the message names the key).
    """
    path = Path(path)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_config(raw, str(path))
