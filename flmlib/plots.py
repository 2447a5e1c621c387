"""Figure builders for the study: CED curves, per-region errors, example and worst faces, crop contact sheets.

Every function *returns* a :class:`matplotlib.figure.Figure` and never calls ``plt.show``. Each figure is detached
from pyplot's registry as soon as it is made, so nothing leaks in loops and a notebook shows it exactly once, when
it is a cell's last value or passed to ``display(fig)``; save it with ``fig.savefig(path)``.

Point conventions follow :mod:`flmlib.crops`: crops are ``(N, S, S, 3) uint8`` RGB; points are ``(N, 68, 2)`` in
0-based pixels of the crop (pixel centres at integers, which is where ``imshow`` puts them). Functions that take
``boxes`` accept points in *image* pixels instead and map them onto the context crop.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from flmlib import metrics as M
from flmlib.crops import apply_affine, context_matrix

GT_STYLE = {"color": "#00e676", "marker": "o", "s": 7, "label": "ground truth"}
_MARKERS = ("x", "+", "^", "s", "v", "D")


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A constrained-layout figure that pyplot does not track.

    Made through pyplot (so the notebook backend registers its figure display) and closed at once: the inline
    backend then neither auto-shows it at the end of the cell (no duplicates) nor keeps it alive.
    """
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def method_styles(methods: Sequence[str]) -> dict[str, dict]:
    """A fixed colour and marker per method (colour-blind palette); assigned in sorted order so every figure agrees."""
    # colorblind[2] is green, too close to the ground-truth colour on faces, and [3] (vermillion) too close to [1]
    # (orange) in a line plot; both come last.
    palette = sns.color_palette("colorblind", 10)
    colours = [palette[i] for i in (0, 1, 4, 7, 9, 5, 8, 6, 3)]
    return {m: {"color": colours[i % len(colours)], "marker": _MARKERS[i % len(_MARKERS)]} for i, m in enumerate(sorted(methods))}


def _one_test_set(frame: pd.DataFrame, test_set: str | None) -> tuple[pd.DataFrame, str | None]:
    if "test_set" not in frame.columns:
        return frame, test_set
    if test_set is not None:
        sub = frame[frame.test_set == test_set]
        if sub.empty:
            raise ValueError(f"no rows for test set {test_set!r}; have {sorted(frame.test_set.unique())}")
        return sub, test_set
    names = frame.test_set.unique()
    if len(names) != 1:
        raise ValueError(f"frame holds test sets {sorted(names)}; pass test_set= to choose one")
    return frame, names[0]


def ced_steps(errors: np.ndarray, max_error: float) -> tuple[np.ndarray, np.ndarray]:
    """Corner points of the CED step function on ``[0, max_error]``, to be drawn with ``drawstyle="steps-post"``.

    Returns ``(x, y)`` float64 arrays: x the distinct errors (plus 0 and ``max_error``), y :func:`metrics.ced` at x.
    """
    errors = np.asarray(errors, np.float64)
    x = np.unique(np.concatenate([[0.0], errors[(errors > 0) & (errors < max_error)], [max_error]]))
    return x, M.ced(errors, x)


def ced_figure(
    errors: pd.DataFrame,
    error: str = M.PRIMARY_ERROR,
    threshold: float = M.THRESHOLDS[0],
    *,
    test_set: str | None = None,
    max_error: float | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (5.5, 4.0),
) -> Figure:
    """CED of every method on one test set, with each method's AUC@threshold in the legend.

    Args:
        errors: tidy per-face frame (``method``, the ``error`` column, optionally ``test_set``).
        error: error column; its normaliser names the x axis (:data:`metrics.ERROR_LABELS`).
        threshold: AUC cut-off and, unless ``max_error`` is given, the x-axis limit (0.08 by default).
        test_set: which test set to draw when the frame holds several.
    Returns:
        Figure with one step line per method.
    """
    frame, test_set = _one_test_set(errors, test_set)
    max_error = threshold if max_error is None else max_error
    methods = list(dict.fromkeys(frame.method))
    styles = method_styles(methods)
    key = M.threshold_key(threshold)
    parts, palette = [], {}
    for method in methods:
        e = frame.loc[frame.method == method, error].to_numpy()
        label = f"{method} (AUC@{key} = {M.auc(e, threshold):.3f}, n = {e.size})"
        x, y = ced_steps(e, max_error)
        parts.append(pd.DataFrame({"error": x, "fraction": y, "method": label}))
        palette[label] = styles[method]["color"]
    fig = new_figure(figsize)
    ax = fig.subplots()
    sns.lineplot(data=pd.concat(parts, ignore_index=True), x="error", y="fraction", hue="method", palette=palette,
                 estimator=None, sort=False, drawstyle="steps-post", ax=ax)
    ax.set(xlim=(0, max_error), ylim=(0, 1.0), xlabel=M.ERROR_LABELS.get(error, error), ylabel="fraction of faces")
    ax.grid(alpha=0.3)
    # Below the axes: inside, some test set's curves always run through the legend (dlib's on 300-W, upper left).
    ax.legend(title=None, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, fontsize=8)
    ax.set_title(title or f"CED on {test_set or 'test set'} ({error})")
    return fig


def region_figure(
    regions: pd.DataFrame,
    normaliser_label: str,
    *,
    errorbar=("ci", 95),
    seed: int = 0,
    figsize_per_panel: tuple[float, float] = (5.0, 3.5),
) -> Figure:
    """Mean error per face region and method, one panel per test set.

    Args:
        regions: tidy per-face frame with columns ``method``, ``region``, ``error`` (and ``test_set``), e.g. from
            :func:`metrics.regions_frame`.
        normaliser_label: names the normaliser on the y axis (e.g. ``"inter-ocular distance"``).
        errorbar: seaborn error bars over faces (default a seeded bootstrap 95% CI of the mean).
    """
    test_sets = list(dict.fromkeys(regions.test_set)) if "test_set" in regions.columns else [None]
    methods = list(dict.fromkeys(regions.method))
    palette = {m: s["color"] for m, s in method_styles(methods).items()}
    w, h = figsize_per_panel
    fig = new_figure((w * len(test_sets), h))
    axes = np.atleast_1d(fig.subplots(1, len(test_sets), sharey=True, squeeze=False)[0])
    for ax, test_set in zip(axes, test_sets):
        sub = regions if test_set is None else regions[regions.test_set == test_set]
        sns.barplot(data=sub, x="region", y="error", hue="method", hue_order=methods, palette=palette,
                    errorbar=errorbar, seed=seed, ax=ax)
        ax.set(xlabel="", ylabel=f"mean point error / {normaliser_label}")
        ax.set_title(test_set or "")
        ax.grid(axis="y", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(methods), frameon=False)
    return fig


def image_points_to_crop(points: np.ndarray, boxes: np.ndarray, crop_size: int, context_factor: float) -> np.ndarray:
    """Image pixels ``(N, 68, 2)`` -> pixels of each face's context crop ``(N, 68, 2)`` float64, given boxes ``(N, 4)``."""
    points = np.asarray(points, np.float64)
    return np.stack([apply_affine(p, context_matrix(b, crop_size, context_factor)) for p, b in zip(points, boxes)])


def _to_crop(points, boxes, crop_size, context_factor):
    return np.asarray(points, np.float64) if boxes is None else image_points_to_crop(points, boxes, crop_size, context_factor)


def _draw_face(ax, crop, gt, preds: Mapping[str, np.ndarray], styles: Mapping[str, dict], title: str | None):
    ax.imshow(crop)
    if gt is not None:
        ax.scatter(gt[:, 0], gt[:, 1], c=GT_STYLE["color"], marker=GT_STYLE["marker"], s=GT_STYLE["s"], linewidths=0)
    for method, p in preds.items():
        ax.scatter(p[:, 0], p[:, 1], color=styles[method]["color"], marker=styles[method]["marker"], s=10, linewidths=0.9)
    ax.set_xlim(-0.5, crop.shape[1] - 0.5)
    ax.set_ylim(crop.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=7)


def _legend_handles(methods: Sequence[str], styles: Mapping[str, dict], with_gt: bool = True) -> list[Line2D]:
    handles = [Line2D([], [], linestyle="", marker=GT_STYLE["marker"], color=GT_STYLE["color"], label=GT_STYLE["label"])] if with_gt else []
    handles += [Line2D([], [], linestyle="", marker=styles[m]["marker"], color=styles[m]["color"], label=m) for m in methods]
    return handles


def _grid(n: int, ncols: int, tile: float, extra_h: float = 0.4) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = new_figure((tile * ncols, tile * nrows + extra_h))
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes


def _check_faces(crops: np.ndarray, *point_sets: np.ndarray) -> None:
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops have shape {crops.shape}; expected (N, S, S, 3) uint8")
    for pts in point_sets:
        if np.shape(pts) != (len(crops), 68, 2):
            raise ValueError(f"points have shape {np.shape(pts)}; expected ({len(crops)}, 68, 2) to match the crops")


def _title_and_legend(fig: Figure, title: str | None, handles: list) -> None:
    """A figure title above the faces and the shared legend in a row below them, both outside the axes (a legend at
    the top shares the space above the axes with the title, and constrained layout drew one over the other)."""
    if title:
        fig.suptitle(title)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)


def example_grid(
    crops: np.ndarray,
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    boxes: np.ndarray | None = None,
    context_factor: float = 2.0,
    tile: float = 2.3,
    title: str | None = None,
) -> Figure:
    """A grid of faces: each crop with the ground truth and every method's prediction, and one shared legend
    (under ``title``, when given: constrained layout stacks the two so neither covers the other).

    Args:
        crops: ``(N, S, S, 3) uint8`` context crops.
        gt: ``(N, 68, 2)`` ground truth; preds: method -> ``(N, 68, 2)``. Crop pixels, or image pixels when
            ``boxes`` ``(N, 4)`` (the crops' detection boxes) are given together with the crops' ``context_factor``.
        titles: ``(N,)`` captions (e.g. face ids).
    """
    _check_faces(crops, gt, *preds.values())
    size = crops.shape[1]
    gt_c = _to_crop(gt, boxes, size, context_factor)
    preds_c = {m: _to_crop(p, boxes, size, context_factor) for m, p in preds.items()}
    styles = method_styles(list(preds))
    fig, axes = _grid(len(crops), ncols, tile)
    for i in range(len(crops)):
        _draw_face(axes[i], crops[i], gt_c[i], {m: p[i] for m, p in preds_c.items()}, styles,
                   None if titles is None else str(titles[i]))
    _title_and_legend(fig, title, _legend_handles(list(preds), styles))
    return fig


def worst_faces_figure(
    crops: np.ndarray,
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    errors: Mapping[str, np.ndarray],
    *,
    k: int = 6,
    error: str = M.PRIMARY_ERROR,
    face_ids: Sequence[str] | None = None,
    boxes: np.ndarray | None = None,
    context_factor: float = 2.0,
    tile: float = 2.3,
    title: str | None = None,
) -> Figure:
    """The ``k`` faces with the largest error for each method: one row per method, worst first. A face the method
    could not place (error inf) is captioned "not placed".

    Each tile shows the ground truth and *every* method's prediction (so one method's failure can be compared with
    the other's result on the same face); the caption gives the row method's error and the face id.

    Args:
        crops, gt, preds, boxes, context_factor: as in :func:`example_grid`.
        errors: method -> ``(N,)`` per-face errors of the ``error`` kind (its name is in the captions).
    """
    _check_faces(crops, gt, *preds.values())
    methods = list(errors)
    size = crops.shape[1]
    gt_c = _to_crop(gt, boxes, size, context_factor)
    preds_c = {m: _to_crop(p, boxes, size, context_factor) for m, p in preds.items()}
    styles = method_styles(list(preds))
    k = min(k, len(crops))
    fig = new_figure((tile * k, tile * len(methods) + 0.4))
    axes = np.asarray(fig.subplots(len(methods), k, squeeze=False))
    for row, method in enumerate(methods):
        e = np.asarray(errors[method], np.float64)
        if e.shape != (len(crops),):
            raise ValueError(f"errors[{method!r}] has shape {e.shape}; expected ({len(crops)},)")
        order = np.argsort(-np.nan_to_num(e, posinf=np.finfo(float).max), kind="stable")[:k]
        for col, i in enumerate(order):
            caption = f"{method} #{col + 1}: " + (f"{error} {e[i]:.3f}" if np.isfinite(e[i]) else "not placed")
            if face_ids is not None:
                caption += f"\n{face_ids[i]}"
            _draw_face(axes[row, col], crops[i], gt_c[i], {m: p[i] for m, p in preds_c.items()}, styles, caption)
    _title_and_legend(fig, title, _legend_handles(list(preds), styles))
    return fig


def contact_sheet(
    crops: np.ndarray,
    points: np.ndarray,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    context_factor: float | None = None,
    tile: float = 1.5,
) -> Figure:
    """Crops with their landmarks, to eyeball a prepared data set.

    Args:
        crops: ``(N, S, S, 3) uint8`` context crops.
        points: ``(N, 68, 2)`` landmarks in crop pixels.
        titles: ``(N,)`` captions.
        context_factor: when given, the detection box (the central ``S / context_factor`` square) is outlined.
    """
    _check_faces(crops, points)
    fig, axes = _grid(len(crops), ncols, tile, extra_h=0.0)
    size = crops.shape[1]
    for i in range(len(crops)):
        _draw_face(axes[i], crops[i], np.asarray(points[i]), {}, {}, None if titles is None else str(titles[i]))
        if context_factor:
            inner = size / context_factor
            edge = (size - inner) / 2 - 0.5
            axes[i].add_patch(Rectangle((edge, edge), inner, inner, fill=False, edgecolor="yellow", linewidth=0.6))
    return fig


def accuracy_speed_figure(detail: Mapping, speed: Mapping, test_sets: Sequence[str], methods: Sequence[str], *,
                          auc_key: str = f"{M.PRIMARY_ERROR}/auc@{M.threshold_key(M.THRESHOLDS[0])}",
                          mode: str = "batched", reference: str | None = None) -> Figure:
    """Accuracy against speed, one panel per test set: a point per method at (ms per face, AUC), with the AUC's
    bootstrap 95% interval as a vertical bar; the x axis is logarithmic (faster to the left).

    Args:
        detail: ``reports/metrics_detail.json``; speed: ``reports/speed.json`` (:mod:`flmlib.speed`).
        mode: ``batched`` or ``single`` (which speed column is the x axis).
        reference: drawn as a dashed horizontal line at its AUC in each panel.
    """
    timed = {m: v for m, v in speed.get("methods", {}).items() if mode in v}
    shown = [m for m in methods if m in timed]
    if not shown:
        raise ValueError(f"no method of {list(methods)} has a {mode!r} time in the speed results")
    styles = method_styles(methods)
    fig = new_figure((4.2 * len(test_sets), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(test_sets), sharex=True))
    for ax, test_set in zip(axes, test_sets):
        entry = detail[test_set]["all"]["methods"]
        for method in shown:
            values = entry.get(method, {})
            if values.get(auc_key) is None:
                continue
            x, y = timed[method][mode]["ms_per_face"], values[auc_key]
            lo, hi = values.get(f"{auc_key}/ci95_lo", y), values.get(f"{auc_key}/ci95_hi", y)
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt=styles[method]["marker"], color=styles[method]["color"],
                        capsize=2, markersize=6, label=method)
            ax.annotate(method, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if reference in entry and entry[reference].get(auc_key) is not None:
            ax.axhline(entry[reference][auc_key], color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        # Plain labels at fixed steps: matplotlib's minor labels of a short log axis overlap at this width.
        ax.xaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(test_set, fontsize=10)
        ax.set_xlabel(f"ms per face ({mode}, log scale)")
        ax.grid(True, alpha=0.3, which="both")
    axes[0].set_ylabel(auc_key.replace("/", " "))
    handles = [Line2D([], [], linestyle="", marker=styles[m]["marker"], color=styles[m]["color"], label=m) for m in shown]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    return fig
