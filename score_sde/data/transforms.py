"""Image preprocessing on float tensors [C, H, W] in [0, 1]: crops and antialiased resizing, as the original.

The original resizes with `tf.image.resize(..., antialias=True)` (bilinear; bicubic in LSUN's crop_resize).
We resize float tensors with `torch.nn.functional.interpolate(..., antialias=True)` in the same modes, which
agrees with TF/PIL up to rounding; where the original casts the bicubic result to uint8, we clamp to [0, 1]
instead.
"""
import torch
import torch.nn.functional as F


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size × size patch of x [..., H, W], offsets rounded down as the original's central_crop."""
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def crop_to_square(x: torch.Tensor) -> torch.Tensor:
    """The central square of x [..., H, W] with side min(H, W)."""
    return center_crop(x, min(x.shape[-2:]))


def resize(x: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Antialiased resize of x [C, H, W] to size (an int means size × size), clamped to [0, 1]."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    y = F.interpolate(x[None], size=size, mode=mode, antialias=True, align_corners=False)[0]
    return y.clamp(0.0, 1.0)


def resize_small(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize x [C, H, W] so that its shorter side is size, keeping the aspect ratio (the original's)."""
    h, w = x.shape[-2:]
    ratio = size / min(h, w)
    return resize(x, (round(h * ratio), round(w * ratio)))


def celeba_crop(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """CelebA's crop: the original center-crops the aligned 178×218 faces to 140×140, then resizes."""
    return resize(center_crop(x, 140), image_size)


def lsun_crop(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """LSUN's crop: at 128, the original's resize_small then central_crop; otherwise its crop_resize (the
    central square, bicubic)."""
    if image_size == 128:
        return center_crop(resize_small(x, image_size), image_size)
    return resize(crop_to_square(x), image_size, mode="bicubic")


def square_resize(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """The central square of x, resized to image_size × image_size (the image folders: FFHQ, CelebAHQ)."""
    return resize(crop_to_square(x), image_size)
