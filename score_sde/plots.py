"""Pictures written as PNG: sample grids with torchvision; scatter and log-log plots with matplotlib, the
optional `plots` extra, imported only when a plot is drawn."""
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision

if TYPE_CHECKING:  # for the annotations only: matplotlib is imported when a plot is drawn
    from matplotlib.figure import Figure

PLOTS_EXTRA = "pip install -e '.[plots]'"  # what installs matplotlib
NO_PLOT = f"drew no plot: matplotlib is not installed ({PLOTS_EXTRA})"  # what a benchmark says without it
DPI = 100  # sizes are given in pixels: a figure of w × h pixels is w / DPI × h / DPI inches
# Scatter colours by set: the first set, the data where there is one, in grey beneath the samples' colours.
SCATTER_COLOURS = ("0.35", "C0", "C3", "C2", "C4")


def have_matplotlib() -> bool:
    """Whether matplotlib, which scatter_png and loglog_png draw with, can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _new_figure(num_panels, panel_size, **subplots):
    """(figure, axes): num_panels axes side by side, each panel_size (width, height) pixels of the figure."""
    if not have_matplotlib():
        raise ImportError(f"plotting needs matplotlib, which is not installed: {PLOTS_EXTRA}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = panel_size
    figure = Figure(figsize=(width * num_panels / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # drawn by Agg without pyplot: no global backend, no open figures to close
    return figure, figure.subplots(1, num_panels, squeeze=False, **subplots)[0]


def scatter_png(path: str | os.PathLike, point_sets: dict, size: int = 480, extent: float = 10.0) -> "Figure":
    """Scatter plots of named sets of points, one panel per set, side by side on the same axes.

    Args:
        path: where the PNG goes.
        point_sets: {name: points [N, D ≥ 2]}; each panel shows the first two coordinates (for D > 2, a
            projection), and its legend names the set.
        size: the width and height of one panel in pixels; the image is (size · len(point_sets), size).
        extent: both axes span [-extent, extent]; points beyond it are drawn on the frame.
    Returns:
        the matplotlib Figure, already written.
    """
    figure, axes = _new_figure(len(point_sets), (size, size), sharex=True, sharey=True)
    ticks = [extent * f for f in (-1, -0.5, 0, 0.5, 1)]
    for k, (ax, (name, points)) in enumerate(zip(axes, point_sets.items())):
        # clamped, not clipped: samples that diverged still show, on the frame
        xy = points[:, :2].detach().cpu().double().clamp(-extent, extent).numpy()
        ax.scatter(xy[:, 0], xy[:, 1], s=2, linewidths=0, color=SCATTER_COLOURS[k % len(SCATTER_COLOURS)],
                   label=name, clip_on=False)
        ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xticks=ticks, yticks=ticks, aspect="equal",
               xlabel="$x_1$")
        ax.legend(loc="upper left", markerscale=4)
    axes[0].set_ylabel("$x_2$")
    figure.get_layout_engine().set(wspace=0.06)  # room between the labels of ±extent on neighbouring panels
    figure.savefig(path)
    return figure


def replot(results_path: str | os.PathLike, png_path: str | os.PathLike,
           draw: Callable[[dict, str | os.PathLike], object]) -> None:
    """A benchmark's figure redrawn from its saved results JSON, without running it again: draw(results,
    png_path) with the parsed JSON. SystemExit naming the extra without matplotlib."""
    if not have_matplotlib():
        raise SystemExit(f"cannot replot: {NO_PLOT}")
    draw(json.loads(Path(results_path).read_text()), png_path)
    print(f"{results_path} -> {png_path}")


def image_grid_png(path: str | os.PathLike, images: torch.Tensor, nrow: int | None = None) -> None:
    """A grid of images [B, C, H, W] with values in [0, 1], nrow to a row (default: square-ish)."""
    nrow = nrow or max(1, int(len(images) ** 0.5))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(images.detach().cpu().float().clamp(0, 1), path, nrow=nrow, padding=2)


def save_samples_png(path: str | os.PathLike, samples: torch.Tensor, reference: torch.Tensor | None = None
                     ) -> None:
    """Image grid for images [B, C, H, W]; for points [B, D] a scatter plot of their first two coordinates,
    next to `reference` points when given. Without matplotlib, points are not drawn: one printed line says so
    (a run is not stopped for want of a picture)."""
    if samples.ndim != 2:
        image_grid_png(path, samples)
    elif not have_matplotlib():
        print(f"drew no scatter plot at {path}: matplotlib is not installed ({PLOTS_EXTRA})")
    else:
        sets = {"data": reference, "samples": samples} if reference is not None else {"samples": samples}
        scatter_png(path, sets)


def _positive_points(xs, ys):
    """The (xs, ys) pairs with both coordinates positive and finite: the points a log-log plot can place."""
    kept = [(x, y) for x, y in zip(xs, ys) if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
    return [x for x, _ in kept], [y for _, y in kept]


def loglog_png(path: str | os.PathLike, panels: dict, panel_size: tuple[int, int] = (440, 340),
               xlabel: str = "", ylabel: str = "", xticks: Sequence[float] | None = None) -> "Figure":
    """Line plots on log-log axes, one panel per title, side by side, each with its own axes and legend.

    Args:
        path: where the PNG goes.
        panels: {title: {label: (xs, ys)}}, per line its x and y values (sequences of floats); points with a
            non-positive or non-finite coordinate are left out (they have no place on a log axis).
        panel_size: (width, height) of one panel in pixels; the image is (width · len(panels), height).
        xlabel, ylabel: the axis labels, the same on every panel.
        xticks: the positive x values to mark, labelled as plain numbers (default: matplotlib's decades).
    Returns:
        the matplotlib Figure, already written.
    """
    figure, axes = _new_figure(len(panels), panel_size)
    for ax, (title, lines) in zip(axes, panels.items()):
        ax.set(xscale="log", yscale="log", title=title, xlabel=xlabel, ylabel=ylabel)
        for label, (xs, ys) in lines.items():
            ax.plot(*_positive_points(xs, ys), marker="s", markersize=4, label=label)
        if xticks is not None:
            ax.set_xticks(xticks, [f"{x:g}" for x in xticks])
            # a log axis would otherwise mark, and over a narrow range label, minor ticks between them
            ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.savefig(path)
    return figure
