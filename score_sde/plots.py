"""Pictures of samples: an image grid, or a scatter plot for 2-D points, written as PNG without matplotlib."""
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


