"""Pictures of the analyses, drawn headless with matplotlib's Agg canvas.

Every function draws one PNG of a known size (the figure size times the dpi: no tight
bounding box) and returns a `Picture` with its path and pixel size. No pyplot state is
touched, so the functions are safe in servers, threads and tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from adt_tf.analysis.curvature import CurvatureResult
from adt_tf.analysis.lambda_study import LambdaPoint
from adt_tf.analysis.landscape import LandscapeResult
from adt_tf.core import checks

LANDSCAPE_KINDS = ("contour", "surface")
EXP_COLOR, PGD_COLOR = "tab:red", "tab:blue"


class Picture(NamedTuple):
    """A written PNG: its path and size in pixels."""

    path: str
    width: int
    height: int


def _figure(width_in: float, height_in: float, dpi: int) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str) -> Picture:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, format="png")
    width, height = (int(round(v)) for v in fig.get_size_inches() * fig.dpi)
    return Picture(path, width, height)


def plot_diversity(projections: Sequence[tuple[np.ndarray, np.ndarray]], path: str, *,
                   titles: Sequence[str] | None = None, columns: int = 4,
                   panel_inches: float = 2.5, dpi: int = 100, suptitle: str = "") -> Picture:
    """A grid of scatter plots: per input, the EXP samples and the PGD examples in the plane
    of the first two principal components of their union (paper Fig. 1).

    Args:
        projections: per input, (exp [n, 2], pgd [n, 2]).
        path: the PNG to write.
        titles: a title per panel (e.g. the average pairwise distances).
        columns: panels per row.
        panel_inches, dpi: each panel is panel_inches square at this dpi.
        suptitle: a title over the grid.
    """
    count = checks.check_positive_int(len(projections), "the number of projections")
    columns = min(checks.check_positive_int(columns, "columns"), count)
    rows = math.ceil(count / columns)
    fig = _figure(columns * panel_inches, rows * panel_inches + 0.4, dpi)
    for i, (exp, pgd) in enumerate(projections):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.scatter(exp[:, 0], exp[:, 1], s=14, c=EXP_COLOR, marker="o", label="EXP", alpha=0.8)
        ax.scatter(pgd[:, 0], pgd[:, 1], s=18, c=PGD_COLOR, marker="x", label="PGD", alpha=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
        if i == 0:
            ax.legend(fontsize=6, loc="best")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (rows * panel_inches + 0.4)))
    return _save(fig, path)


def plot_landscapes(results: Mapping[str, LandscapeResult], path: str, *,
                    kind: str = "contour", inputs: int | None = None,
                    panel_inches: float = 3.0, dpi: int = 100) -> Picture:
    """Loss landscapes side by side: one column per model, one row per input (Fig. 2a-e).

    Args:
        results: model name -> its `LandscapeResult` (grids over the same inputs).
        path: the PNG to write.
        kind: "contour" (filled contours) or "surface" (3-D surfaces).
        inputs: rows to draw (default: every input of the smallest result).
        panel_inches, dpi: each panel is panel_inches square at this dpi.
    """
    checks.check_choice(kind, "landscape plot kind", LANDSCAPE_KINDS)
    names = list(results)
    checks.check_positive_int(len(names), "the number of models")
    available = min(r.losses.shape[0] for r in results.values())
    rows = available if inputs is None else min(
        checks.check_positive_int(inputs, "inputs"), available)
    fig = _figure(len(names) * panel_inches, rows * panel_inches, dpi)
    # One colour scale per input row, so models are compared on the same scale.
    for row in range(rows):
        vmax = max(float(results[n].losses[row].max()) for n in names)
        vmin = min(float(results[n].losses[row].min()) for n in names)
        for col, name in enumerate(names):
            result = results[name]
            a, b = np.meshgrid(result.coords, result.coords, indexing="ij")
            z = result.losses[row]
            index = row * len(names) + col + 1
            if kind == "surface":
                ax = fig.add_subplot(rows, len(names), index, projection="3d")
                ax.plot_surface(a, b, z, cmap="viridis", vmin=vmin, vmax=vmax, linewidth=0)
                ax.set_zlim(vmin, vmax)
                ax.set_zlabel("loss", fontsize=7)
            else:
                ax = fig.add_subplot(rows, len(names), index)
                levels = np.linspace(vmin, vmax if vmax > vmin else vmin + 1e-6, 16)
                filled = ax.contourf(a, b, z, levels=levels, cmap="viridis")
                ax.plot([0], [0], "w+", markersize=8)
                bar = fig.colorbar(filled, ax=ax, fraction=0.046, pad=0.04)
                bar.ax.tick_params(labelsize=6)
            ax.set_xlabel("gradient sign (x eps)", fontsize=7)
            ax.set_ylabel("random sign (x eps)", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_title(f"{name} (input {row})" if rows > 1 else name, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_curvature(results: Mapping[str, CurvatureResult], path: str, *, dpi: int = 100
                   ) -> Picture:
    """Bar chart of the mean dominant input-Hessian eigenvalue per model, with its standard
    deviation over the inputs as error bars (Fig. 2f)."""
    names = list(results)
    checks.check_positive_int(len(names), "the number of models")
    means = [results[n].mean for n in names]
    stds = [results[n].std for n in names]
    fig = _figure(max(4.0, 1.2 * len(names) + 1.5), 4.0, dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("dominant Hessian eigenvalue")
    count = results[names[0]].eigenvalues.size
    ax.set_title(f"Input-space curvature (mean +- std over {count} inputs)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_lambda_study(points: Sequence[LambdaPoint], path: str, *, dpi: int = 100
                      ) -> Picture:
    """Robust (and clean) accuracy and mean entropy against lambda, side by side (Fig. 5).

    The lambda axis is categorical (one tick per distinct value, in increasing order), so
    lambda = 0 has a place; each point is drawn and a line joins the means per lambda.
    """
    checks.check_positive_int(len(points), "the number of lambda points")
    lams = sorted({p.lam for p in points})
    where = {lam: i for i, lam in enumerate(lams)}
    fig = _figure(10.0, 4.0, dpi)
    acc_ax, ent_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)

    def series(ax, getter, label, style):
        xs = [where[p.lam] for p in points if getter(p) is not None]
        ys = [getter(p) for p in points if getter(p) is not None]
        if not ys:
            return
        lines = ax.plot(xs, ys, style, alpha=0.5)
        means = [(where[lam], np.mean([v for x, v in zip(xs, ys) if x == where[lam]]))
                 for lam in lams if where[lam] in xs]
        ax.plot([m[0] for m in means], [m[1] for m in means], "-", color=lines[0].get_color(),
                label=label)

    series(acc_ax, lambda p: None if p.clean_accuracy is None else 100 * p.clean_accuracy,
           "clean", "o")
    attacks = list(dict.fromkeys(a for p in points for a in p.robust_accuracy))
    for attack in attacks:
        series(acc_ax, lambda p, a=attack: (100 * p.robust_accuracy[a]
                                            if a in p.robust_accuracy else None), attack, "s")
    series(ent_ax, lambda p: p.entropy, "mean entropy", "o")
    for ax, ylabel in ((acc_ax, "accuracy (%)"), (ent_ax, "mean entropy (per dimension)")):
        ax.set_xticks(range(len(lams)))
        ax.set_xticklabels([f"{lam:g}" for lam in lams])
        ax.set_xlim(-0.5, len(lams) - 0.5)
        ax.set_xlabel("entropy weight lambda")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7)
    acc_ax.set_title("Accuracy against lambda", fontsize=9)
    ent_ax.set_title("Entropy of the adversarial distributions", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["LANDSCAPE_KINDS", "Picture", "plot_curvature", "plot_diversity",
           "plot_lambda_study", "plot_landscapes"]
