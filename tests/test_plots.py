"""PNG plots without matplotlib: the log-log line plot is written at its size, with its lines where the
log axes put them."""
import math

from PIL import Image

from score_sde.plots import PALETTE, log_limits, log_position, loglog_axes_box, loglog_png


def test_log_limits_span_whole_decades_or_the_given_ticks():
    assert log_limits([2e-3, 40.0]) == (1e-3, 100.0, [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    low, high, ticks = log_limits([4.0, 100.0], ticks=[5, 10, 100])
    assert low < 4.0 and high > 100.0 and ticks == [5, 10, 100]
    assert math.isclose(log_position(10.0, 1.0, 100.0, 0, 200), 100.0)


def test_loglog_png_draws_each_line_where_its_axes_put_it(tmp_path):
    """A line y = x from 1 to 100 runs along the diagonal of whole-decade axes [1, 100]²: its colour lies
    at the middle of the box (x = y = 10) and not far off the diagonal; a second panel has its own line."""
    path = tmp_path / "plot.png"
    panel_size = (400, 300)
    panels = {"first": {"y = x": ([1.0, 10.0, 100.0], [1.0, 10.0, 100.0])},
              "second": {"falling": ([1.0, 100.0], [100.0, 1.0]), "skipped": ([0.0, -1.0], [1.0, 2.0])}}
    loglog_png(path, panels, panel_size=panel_size, xlabel="NFE", ylabel="error")
    image = Image.open(path).convert("RGB")
    assert image.size == (800, 300)
    for left, rising in ((0, True), (400, False)):
        x0, y0, x1, y1 = loglog_axes_box(left, panel_size)
        assert near_colour(image, (x0 + x1) / 2, (y0 + y1) / 2, PALETTE[0])
        # a quarter of the way along x, the line is a quarter of the way up (rising) or down (falling)
        quarter_y = y1 - (y1 - y0) / 4 if rising else y0 + (y1 - y0) / 4
        assert near_colour(image, x0 + (x1 - x0) / 4, quarter_y, PALETTE[0])
        assert not near_colour(image, x0 + (x1 - x0) / 4, (y0 + y1) / 2, PALETTE[0])
    assert image.getpixel((5, 5)) == (255, 255, 255)  # the background is white


def near_colour(image, x, y, colour, radius=3):
    """Whether a pixel within `radius` of (x, y) has exactly the given colour."""
    x, y = round(x), round(y)
    return any(image.getpixel((x + dx, y + dy)) == colour
               for dx in range(-radius, radius + 1) for dy in range(-radius, radius + 1))
