"""Pictures written as PNG without matplotlib: samples (an image grid, or a scatter plot for 2-D points) and
log-log line plots of benchmark results."""
import math

import torchvision
from PIL import Image, ImageDraw

PALETTE = [(90, 90, 90), (31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def scatter_png(path, point_sets, size=480, extent=10.0):
    """One panel per named set of points [N, D ≥ 2], side by side, each spanning [-extent, extent]²: the
    first two coordinates (for D > 2, a projection)."""
    image = Image.new("RGB", (size * len(point_sets), size), "white")
    draw = ImageDraw.Draw(image)
    for panel, (name, points) in enumerate(point_sets.items()):
        left, colour = panel * size, PALETTE[panel % len(PALETTE)]
        draw.rectangle([left, 0, left + size - 1, size - 1], outline=(200, 200, 200))
        draw.text((left + 8, 8), name, fill=(0, 0, 0))
        xy = points[:, :2].detach().cpu().float().clamp(-extent, extent)
        pixels = (xy + extent) / (2 * extent) * (size - 1)
        for px, py in pixels.tolist():
            draw.point((left + px, size - 1 - py), fill=colour)
    image.save(path)


def image_grid_png(path, images):
    """A square-ish grid of images [B, C, H, W] with values in [0, 1]."""
    nrow = max(1, int(len(images) ** 0.5))
    torchvision.utils.save_image(images.detach().cpu().float().clamp(0, 1), path, nrow=nrow, padding=2)


def save_samples_png(path, samples, reference=None):
    """Image grid for images [B, C, H, W]; for points [B, D] a scatter plot of their first two coordinates,
    next to `reference` points when given."""
    if samples.ndim == 2:
        sets = {"data": reference, "samples": samples} if reference is not None else {"samples": samples}
        scatter_png(path, sets)
    else:
        image_grid_png(path, samples)


# Pixels around the axes box of each log-log panel: room for tick labels, axis labels and the title.
LOGLOG_MARGINS = dict(left=64, top=30, right=14, bottom=44)
_GRID, _AXES, _TEXT = (228, 228, 228), (60, 60, 60), (0, 0, 0)


def log_limits(values, ticks=None) -> tuple:
    """Axis limits and ticks for positive values on a log scale: whole decades around them, or, given
    ticks, the range of values and ticks together widened by 5% in log (so no point sits on the frame)."""
    if ticks is None:
        low, high = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
        high = max(high, low + 1)
        stride = math.ceil((high - low + 1) / 10)  # at most about ten labelled decades
        return 10.0**low, 10.0**high, [10.0**k for k in range(low, high + 1, stride)]
    low, high = math.log10(min([*values, *ticks])), math.log10(max([*values, *ticks]))
    pad = 0.05 * max(high - low, 1e-3)
    return 10 ** (low - pad), 10 ** (high + pad), list(ticks)


def log_position(value: float, low: float, high: float, start: float, end: float) -> float:
    """The pixel coordinate of value on a log axis that maps [low, high] onto [start, end]."""
    return start + (end - start) * math.log(value / low) / math.log(high / low)


def _tick_label(value):
    k = round(math.log10(value))
    if math.isclose(value, 10.0**k) and not -2 <= k <= 3:
        return f"1e{k}"
    return f"{value:g}"


def _vertical_text(image, left, middle, text):
    """Paste text rotated by 90° (reading upwards), its left edge at `left`, centred on row `middle`."""
    box = ImageDraw.Draw(image).textbbox((0, 0), text)
    label = Image.new("RGB", (box[2] + 2, box[3] + 2), "white")
    ImageDraw.Draw(label).text((1, 1), text, fill=_TEXT)
    label = label.rotate(90, expand=True)
    image.paste(label, (left, round(middle - label.height / 2)))


def _positive_points(xs, ys):
    return [(x, y) for x, y in zip(xs, ys) if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]


def loglog_png(path, panels: dict, panel_size=(440, 340), xlabel: str = "", ylabel: str = "",
               xticks=None) -> None:
    """Line plots on log-log axes, one panel per title, side by side, each with its own axes and legend.

    Args:
        path: where the PNG goes.
        panels: {title: {label: (xs, ys)}}, per line its x and y values (sequences of floats); points with a
            non-positive or non-finite coordinate are left out (they have no place on a log axis).
        panel_size: (width, height) of one panel in pixels; the image is (width · len(panels), height).
        xlabel, ylabel: the axis labels, the same on every panel.
        xticks: the positive x values to mark (default: whole decades); y is marked at whole decades.
    """
    width, height = panel_size
    image = Image.new("RGB", (width * len(panels), height), "white")
    for index, (title, lines) in enumerate(panels.items()):
        lines = {label: _positive_points(xs, ys) for label, (xs, ys) in lines.items()}
        _draw_panel(image, index * width, panel_size, lines, xticks)
        _draw_labels(image, index * width, panel_size, title, xlabel, ylabel)
    image.save(path)


def loglog_axes_box(left, panel_size):
    """(x0, y0, x1, y1): the pixel box of the axes of the panel whose left edge is at `left`."""
    width, height = panel_size
    m = LOGLOG_MARGINS
    return left + m["left"], m["top"], left + width - 1 - m["right"], height - 1 - m["bottom"]


def _draw_panel(image, left, panel_size, lines, xticks):
    """Axes, grid, lines with a square at every point, and the legend of one panel."""
    points = [p for line in lines.values() for p in line] or [(1.0, 1.0), (10.0, 10.0)]
    x_axis, y_axis = log_limits([x for x, _ in points], xticks), log_limits([y for _, y in points])
    box = loglog_axes_box(left, panel_size)
    draw = ImageDraw.Draw(image)
    _draw_axes(draw, box, x_axis, y_axis)
    drawn = []
    for k, line in enumerate(lines.values()):
        colour = PALETTE[k % len(PALETTE)]
        pixels = [(log_position(x, *x_axis[:2], box[0], box[2]), log_position(y, *y_axis[:2], box[3], box[1]))
                  for x, y in line]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2, joint="curve")
        for px, py in pixels:
            draw.rectangle([px - 2, py - 2, px + 2, py + 2], fill=colour)
        drawn += _along(pixels)
    _draw_legend(draw, box, list(lines), drawn)


def _along(pixels, per_segment=12):
    """Points spread along a polyline [(px, py)]: what the legend should not hide."""
    points = list(pixels[-1:])
    for (xa, ya), (xb, yb) in zip(pixels, pixels[1:]):
        points += [(xa + (xb - xa) * k / per_segment, ya + (yb - ya) * k / per_segment)
                   for k in range(per_segment)]
    return points


def _draw_axes(draw, box, x_axis, y_axis):
    """Grid lines and tick labels at the ticks of both axes, then the frame."""
    x0, y0, x1, y1 = box
    for value in x_axis[2]:
        px = log_position(value, *x_axis[:2], x0, x1)
        draw.line([(px, y0), (px, y1)], fill=_GRID)
        text = _tick_label(value)
        draw.text((px - draw.textlength(text) / 2, y1 + 5), text, fill=_TEXT)
    for value in y_axis[2]:
        py = log_position(value, *y_axis[:2], y1, y0)
        draw.line([(x0, py), (x1, py)], fill=_GRID)
        text = _tick_label(value)
        draw.text((x0 - 5 - draw.textlength(text), py - 6), text, fill=_TEXT)
    draw.rectangle(box, outline=_AXES)


def _draw_legend(draw, box, labels, pixels):
    """A white box in the corner of the axes that hides the fewest of the line points `pixels`
    [(px, py)]: a colour swatch and the label of every line."""
    if not labels:
        return
    row = 14
    width, height = 34 + max(draw.textlength(label) for label in labels), row * len(labels) + 6
    corners = [(box[2] - 6 - width, box[1] + 6), (box[0] + 6, box[3] - 6 - height),
               (box[0] + 6, box[1] + 6), (box[2] - 6 - width, box[3] - 6 - height)]

    def hidden(corner):
        return sum(corner[0] <= px <= corner[0] + width and corner[1] <= py <= corner[1] + height
                   for px, py in pixels)

    left, top = min(corners, key=hidden)  # the first corner (top right) on a tie
    draw.rectangle([left, top, left + width, top + height], fill="white", outline=_GRID)
    for k, label in enumerate(labels):
        y = top + 4 + row * k
        draw.line([(left + 6, y + 6), (left + 24, y + 6)], fill=PALETTE[k % len(PALETTE)], width=3)
        draw.text((left + 28, y), label, fill=_TEXT)


def _draw_labels(image, left, panel_size, title, xlabel, ylabel):
    """The title above the axes, the x label below them and the y label upright on their left."""
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = loglog_axes_box(left, panel_size)
    draw.text(((x0 + x1 - draw.textlength(title)) / 2, 8), title, fill=_TEXT)
    draw.text(((x0 + x1 - draw.textlength(xlabel)) / 2, y1 + 24), xlabel, fill=_TEXT)
    if ylabel:
        _vertical_text(image, left + 4, (y0 + y1) / 2, ylabel)
