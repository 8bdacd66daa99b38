"""PNG pictures: scatter and log-log plots drawn by matplotlib at the requested size, with what they were
given on them; sample grids by torchvision; and, without matplotlib, a clear error or one printed line."""
import json
import math
import sys

import pytest
import torch
from PIL import Image

from score_sde.plots import (
    PLOTS_EXTRA,
    have_matplotlib,
    image_grid_png,
    loglog_png,
    replot,
    save_samples_png,
    scatter_png,
)

needs_matplotlib = pytest.mark.skipif(not have_matplotlib(), reason=f"matplotlib is missing: {PLOTS_EXTRA}")


def png_size(path):
    """The (width, height) of the PNG at path, after checking that it is one."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@needs_matplotlib
def test_loglog_png_draws_the_positive_points_of_each_line_in_its_panel(tmp_path):
    """One panel per title at panel_size, log axes with the given labels and x ticks; a point with a
    non-positive or non-finite coordinate is left out, a line without any keeps its legend entry."""
    path = tmp_path / "plot.png"
    panels = {"first": {"y = x": ([1.0, 10.0, 100.0], [1.0, 10.0, 100.0])},
              "second": {"falling": ([1.0, 0.0, 10.0, 100.0], [100.0, 5.0, math.inf, 1.0]),
                         "skipped": ([0.0, -1.0], [1.0, 2.0])}}
    figure = loglog_png(path, panels, panel_size=(400, 300), xlabel="NFE", ylabel="error",
                        xticks=[1, 10, 100])
    assert png_size(path) == (800, 300)
    first, second = figure.axes
    for ax, title in ((first, "first"), (second, "second")):
        assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (title, "NFE", "error")
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert list(ax.get_xticks()) == [1, 10, 100]
    assert first.lines[0].get_xydata().tolist() == [[1.0, 1.0], [10.0, 10.0], [100.0, 100.0]]
    assert second.lines[0].get_xydata().tolist() == [[1.0, 100.0], [100.0, 1.0]]
    assert len(second.lines[1].get_xydata()) == 0
    assert [text.get_text() for text in second.get_legend().get_texts()] == ["falling", "skipped"]


@needs_matplotlib
def test_loglog_png_without_a_positive_point_still_writes_its_panel(tmp_path):
    path = tmp_path / "empty.png"
    loglog_png(path, {"nothing to place": {"zero": ([0.0, 1.0], [1.0, 0.0])}}, panel_size=(300, 200))
    assert png_size(path) == (300, 200)


@needs_matplotlib
def test_scatter_png_has_labelled_axes_and_a_legend_per_set(tmp_path):
    """One square panel per set, axes spanning ±extent with labels, the set named in its legend; points of
    D > 2 are shown by their first two coordinates, and points beyond the extent on the frame."""
    path = tmp_path / "scatter.png"
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(100, 2, generator=gen)
    samples = torch.cat([torch.randn(99, 3, generator=gen), torch.tensor([[50.0, -50.0, 7.0]])])
    figure = scatter_png(path, {"data": data, "samples": samples}, size=200, extent=4.0)
    assert png_size(path) == (400, 200)
    for ax, (name, points) in zip(figure.axes, (("data", data), ("samples", samples))):
        assert ax.get_xlim() == ax.get_ylim() == (-4.0, 4.0)
        assert ax.get_xlabel() == "$x_1$" and len(ax.get_xticks()) > 1
        assert [text.get_text() for text in ax.get_legend().get_texts()] == [name]
        drawn = torch.from_numpy(ax.collections[0].get_offsets().data)
        torch.testing.assert_close(drawn, points[:, :2].double().clamp(-4.0, 4.0))
    assert figure.axes[0].get_ylabel() == "$x_2$"


@needs_matplotlib
def test_save_samples_png_draws_points_as_a_scatter_plot_beside_the_reference(tmp_path):
    points = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    save_samples_png(tmp_path / "alone.png", points)
    save_samples_png(tmp_path / "beside.png", points, reference=points + 1)
    assert png_size(tmp_path / "alone.png") == (480, 480)
    assert png_size(tmp_path / "beside.png") == (960, 480)


def test_save_samples_png_writes_images_as_a_grid(tmp_path):
    """Four 8×8 RGB images in a 2×2 grid with torchvision's 2-pixel padding: 2 + 2 · (8 + 2) pixels a side."""
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    save_samples_png(tmp_path / "grid.png", images)
    assert png_size(tmp_path / "grid.png") == (22, 22)


@needs_matplotlib
def test_replot_draws_a_saved_results_file_as_the_benchmark_did(tmp_path):
    panels = {"panel": {"line": ([1.0, 10.0, 100.0], [3.0, 0.3, 0.03])}}
    (tmp_path / "results.json").write_text(json.dumps(dict(panels=panels)))
    loglog_png(tmp_path / "first.png", panels)
    replot(tmp_path / "results.json", tmp_path / "again.png",
           lambda results, png: loglog_png(png, results["panels"]))
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "first.png").read_bytes()


def test_without_matplotlib_plots_fail_clearly_and_runs_go_on(tmp_path, monkeypatch, capsys):
    """matplotlib made unimportable: plotting raises an error naming the install, a run's scatter plot is
    replaced by one printed line and no file, and image grids are still written."""
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # also when no test imported it before
    assert not have_matplotlib()
    with pytest.raises(ImportError, match=r"pip install -e '\.\[plots\]'"):
        loglog_png(tmp_path / "plot.png", {"panel": {"line": ([1.0, 10.0], [1.0, 10.0])}})
    with pytest.raises(ImportError, match=r"pip install -e '\.\[plots\]'"):
        scatter_png(tmp_path / "scatter.png", {"samples": torch.zeros(3, 2)})

    save_samples_png(tmp_path / "points.png", torch.zeros(3, 2))
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and "no scatter plot" in printed[0] and PLOTS_EXTRA in printed[0]
    assert not (tmp_path / "points.png").exists()
    with pytest.raises(SystemExit, match="cannot replot.*plots"):
        replot(tmp_path / "results.json", tmp_path / "again.png", lambda results, png: None)

    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    image_grid_png(tmp_path / "grid.png", images)
    save_samples_png(tmp_path / "samples.png", images)
    assert png_size(tmp_path / "grid.png") == png_size(tmp_path / "samples.png") == (22, 22)
