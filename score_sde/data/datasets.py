"""Image datasets whose items are (image [C, H, W] float in [0, 1], integer label; 0 where a dataset has
none): in memory, synthetic, decoded from PIL images, or the image files of a folder."""
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from score_sde.data.transforms import resize


def _to_float(image, num_channels):
    """A PIL image -> float tensor [C, H, W] in [0, 1] with num_channels (1: grey, 3: RGB)."""
    image = image.convert("L" if num_channels == 1 else "RGB")
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return x.reshape(image.height, image.width, num_channels).permute(2, 0, 1).float() / 255.0



class TensorImages(Dataset):
    """8-bit images held in memory, resized on access.

    Args:
        images: [N, C, H, W] uint8; labels: [N] integers; image_size: side of the square output.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, image_size: int):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(labels) != len(images):
            raise ValueError(f"need uint8 images [N, C, H, W] and labels [N]; got {images.dtype} "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        self.images, self.labels, self.image_size = images, labels, image_size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return resize(self.images[index].float() / 255.0, self.image_size), int(self.labels[index])


class SyntheticImages(Dataset):
    """Deterministic random 8-bit images (each from its own seed), for tests that need no downloads.

    Args:
        num_images: N; image_size: side; num_channels: C; seed: 0 for one split, 1 for another, ...
    """

    def __init__(self, num_images: int, image_size: int, num_channels: int, seed: int = 0):
        self.num_images, self.image_size, self.num_channels = num_images, image_size, num_channels
        self.seed = seed

    def __len__(self):
        return self.num_images

    def __getitem__(self, index):
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        shape = (self.num_channels, self.image_size, self.image_size)
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).float() / 255.0, index % 10


class PILImages(Dataset):
    """Decoded images from a source whose items are (PIL image, label), converted and cropped on access.

    Args:
        source: a torchvision dataset without transform, or ImageFiles; crop_fn(x [C, H, W], image_size):
            the dataset's crop and resize; image_size: side; num_channels: 1 (grey) or 3 (RGB).
    """

    def __init__(self, source: Dataset, crop_fn: Callable[[torch.Tensor, int], torch.Tensor], image_size: int,
                 num_channels: int):
        self.source, self.crop_fn = source, crop_fn
        self.image_size, self.num_channels = image_size, num_channels

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        image, label = self.source[index]
        x = self.crop_fn(_to_float(image, self.num_channels), self.image_size)
        return x, label if isinstance(label, int) else 0


class ImageFiles(Dataset):
    """The image files under a folder, at any depth, in sorted order; items are (PIL image, 0)."""

    def __init__(self, folder: Path):
        from torchvision.datasets.folder import IMG_EXTENSIONS

        self.files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        from PIL import Image

        image = Image.open(self.files[index])
        image.load()  # reads the pixels and closes the file
        return image, 0
