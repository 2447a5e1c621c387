"""The report's mask gallery: test faces with every mask of :mod:`flmlib.masks` drawn from a method's landmarks.

The masks are drawn on the whole original image (so a face near the border is handled as ``flm mask`` handles it)
and each face is then shown as its context crop, twice the face box, so the gallery shows what a user of
``flm mask`` gets on faces the method never saw.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from flmlib.crops import crop_context
from flmlib.masks import apply_mask, list_masks
from flmlib.plots import new_figure


def mask_gallery(images: Sequence[np.ndarray], points: np.ndarray, boxes: np.ndarray, *, method: str,
                 masks: Sequence[str] | None = None, crop_size: int = 160, context_factor: float = 2.0,
                 title: str | None = None) -> Figure:
    """One row per face (its plain crop, then one crop per mask), masks drawn from ``points``.

    Args:
        images: per face its ``(H, W, 3) uint8`` RGB image.
        points: ``(N, 68, 2)`` the method's landmarks, image pixels (a face with NaN points is shown without masks).
        boxes: ``(N, 4)`` face boxes, image pixels (the crops are cut around them).
        method: the method whose points place the masks (named in the title).
        masks: mask names (default: the whole library).
    """
    names = list(masks) if masks is not None else [name for name, _ in list_masks()]
    n = len(images)
    if points.shape != (n, 68, 2) or boxes.shape != (n, 4):
        raise ValueError(f"{n} images need (N, 68, 2) points and (N, 4) boxes, got {points.shape} and {boxes.shape}")
    fig = new_figure((1.6 * (len(names) + 1), 1.6 * n + 0.5))
    axes = np.asarray(fig.subplots(n, len(names) + 1, squeeze=False))
    for row, (image, pts, box) in enumerate(zip(images, points, boxes)):
        shown = [image] + [apply_mask(image, pts, name) for name in names]
        for col, picture in enumerate(shown):
            ax = axes[row, col]
            ax.imshow(crop_context(picture, box, crop_size, context_factor)[0])
            ax.set_axis_off()
            if row == 0:
                ax.set_title("face" if col == 0 else names[col - 1], fontsize=9)
    fig.suptitle(title or f"Masks placed by {method}'s landmarks", fontsize=10)
    return fig
