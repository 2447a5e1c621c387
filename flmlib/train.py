"""Training loop for the landmark regressors: data in memory, batch augmentation, checkpoints, DVCLive logs.

A run is described by a :class:`TrainConfig` (:func:`config_for_model` builds it from params.yaml's ``train``
section, the model's entry and its recipe).
It trains on ``prepared/train.npz``, validates every epoch on ``prepared/val.npz`` (a split of the training data,
never a test set) and

* logs train loss, validation loss and validation NME (inter-ocular: mean point-to-point distance in image pixels
  divided by the distance between the outer eye corners 36 and 45, averaged over faces) with DVCLive;
* saves a checkpoint after every epoch (model, optimizer, scheduler, every RNG state, the epoch and the logged
  history) so a killed run continues where it stopped and ends with the weights an uninterrupted run would have;
* writes the final weights together with the configuration that made them (:func:`save_model`).

The point scheme travels with the data: a split may hold another scheme than the 68 iBUG points (its
``point_scheme``, e.g. WFLW's 98 points or the Kaggle 15), and the network, the flip permutation and the inter-ocular
normaliser follow it. Faces with missing points carry a ``valid`` mask; the loss and the validation errors then use
the annotated points only, and ``ignore_points`` masks whole regions of a source on purpose (a label convention
that should not be learnt).

On the CPU a run is deterministic for a given config, seed and thread count.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from flmlib import distributed
from flmlib.augment import AugmentConfig, augment
from flmlib.crops import box_units_to_image, crop_to_box_units
from flmlib.device import resolve_device
from flmlib.landmarks68 import REGIONS
from flmlib.metrics import nme_interocular, nme_scheme, rmse_box
from flmlib.losses import build_loss
from flmlib.models import build_model, init_mean_shape
from flmlib.point_schemes import IBUG68, PointScheme, get_scheme

#: Data sources, selected by the prefix of ``face_id`` in the prepared files.
#: A face's source is the first part of its face_id (``300w/helen/...`` -> ``300w``), under a short name where one is
#: given here; faces a user brings (``wflw/...``, ``kaggle/...``) are sources of their own and are trained on as well.
SOURCE_ALIASES = {"youtube-faces": "youtube"}
#: The study's own sources, which ``train.use_300w`` / ``train.use_youtube`` switch on and off.
STUDY_SOURCES = ("300w", "youtube")


def face_sources(face_id) -> np.ndarray:
    """``(N,)`` str face ids -> ``(N,)`` object array of source names (``300w``, ``youtube``, ``wflw``, ...)."""
    prefixes = [str(f).split("/", 1)[0] for f in np.asarray(face_id)]
    return np.array([SOURCE_ALIASES.get(p, p) for p in prefixes], dtype=object)
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "onecycle", "cosine", "plateau")
PRECISIONS = ("fp32", "bf16")
CHECKPOINT_NAME = "last.pt"


def as_bool(value, name: str) -> bool:
    """A boolean param that may arrive as a string through papermill (``"true"``, ``"False"``, ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"param {name}={value!r} must be true or false")


def parse_lr_steps(text: str) -> list[tuple[int, float]]:
    """``"200:0.005,400:0.001"`` -> ``[(200, 0.005), (400, 0.001)]``: from epoch 200 on the lr is 0.005, etc.

    Items are separated by commas or spaces; ``""`` or ``"none"`` means no steps. (A string, not a list, because
    DVC can only pass scalars on a command line.)
    """
    steps = []
    if str(text).strip().lower() in ("", "none"):
        return steps
    for item in str(text).replace(",", " ").split():
        epoch, sep, lr = item.partition(":")
        try:
            if not sep:
                raise ValueError
            steps.append((int(epoch), float(lr)))
        except ValueError:
            raise ValueError(f"lr_steps item {item!r} in {text!r} is not 'epoch:lr' (e.g. '200:0.005 400:0.001')") from None
    if [e for e, _ in steps] != sorted({e for e, _ in steps}):
        raise ValueError(f"lr_steps {text!r}: epochs must be distinct and increasing")
    return steps


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (except the data files and the code).

    ``optimizer`` is ``sgd`` (momentum, PyTorch's weight decay) or ``adamw``. ``schedule``: ``step`` (lr from
    ``lr``, then the ``lr_steps`` epochs), ``onecycle`` (warm-up to peak ``lr`` over a quarter of the run, cosine
    down to ``lr / 1e4``, per batch), ``cosine`` (one epoch of linear warm-up, then cosine to 0, per batch) or
    ``plateau`` (PyTorch's ReduceLROnPlateau on the validation loss: lr times ``plateau_factor`` after
    ``plateau_patience`` epochs without improvement). ``loss`` is a name from :mod:`flmlib.losses` with
    ``loss_params`` as keywords. ``ignore_points`` maps a source (``300w``, ``youtube``) to region names of
    :data:`flmlib.landmarks68.REGIONS` whose points are treated as missing for that source's faces (68-point data).
    ``threads`` 0 means all cores available to this process.
    """

    epochs: int = 40
    optimizer: str = "adamw"
    lr: float = 3e-3
    schedule: str = "onecycle"
    lr_steps: str = ""
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    loss: str = "mse"
    loss_params: dict = field(default_factory=dict)
    model: str = "onet"
    model_params: dict = field(default_factory=dict)
    init: str = ""
    init_mean_shape: bool = True
    precision: str = "fp32"
    batch_size: int = 64
    use_300w: bool = True
    use_youtube: bool = True
    ignore_points: dict = field(default_factory=dict)
    augment: bool = True
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def __post_init__(self):
        for name in ("use_300w", "use_youtube", "augment", "init_mean_shape"):
            object.__setattr__(self, name, as_bool(getattr(self, name), name))
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs={self.epochs!r} must be a positive integer")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive integer")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; choose one of {PRECISIONS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if not (self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be > 0")
        parse_lr_steps(self.lr_steps)
        if not (0 < self.plateau_factor < 1 and isinstance(self.plateau_patience, int) and self.plateau_patience >= 0):
            raise ValueError(f"plateau_factor={self.plateau_factor!r} must be in (0, 1) and plateau_patience="
                             f"{self.plateau_patience!r} an integer >= 0")
        for source, regions in self.ignore_points.items():
            if not isinstance(source, str) or not source or "/" in source:
                raise ValueError(f"ignore_points: source {source!r} must be a source name such as "
                                 f"{list(STUDY_SOURCES)} (the first part of a face_id)")
            unknown = [r for r in regions if r not in REGIONS]
            if unknown or isinstance(regions, str):
                raise ValueError(f"ignore_points.{source}: {regions!r} must list regions of {sorted(REGIONS)}")
        if not (self.use_300w or self.use_youtube):
            raise ValueError("use_300w and use_youtube are both false: there is nothing to train on")
        build_loss(self.loss, **self.loss_params)

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    def excluded_sources(self) -> list[str]:
        """The study's sources switched off by ``use_300w`` / ``use_youtube`` (other sources are always used)."""
        return [name for name, on in (("300w", self.use_300w), ("youtube", self.use_youtube)) if not on]


def config_for_model(study, model_id: str, epochs: int | None = None) -> TrainConfig:
    """The training run of ``models.<model_id>`` (or ``two_pass.<model_id>``) in a loaded study configuration
    (:func:`flmlib.config.load_config`).

    Its recipe (``train.recipes.<recipe>``) gives the optimisation, ``train`` the shared knobs and the model entry its
    architecture, pretrained initialiser, augmentation overrides and (optionally) seed. ``epochs`` (default ``train.epochs``) > 0 overrides the recipe's epochs (smoke runs); the lr
    schedule is not rescaled, so a shortened ``faithful`` run never reaches its lr steps.
    """
    shared, model = study.train, study.trainable(model_id)
    named = study.train.recipes[model.recipe].model_dump()
    epochs = shared.epochs if epochs is None else int(epochs)
    if epochs > 0:
        named["epochs"] = epochs
    loss_params = {"mse": {}, "wing": {"w": shared.wing_w, "epsilon": shared.wing_epsilon},
                   "smooth_l1": {"beta": shared.smooth_l1_beta}}[named["loss"]]
    augmentation = AugmentConfig(**{**dict(flip=shared.aug_flip, shift=shared.aug_shift, scale=shared.aug_scale,
                                           rotate=shared.aug_rotate, brightness=shared.aug_brightness,
                                           contrast=shared.aug_contrast), **model.augmentation})
    return TrainConfig(**named, loss_params=loss_params, augmentation=augmentation, model=model.architecture,
                       model_params=dict(model.architecture_kwargs), init=model.init,
                       init_mean_shape=shared.init_mean_shape,
                       precision=shared.precision, batch_size=shared.batch_size, use_300w=shared.use_300w,
                       use_youtube=shared.use_youtube, augment=shared.augment,
                       ignore_points={k: list(v) for k, v in model.ignore_points.items()},
                       seed=study.seed_of(model_id),
                       device=shared.device, threads=shared.threads)


# --------------------------------------------------------------------------------------------------------- data


@dataclass
class Split:
    """One prepared split in memory.

    ``crops`` ``(N, 3, S, S) uint8`` RGB context crops; ``points`` ``(N, P, 2) float32`` crop pixels;
    ``landmarks_image`` ``(N, P, 2) float32`` and ``boxes`` ``(N, 4) float32`` in image pixels; ``face_id`` ``(N,)``
    str; ``crop_size`` S and ``context_factor`` of the crops; ``valid`` ``(N, P) bool`` annotated points (missing
    ones hold a finite placeholder); ``scheme`` the point scheme (P points); ``align_mean`` ``(P, 2)`` box units for
    aligned crops (:mod:`flmlib.alignment`; then ``landmarks_image`` and ``boxes`` are crop pixels), else None.
    """

    crops: torch.Tensor
    points: torch.Tensor
    landmarks_image: np.ndarray
    boxes: np.ndarray
    face_id: np.ndarray
    crop_size: int
    context_factor: float
    valid: torch.Tensor | None = None
    scheme: PointScheme = IBUG68
    align_mean: np.ndarray | None = None

    def __post_init__(self):
        if self.valid is None:
            self.valid = torch.ones(self.points.shape[:2], dtype=torch.bool)

    @property
    def complete(self) -> bool:
        """True when every point of every face is annotated (the unmasked, original training path applies)."""
        return bool(self.valid.all())

    def ignore(self, ignore_points: dict) -> None:
        """Mark the points of the named regions missing for the faces of each source (``{"youtube": ["jaw"]}``)."""
        if ignore_points and self.scheme.name != IBUG68.name:
            raise ValueError(f"ignore_points names 68-point regions, but the data is in scheme {self.scheme.name!r}")
        sources = self.source_of()
        for source, regions in ignore_points.items():
            rows = torch.from_numpy(sources == source)
            for region in regions:
                cols = torch.from_numpy(np.array(REGIONS[region], dtype=np.int64))
                self.valid[rows[:, None] & torch.isin(torch.arange(self.valid.shape[1]), cols)[None]] = False

    def __len__(self) -> int:
        return len(self.face_id)

    def source_of(self) -> np.ndarray:
        """``(N,)`` source name of each face (``300w``, ``youtube``, or the first part of another face_id)."""
        return face_sources(self.face_id)


REQUIRED_KEYS = ("crops", "landmarks", "landmarks_image", "boxes", "face_id", "crop_size", "context_factor")
#: Optional arrays of a split: ``valid`` ``(N, P) bool`` (absent: every point annotated) and ``point_scheme`` (a
#: scalar string naming a :mod:`flmlib.point_schemes` scheme; absent: ``ibug68``) and ``align_mean`` (aligned crops,
#: :mod:`flmlib.training_crops`).
OPTIONAL_KEYS = ("valid", "point_scheme", "align_mean")


def load_training_split(path: str | Path, exclude: Sequence[str] = ()) -> Split:
    """Load a prepared ``.npz`` split as training tensors, leaving out the faces of the ``exclude``d sources
    (``300w``, ``youtube``, or any other first part of a face_id). Any point scheme loads (``point_scheme`` in the
    file), so 15-point Kaggle or 98-point WFLW splits train like the study's own.
    (:func:`flmlib.prepare.load_split` reads every array of a split as numpy, for evaluation.)

    Raises:
        FileNotFoundError / ValueError: missing file, missing key, inconsistent shapes, or no face left; the
        message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared split not found (run the prepare stage first)")
    if isinstance(exclude, str):
        raise TypeError(f"exclude={exclude!r} must be a list of source names, not a string")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in REQUIRED_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (has {data.files})")
        arrays = {k: data[k] for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in data.files}
    crops, landmarks = arrays["crops"], arrays["landmarks"]
    n, size = len(arrays["face_id"]), int(arrays["crop_size"])
    try:
        scheme = get_scheme(str(arrays.get("point_scheme", IBUG68.name)))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    p = scheme.n_points
    if crops.shape != (n, size, size, 3) or crops.dtype != np.uint8:
        raise ValueError(f"{path}: crops are {crops.dtype} {crops.shape}, expected uint8 ({n}, {size}, {size}, 3)")
    for key, shape in (("landmarks", (n, p, 2)), ("landmarks_image", (n, p, 2)), ("boxes", (n, 4))):
        if arrays[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {arrays[key].shape}, expected {shape} ({scheme.name})")
    valid = arrays.get("valid", np.ones((n, p), bool))
    if valid.shape != (n, p) or valid.dtype != bool:
        raise ValueError(f"{path}: valid is {valid.dtype} {valid.shape}, expected bool ({n}, {p})")
    if not np.isfinite(np.where(valid[..., None], landmarks, 0)).all():
        raise ValueError(f"{path}: annotated (valid) landmarks hold NaN/inf")
    face_id = arrays["face_id"].astype(str)
    source = face_sources(face_id)
    keep = ~np.isin(source, list(exclude))
    if not keep.any():
        raise ValueError(f"{path}: no face left after leaving out sources {list(exclude)} (it holds "
                         f"{sorted(set(source))})")
    # Missing points get a finite placeholder (the face's valid mean) so that warps and losses never see NaN.
    placeholder = np.where(valid[..., None], landmarks, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a face without any valid point: its mean is NaN -> 0
        centre = np.nan_to_num(np.nanmean(placeholder, axis=1, keepdims=True))
    landmarks = np.where(valid[..., None], landmarks, centre)
    image_points = np.where(valid[..., None], arrays["landmarks_image"], 0)
    return Split(
        crops=torch.from_numpy(np.ascontiguousarray(crops[keep].transpose(0, 3, 1, 2))),
        points=torch.from_numpy(landmarks[keep].astype(np.float32)),
        landmarks_image=image_points[keep].astype(np.float32),
        boxes=arrays["boxes"][keep].astype(np.float32),
        face_id=face_id[keep],
        crop_size=size,
        context_factor=float(arrays["context_factor"]),
        valid=torch.from_numpy(valid[keep].copy()),
        scheme=scheme,
        align_mean=np.asarray(arrays["align_mean"], np.float64) if "align_mean" in arrays else None,
    )


# ------------------------------------------------------------------------------------------------------ helpers


def set_threads(threads: int) -> int:
    """Use ``threads`` intra-op threads (0: every core this process may run on); returns the number set.

    The model is small, so one process with one thread per core is the fastest layout; inter-op parallelism has
    nothing to overlap in a sequential training step and only adds contention.
    """
    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op of the process; then keep what is there
        pass
    return n


def fingerprint(config: TrainConfig, paths: list[Path]) -> str:
    """Hash of the config (without device/threads), the data files and this training code.

    A checkpoint is resumed only when its fingerprint matches, so changed params, data or code restart cleanly.
    """
    h = hashlib.sha256()
    cfg = config.as_dict()
    cfg.pop("device"), cfg.pop("threads")
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    here = Path(__file__).resolve().parent
    code = ("train.py", "augment.py", "models.py", "losses.py", "landmarks68.py", "crops.py", "metrics.py",
            "point_schemes.py", "distributed.py")
    nets = sorted((here / "nets").glob("*.py")) + sorted((here / "pretrained").glob("*.py"))
    for p in [*paths, *(here / m for m in code), *nets]:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def build_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """The scheduler of ``config.schedule``: per batch (``.step()`` after every optimizer step), except ``plateau``,
    which steps once per epoch on the validation loss (``.step(val_loss)``)."""
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                          patience=config.plateau_patience)
    total = config.epochs * steps_per_epoch
    if config.schedule in ("onecycle", "cosine"):
        # onecycle: warm up linearly from lr/25 over the first quarter, then cosine down to lr/1e4 (Smith's
        # one-cycle without momentum cycling). cosine: one epoch of warm-up from ~0, then cosine down to 0.
        # Written as LambdaLR so that tiny smoke runs (a handful of steps) work and resume is a plain step count.
        onecycle = config.schedule == "onecycle"
        warm = max(1, round(0.25 * total)) if onecycle else steps_per_epoch
        low, floor = (1 / 25, 1e-4) if onecycle else (0.0, 0.0)

        def factor(step: int) -> float:
            if step < warm:
                return low + (1 - low) * (step + 1) / warm
            progress = min(1.0, (step - warm + 1) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    steps = parse_lr_steps(config.lr_steps)

    def step_factor(step: int) -> float:
        epoch, lr = step // steps_per_epoch, config.lr
        for start, value in steps:
            if epoch >= start:
                lr = value
        return lr / config.lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, step_factor)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``(N, 3, s, s)`` float 0..255 -> ``(N, n_points, 2)`` box units (CPU float32), in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).reshape(len(images), -1, 2)


class Evaluator:
    """Validation on the plain central box of every face.

    Returns ``val/loss`` (the training loss, box units), ``val/nme_interocular`` (mean over the faces that annotate
    both outer eye corners, i.e. all of them without masks; also per source as ``val/nme_interocular_<source>``) and ``val/rmse_box`` (the original study's RMSE / sqrt(w h) of the face
    box), the last two on image pixels via :mod:`flmlib.metrics`.
    """

    def __init__(self, split: Split, loss_fn, out_size: int):
        self.images, self.targets = augment(split.crops, split.points, None, out_size=out_size,
                                            context_factor=split.context_factor, mirror=split.scheme.mirror)
        self.split, self.loss_fn = split, loss_fn
        self.sources = split.source_of()
        # Fully annotated 68-point data takes the plain path (bit for bit what it always computed).
        self.valid = None if split.complete else split.valid
        self.valid_np = None if self.valid is None else self.valid.numpy()
        # Inter-ocular NME needs both outer eye corners: with masked labels it is the mean over the faces that have
        # them (the loss and rmse_box still use every face).
        self.scored = np.ones(len(split), bool)
        if self.valid_np is not None:
            right, left = split.scheme.outer_eye_corners
            self.scored = self.valid_np[:, right] & self.valid_np[:, left]
            if not self.scored.any():
                raise ValueError(f"no validation face annotates both outer eye corners (points {right} and {left}), "
                                 "which inter-ocular NME needs")

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        pred = predict(model, self.images)
        loss = float(self.loss_fn(pred, self.targets, self.valid))
        pred_image = box_units_to_image(pred.numpy(), self.split.boxes)
        gt, is_68 = self.split.landmarks_image, self.split.scheme.name == IBUG68.name
        rows = self.scored
        valid = None if self.valid_np is None else self.valid_np[rows]
        if is_68:
            nme = nme_interocular(pred_image[rows], gt[rows], valid=valid)
        else:
            nme = nme_scheme(pred_image[rows], gt[rows], self.split.scheme, valid)
        row = {"val/loss": loss, "val/nme_interocular": float(nme.mean())}
        sources = self.sources[rows]
        for name in sorted(set(sources)):
            row[f"val/nme_interocular_{name}"] = float(nme[sources == name].mean())
        if is_68:
            row["val/rmse_box"] = float(rmse_box(pred_image, gt, self.split.boxes, valid=self.valid_np).mean())
        return row


def read_checkpoint(path: Path) -> dict | None:
    """The resumable state in ``path``, or None (with a message naming the file on stderr) when it cannot be read:
    a damaged checkpoint costs the epochs it held, never the run."""
    try:
        # weights_only: tensors, numbers, strings and containers only; a checkpoint never needs more.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"fingerprint", "epoch", "model"} <= set(ckpt):
            raise ValueError("not a training checkpoint of this code")
        return ckpt
    except Exception as exc:  # noqa: BLE001 - any unreadable file is handled the same way
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"warning: {path}: cannot resume from this checkpoint ({type(exc).__name__}: {reason[:200]});"
              " starting afresh", file=sys.stderr, flush=True)
        return None


def _save_atomic(obj, path: Path) -> None:
    # Write-then-rename: a run killed while saving leaves the previous checkpoint intact.
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def model_config(config: TrainConfig, split: Split, model: torch.nn.Module) -> dict:
    """What an inference API needs to rebuild and feed the model, plus how it was trained."""
    return {
        "model": config.model,
        "model_kwargs": dict(config.model_params),
        "input_size": int(model.input_size),
        "input": "RGB float 0..255, (B, 3, input_size, input_size); the model normalises it itself",
        "in_channels": int(model.in_channels),
        "normalisation": {"mean": model.pixel_mean, "scale": model.pixel_scale,
                          "formula": "(x - mean) / scale, per channel of in_channels (grey: luma first)"},
        "crop_size": int(split.crop_size),
        "context_factor": float(split.context_factor),
        "input_region": "the face box, resampled to input_size x input_size (box edges at pixel edges)",
        "n_points": int(model.n_points),
        "point_scheme": getattr(split, "scheme", IBUG68).name,  # any object with crop_size and context_factor
        "output": f"(B, {model.n_outputs}) = {model.n_points} x (x, y) in box units: 0 and 1 at the face box's edges",
        "init": config.init or "random",
        "train": {**config.as_dict(), "augmentation": config.augmentation.as_dict()},
        "torch": torch.__version__,
        **({} if getattr(split, "align_mean", None) is None else {"alignment": {
            "mean": np.asarray(split.align_mean).tolist(),
            "about": "trained on aligned crops: a second pass. The face's inner points (17-67) from a first pass are "
                     "fitted onto mean (box units) by a similarity, and the aligned crop is what the model sees "
                     "(flmlib.alignment)"}}),
    }


def save_model(path: str | Path, model: torch.nn.Module, config: dict) -> None:
    """Write ``{"state_dict", "config"}`` (CPU tensors); :func:`flmlib.models.load_trained` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _save_atomic({"state_dict": state, "config": json.loads(json.dumps(config, default=str))}, path)


# ----------------------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What a run produced: per-epoch history rows, final validation row, the epoch resumed from, wall time."""

    history: list[dict]
    final: dict
    resumed_from: int
    seconds: float
    model: torch.nn.Module = field(repr=False)


def train(
    config: TrainConfig,
    train_path: str | Path,
    val_path: str | Path,
    model_path: str | Path,
    checkpoint_dir: str | Path,
    live_dir: str | Path | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train (or resume) a model as described by ``config``; write ``model_path`` at the end.

    ``checkpoint_dir/last.pt`` holds the state after the last finished epoch; if its fingerprint (config, data,
    code) matches, training continues from it (and a finished run is not repeated). ``on_epoch_end(epoch, row)`` is
    called after each epoch's checkpoint is written (epochs count from 1).

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), the processes train one model data-parallel, each on its share of
    every global batch of ``batch_size`` faces, and only rank 0 writes files (:mod:`flmlib.distributed`).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    set_threads(config.threads)
    device = resolve_device(config.device)
    ddp = distributed.setup(device.type)
    device = distributed.local_device(ddp, device)
    progress = progress and ddp.is_main
    train_path, val_path, checkpoint_dir = Path(train_path), Path(val_path), Path(checkpoint_dir)
    exclude = config.excluded_sources()
    train_split, val_split = load_training_split(train_path, exclude), load_training_split(val_path, exclude)
    if (train_split.crop_size, train_split.context_factor) != (val_split.crop_size, val_split.context_factor):
        raise ValueError(f"{train_path} and {val_path} have different crop_size/context_factor")
    if train_split.scheme.name != val_split.scheme.name:
        raise ValueError(f"{train_path} ({train_split.scheme.name}) and {val_path} ({val_split.scheme.name}) hold "
                         "different point schemes")
    scheme = train_split.scheme
    train_split.ignore(config.ignore_points)
    val_split.ignore(config.ignore_points)

    torch.manual_seed(config.seed)
    net_kwargs = dict(config.model_params)
    if scheme.n_points != IBUG68.n_points:
        net_kwargs.setdefault("n_points", scheme.n_points)
    model = build_model(config.model, **net_kwargs)
    if config.init:
        from flmlib.pretrained import apply_init

        print_init = apply_init(model, config.init)
        if progress:
            print(f"initialised from {config.init}: {print_init}")
    if config.init_mean_shape:
        units = crop_to_box_units(train_split.points.numpy(), train_split.crop_size, train_split.context_factor)
        if train_split.complete:
            mean = units.mean(0)
        else:  # each point's mean over the faces that annotate it
            valid = train_split.valid.numpy()[..., None]
            if not valid.any(axis=0).all():
                raise ValueError(f"{train_path}: some points are annotated on no training face: "
                                 f"{np.flatnonzero(~valid.any(axis=0)[:, 0]).tolist()}")
            mean = np.where(valid, units, 0).sum(0) / valid.sum(0)
        init_mean_shape(model, torch.as_tensor(mean, dtype=torch.float32))
    model = model.to(device)
    out_size = model.input_size
    aug = config.augmentation if config.augment else None
    if aug is not None:
        aug.check(train_split.crop_size, train_split.context_factor, out_size)
    loss_fn = build_loss(config.loss, **config.loss_params)
    n = len(train_split)
    # Drop the ragged last batch (when there is more than one): a tiny batch makes a noisy step and BN-free
    # models gain nothing from it; the shuffle changes every epoch so no face is left out for good.
    steps_per_epoch = max(1, n // config.batch_size)
    local_batch = distributed.local_batch_size(ddp, config.batch_size)
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + 1 + ddp.rank)  # rank 0: the single-process stream
    evaluate = Evaluator(val_split, loss_fn, out_size)

    print_ = tqdm.write if progress else (lambda *_: None)
    key = fingerprint(config, [train_path, val_path])
    if ddp.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME
    history: list[dict] = []
    start = 0
    ckpt = read_checkpoint(ckpt_path) if ckpt_path.is_file() else None
    if ckpt is not None:
        if ckpt.get("fingerprint") == key and ckpt["epoch"] <= config.epochs:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            shuffle_gen.set_state(ckpt["shuffle_rng"])
            ranks = ckpt.get("augment_rng_ranks")
            if ranks is not None and len(ranks) == ddp.world_size:
                aug_gen.set_state(ranks[ddp.rank])
            elif ddp.is_main:
                aug_gen.set_state(ckpt["augment_rng"])
            else:
                print(f"rank {ddp.rank}: {ckpt_path} was written by another number of processes; this rank's "
                      "augmentation stream starts afresh", file=sys.stderr)
            torch.set_rng_state(ckpt["torch_rng"])
            history, start = ckpt["history"], ckpt["epoch"]
            print_(f"resuming from {ckpt_path} after epoch {start} of {config.epochs}")
        else:
            print_(f"{ckpt_path} belongs to other params, data or code: starting afresh")

    live = None
    if live_dir is not None and ddp.is_main:
        from dvclive import Live

        # dvcyaml=None: the project's dvc.yaml declares the plots; DVCLive must not rewrite it.
        live = Live(str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=None)
        for row in history:  # replay what the checkpoint knows, so the curves match an uninterrupted run
            _log_row(live, row)

    crops, points = train_split.crops.to(device), train_split.points.to(device)
    # Fully annotated data takes the unmasked path, exactly as before masks existed.
    valid = None if train_split.complete else train_split.valid.to(device)
    plateau = config.schedule == "plateau"
    net = distributed.wrap(ddp, model, device)  # the model itself in one process
    bar = tqdm(range(start, config.epochs), initial=start, total=config.epochs, desc="epochs", disable=not progress,
               mininterval=1.0)
    for epoch in bar:
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=shuffle_gen)
        total, count = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if ddp.enabled:  # this rank's share of the global batch
                idx = idx[ddp.rank * local_batch : (ddp.rank + 1) * local_batch]
            idx = idx.to(device)
            if valid is None:
                images, targets = augment(crops[idx], points[idx], aug, aug_gen, out_size, train_split.context_factor,
                                          mirror=scheme.mirror)
                batch_valid = None
            else:
                images, targets, batch_valid = augment(crops[idx], points[idx], aug, aug_gen, out_size,
                                                       train_split.context_factor, mirror=scheme.mirror,
                                                       valid=valid[idx])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                pred = net(images)
            loss = loss_fn(pred.float(), targets.reshape(len(idx), -1), batch_valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not plateau:
                scheduler.step()
            total += loss.item() * len(idx)
            count += len(idx)
        total, count = distributed.all_sum(ddp, [total, count])
        scores = evaluate(model)
        lr = optimizer.param_groups[0]["lr"]  # the lr this epoch trained with
        if plateau:
            scheduler.step(scores["val/loss"])
        row = {"epoch": epoch + 1, "train/loss": total / count, **scores, "lr": lr,
               "seconds": time.perf_counter() - epoch_start}
        history.append(row)
        rank_streams = distributed.gather(ddp, aug_gen.get_state()) if ddp.enabled else None
        if ddp.is_main:
            state = {
                "fingerprint": key, "epoch": epoch + 1, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "shuffle_rng": shuffle_gen.get_state(), "augment_rng": aug_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
            if rank_streams is not None:
                state["augment_rng_ranks"] = rank_streams
            _save_atomic(state, ckpt_path)
        if live is not None:
            _log_row(live, row)
        bar.set_postfix({"train": f"{row['train/loss']:.4f}", "val": f"{row['val/loss']:.4f}",
                         "val NME io": f"{row['val/nme_interocular']:.4f}"}, refresh=False)
        if on_epoch_end is not None and ddp.is_main:
            on_epoch_end(epoch + 1, row)
    bar.close()

    final = history[-1] if history else evaluate(model)
    config_out = model_config(config, train_split, model)
    config_out.update({"epochs_trained": len(history), "train_minutes": train_minutes(history), "val": {k: v for k, v in final.items() if k.startswith("val/")},
                       "train_faces": n, "val_faces": len(val_split)})
    if ddp.enabled:
        config_out["processes"] = ddp.world_size
    if ddp.is_main:
        save_model(model_path, model, config_out)
    if live is not None:
        live.summary.update({"epochs": len(history), "minutes": train_minutes(history)})
        live.make_summary()
    distributed.barrier(ddp)
    distributed.teardown(ddp)
    return TrainResult(history=history, final=final, resumed_from=start, seconds=time.perf_counter() - started,
                       model=model.cpu().eval())


def train_minutes(history: list[dict]) -> float:
    """Training wall time in minutes summed over epochs (so a resumed run counts its earlier sessions too)."""
    return sum(row["seconds"] for row in history) / 60


def _log_row(live, row: dict) -> None:
    live.step = row["epoch"] - 1
    for name, value in row.items():
        if name not in ("epoch", "seconds"):
            live.log_metric(name, value)
    live.next_step()
