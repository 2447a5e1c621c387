"""Figures of the training stage: augmented samples with their landmarks, and training curves.

Functions return a matplotlib ``Figure`` and, given a path, also save it as PNG; they never call ``plt.show()``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from flmlib.augment import AugmentConfig, box_matrices, photometric, points_to_box_units, sample_params, warp


def _save(fig, path: str | Path | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def augmented_samples_figure(crops: torch.Tensor, points: torch.Tensor, config: AugmentConfig, seed: int = 0,
                             variants: int = 6, out_size: int = 48, context_factor: float = 2.0,
                             path: str | Path | None = None):
    """Rows of faces: the context crop with the sampled virtual boxes outlined, then each augmented network input.

    Args:
        crops: ``(n, 3, S, S)`` uint8 context crops (one row per face); ``points`` ``(n, 68, 2)`` crop pixels.
        config: augmentation strengths (as in training); ``seed`` seeds the draws.
    The outlined boxes show that every sample lies inside the real pixels of the context crop (no padding); the
    dots on the inputs are the transformed landmarks (jaw red, then one colour per region) that the model learns.
    """
    config.check(crops.shape[-1], context_factor, out_size)
    gen = torch.Generator().manual_seed(seed)
    n, size = crops.shape[0], crops.shape[-1]
    fig, axes = plt.subplots(n, variants + 1, figsize=(1.6 * (variants + 1), 1.7 * n), squeeze=False)
    colours = np.array(["tab:red"] * 17 + ["tab:orange"] * 10 + ["tab:green"] * 9 + ["tab:blue"] * 12 + ["tab:purple"] * 20)
    corners = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=torch.float64)
    for row in range(n):
        params = sample_params(variants, config, gen)
        mats = box_matrices(params, size, context_factor)
        batch = crops[row : row + 1].expand(variants, -1, -1, -1)
        images = photometric(warp(batch, mats, out_size), params["brightness"], params["contrast"])
        units = points_to_box_units(points[row : row + 1].expand(variants, -1, -1), mats, params["flip"])
        ax = axes[row, 0]
        ax.imshow(crops[row].permute(1, 2, 0).numpy())
        for k in range(variants):
            outline = corners @ mats[k, :, :2].T + mats[k, :, 2]
            ax.plot(outline[:, 0], outline[:, 1], lw=0.8)
        ax.set_title("context + boxes" if row == 0 else "", fontsize=7)
        for k in range(variants):
            ax = axes[row, k + 1]
            ax.imshow(images[k].permute(1, 2, 0).clamp(0, 255).byte().numpy())
            px = units[k].numpy() * out_size - 0.5  # box units -> input pixel centres
            ax.scatter(px[:, 0], px[:, 1], s=4, c=colours, linewidths=0)
            # Points may fall outside the box (often the chin); keep the axes on the image so they do not grow.
            ax.set_xlim(-0.5, out_size - 0.5), ax.set_ylim(out_size - 0.5, -0.5)
            ax.set_title(f"{np.degrees(float(params['angle'][k])):+.0f}°, x{float(params['scale'][k]):.2f}"
                         f"{', flip' if params['flip'][k] else ''}", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Augmented training inputs (sampled inside the context crop: no padding)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def training_curves_figure(history: list[dict], title: str = "", path: str | Path | None = None):
    """Train/validation loss (log scale) and validation inter-ocular NME per epoch, from a run's history rows."""
    if not history:
        raise ValueError("no history rows to plot")
    epoch = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epoch, [r["train/loss"] for r in history], label="train (augmented)")
    a.plot(epoch, [r["val/loss"] for r in history], label="validation")
    a.set_yscale("log"), a.set_xlabel("epoch"), a.set_ylabel("loss (box units)"), a.legend(fontsize=8)
    for key in sorted(k for k in history[-1] if k.startswith("val/nme_interocular")):
        label = key.replace("val/nme_interocular", "all").replace("all_", "")
        b.plot(epoch, [r.get(key, np.nan) for r in history], label=label)
    b.set_xlabel("epoch"), b.set_ylabel("validation NME (inter-ocular)"), b.legend(fontsize=8)
    b.set_ylim(0, min(0.5, max(r["val/nme_interocular"] for r in history) * 1.05))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
