"""Batch augmentation of context crops on tensors: one affine warp per face, shared by pixels and points.

Frames (see :mod:`flmlib.crops`): a context crop is ``S x S`` (96) pixels of ``context_factor`` (2) times the face
box, so the box is the central ``S / context_factor`` (48) pixels. Augmentation picks, per face, a *virtual box*
(the box shifted, scaled, rotated and possibly mirrored) inside that context and resamples it to the network's
``out x out`` (48) input with ``affine_grid`` / ``grid_sample``. Landmarks go through the inverse of the same
matrix into the virtual box's **box units** (0 and 1 at its edges), which is what the model regresses.

Because the virtual box is sampled from the context crop, a warp never reaches outside the crop: no padding and no
black corners. :meth:`AugmentConfig.check` rejects strengths for which the worst case would leave the crop.
Without augmentation the output is exactly the central box (with the default sizes: ``crop[24:72, 24:72]``).

Everything runs on the device of the input tensors; the random draws come from a CPU ``torch.Generator`` so that
a seed gives the same augmentation on any device.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from flmlib.landmarks68 import MIRROR

_MIRROR = torch.tensor(MIRROR.tolist())


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; a strength of 0 switches that augmentation off.

    Attributes:
        flip: probability of a horizontal flip (points are renumbered with the 68-point mirror permutation).
        shift: largest shift of the box centre per axis, as a fraction of the box side (uniform in ``[-shift, shift]``).
        scale: the box side is multiplied by ``exp(U(-log(1 + scale), log(1 + scale)))``; >1 shows more context.
        rotate: largest rotation in degrees (uniform in ``[-rotate, rotate]``).
        brightness: largest additive change, as a fraction of 255 (uniform in ``[-brightness, brightness]``).
        contrast: pixels are scaled about the image's mean by a factor uniform in ``[1 - contrast, 1 + contrast]``.
    """

    flip: float = 0.5
    shift: float = 0.05
    scale: float = 0.1
    rotate: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.2

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation: every face is its plain central box."""
        return cls(flip=0.0, shift=0.0, scale=0.0, rotate=0.0, brightness=0.0, contrast=0.0)

    def as_dict(self) -> dict:
        return asdict(self)

    def check(self, crop_size: int, context_factor: float, out_size: int) -> None:
        """Raise ``ValueError`` if a strength is out of range or the worst-case virtual box leaves the crop.

        The outermost sample centres of the output lie ``half = side * (1/2 - 1/(2 out))`` from the virtual box's
        centre; rotated by up to ``rotate`` they reach ``half * (|cos| + |sin|)``; the centre moves by up to
        ``shift * box``. Bilinear sampling stays free of padding while all of that is within ``[0, S - 1]``.
        """
        for name, value in self.as_dict().items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"augmentation strength {name}={value!r} must be a finite number >= 0")
        if self.flip > 1:
            raise ValueError(f"augmentation flip={self.flip} is a probability and must be <= 1")
        if self.contrast >= 1:
            raise ValueError(f"augmentation contrast={self.contrast} must be < 1 (the factor must stay positive)")
        box = crop_size / context_factor
        angle = math.radians(min(self.rotate, 45.0))
        reach = (
            self.shift * box
            + (1 + self.scale) * box * (0.5 - 0.5 / out_size) * (abs(math.cos(angle)) + abs(math.sin(angle)))
        )
        limit = (crop_size - 1) / 2
        if reach > limit + 1e-9:
            raise ValueError(
                f"augmentation shift={self.shift}, scale={self.scale}, rotate={self.rotate} can reach {reach:.2f} px from"
                f" the centre of a {crop_size} px context crop (context_factor {context_factor}), past its {limit:.2f} px"
                " of real pixels: lower them or prepare crops with a larger context_factor"
            )


def sample_params(n: int, config: AugmentConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw one set of augmentation parameters per face (CPU float64 tensors of length ``n``).

    Keys: ``flip`` (bool), ``angle`` (radians), ``scale`` (box side factor), ``shift_x``/``shift_y`` (box sides),
    ``brightness`` (fraction of 255), ``contrast`` (factor). The number of draws does not depend on the strengths,
    so switching one augmentation off does not change the others' random sequence.
    """
    u = torch.rand((7, n), generator=generator, dtype=torch.float64)
    log_scale = math.log1p(config.scale)
    return {
        "flip": u[0] < config.flip,
        "angle": (2 * u[1] - 1) * math.radians(config.rotate),
        "scale": torch.exp((2 * u[2] - 1) * log_scale),
        "shift_x": (2 * u[3] - 1) * config.shift,
        "shift_y": (2 * u[4] - 1) * config.shift,
        "brightness": (2 * u[5] - 1) * config.brightness,
        "contrast": 1 + (2 * u[6] - 1) * config.contrast,
    }


def identity_params(n: int) -> dict[str, torch.Tensor]:
    """Parameters of no augmentation (the plain central box) for ``n`` faces."""
    zeros = torch.zeros(n, dtype=torch.float64)
    return {"flip": torch.zeros(n, dtype=torch.bool), "angle": zeros, "scale": zeros + 1, "shift_x": zeros,
            "shift_y": zeros, "brightness": zeros, "contrast": zeros + 1}


def box_matrices(params: dict[str, torch.Tensor], crop_size: int, context_factor: float) -> torch.Tensor:
    """``(n, 2, 3) float64`` affine maps from the virtual box's units to context-crop pixels.

    ``x = L u + t`` with ``L = side * R(angle) * diag(-1 if flip else 1, 1)``; with no augmentation ``u = 0`` and
    ``u = 1`` land on the box edges of :func:`flmlib.crops.crop_to_box_units`.
    """
    box = crop_size / context_factor
    centre = (crop_size - 1) / 2
    side = box * params["scale"]
    cos, sin = torch.cos(params["angle"]), torch.sin(params["angle"])
    fx = torch.where(params["flip"], -1.0, 1.0).to(torch.float64)
    lin = torch.stack([torch.stack([cos * fx, -sin], -1), torch.stack([sin * fx, cos], -1)], -2) * side[:, None, None]
    # Flipping maps u_x -> 1 - u_x, so the box's own centre (u = 1/2) stays put and only the axis turns round.
    centre_px = torch.stack([centre + params["shift_x"] * box, centre + params["shift_y"] * box], -1)
    trans = centre_px - lin @ torch.full((2,), 0.5, dtype=torch.float64)
    return torch.cat([lin, trans[:, :, None]], -1)


def warp(crops: torch.Tensor, matrices: torch.Tensor, out_size: int) -> torch.Tensor:
    """Resample virtual boxes from context crops.

    Args:
        crops: ``(n, 3, S, S)`` uint8 or float pixels 0..255.
        matrices: ``(n, 2, 3)`` box units -> crop pixels (:func:`box_matrices`).
    Returns:
        ``(n, 3, out_size, out_size) float32`` pixels 0..255 on the crops' device. Output pixel ``j`` samples box
        unit ``(j + 1/2) / out_size`` (pixel centres), bilinearly.
    """
    size = crops.shape[-1]
    if crops.shape[-2] != size:
        raise ValueError(f"context crops must be square, got {tuple(crops.shape)}")
    lin, trans = matrices[:, :, :2], matrices[:, :, 2]
    # Normalised coordinates (align_corners=False): output g_o -> u = (g_o + 1) / 2; crop pixel x -> (2x + 1)/S - 1.
    theta = torch.cat([lin / size, ((lin.sum(-1) + 2 * trans + 1) / size - 1)[:, :, None]], -1)
    theta = theta.to(device=crops.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [crops.shape[0], 3, out_size, out_size], align_corners=False)
    return F.grid_sample(crops.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _mirror_of(mirror, n_points: int, device) -> torch.Tensor:
    """The flip permutation as a tensor: ``mirror`` (a point scheme's ``(P,)`` indices) or the 68-point one."""
    if mirror is None:
        mirror = _MIRROR
    if not isinstance(mirror, torch.Tensor):
        mirror = torch.from_numpy(np.array(mirror, dtype=np.int64))  # a copy: scheme tables are read-only arrays
    if mirror.shape != (n_points,):
        raise ValueError(f"the flip permutation has {tuple(mirror.shape)} entries for {n_points} points")
    return mirror.to(device)


def points_to_box_units(points: torch.Tensor, matrices: torch.Tensor, flip: torch.Tensor,
                        mirror: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Crop-pixel landmarks ``(n, P, 2)`` -> virtual-box units ``(n, P, 2) float32``, renumbered where flipped
    (``mirror``: the point scheme's flip permutation, default the 68-point one)."""
    inv = torch.linalg.inv(matrices[:, :, :2])
    units = (points.to(torch.float64) - matrices[:, None, :, 2].to(points.device)) @ inv.transpose(1, 2).to(points.device)
    perm = _mirror_of(mirror, points.shape[1], points.device)
    units = torch.where(flip.to(points.device)[:, None, None], units[:, perm], units)
    return units.to(torch.float32)


def flip_valid(valid: torch.Tensor, flip: torch.Tensor, mirror: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Renumber ``(n, P)`` bool point-validity masks of the flipped faces, exactly as their points are renumbered."""
    perm = _mirror_of(mirror, valid.shape[1], valid.device)
    return torch.where(flip.to(valid.device)[:, None], valid[:, perm], valid)


def photometric(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Contrast about each image's mean, then an additive brightness; clipped to 0..255. ``(n, 3, h, w)`` float."""
    c = contrast.to(images.device, images.dtype)[:, None, None, None]
    b = brightness.to(images.device, images.dtype)[:, None, None, None] * 255
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * c + mean + b).clamp_(0, 255)


def augment(
    crops: torch.Tensor,
    points: torch.Tensor,
    config: AugmentConfig | None,
    generator: torch.Generator | None = None,
    out_size: int = 48,
    context_factor: float = 2.0,
    *,
    mirror: np.ndarray | torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Augment (or, with ``config=None``, just cut the central box of) a batch of context crops.

    Args:
        crops: ``(n, 3, S, S)`` uint8/float RGB context crops.
        points: ``(n, P, 2)`` landmarks in 0-based pixels of the crop (P = 68 unless ``mirror`` says otherwise).
        config: strengths; ``None`` (evaluation) gives exactly the central box.
        generator: CPU generator for the draws (required when ``config`` is given).
        mirror: the point scheme's ``(P,)`` flip permutation (:class:`flmlib.point_schemes.PointScheme`); default
            the 68-point one.
        valid: optional ``(n, P)`` bool mask of annotated points; it is renumbered with the points under a flip.
    Returns:
        images ``(n, 3, out_size, out_size) float32`` 0..255 and targets ``(n, P, 2) float32`` in box units of the
        virtual box, both on the crops' device; with ``valid`` given, also the ``(n, P)`` mask of the targets.
        (Missing points may hold any finite placeholder: they are transformed like the others and then ignored.)
    """
    n, size = crops.shape[0], crops.shape[-1]
    n_points = 68 if mirror is None else len(mirror)
    if points.shape != (n, n_points, 2):
        raise ValueError(f"points must be ({n}, {n_points}, 2) crop pixels, got {tuple(points.shape)}")
    if valid is not None and tuple(valid.shape) != (n, n_points):
        raise ValueError(f"valid must be ({n}, {n_points}) bool, got {tuple(valid.shape)}")
    if config is None:
        params = identity_params(n)
    else:
        if generator is None:
            raise ValueError("augment() needs a torch.Generator when a config is given")
        config.check(size, context_factor, out_size)
        params = sample_params(n, config, generator)
    matrices = box_matrices(params, size, context_factor)
    images = warp(crops, matrices, out_size)
    if config is not None and (config.brightness > 0 or config.contrast > 0):
        images = photometric(images, params["brightness"], params["contrast"])
    targets = points_to_box_units(points.to(crops.device), matrices, params["flip"], mirror)
    if valid is None:
        return images, targets
    return images, targets, flip_valid(valid.to(crops.device), params["flip"], mirror)


def central_box(crops: torch.Tensor, out_size: int = 48, context_factor: float = 2.0) -> torch.Tensor:
    """Inference input: the plain face box of each context crop ``(n, 3, S, S)`` -> ``(n, 3, out, out)`` float 0..255.

    The same pixels as ``augment(crops, points, None)`` gives in training and validation.
    """
    return warp(crops, box_matrices(identity_params(crops.shape[0]), crops.shape[-1], context_factor), out_size)


def hflip(images: torch.Tensor, units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror network inputs ``(n, 3, h, w)`` and their box-unit landmarks ``(n, 68, 2)`` left-right."""
    mirror = _MIRROR.to(units.device)
    flipped = units[:, mirror].clone()
    flipped[..., 0] = 1 - flipped[..., 0]
    return images.flip(-1), flipped
