"""The data pipeline: from its sources (torchvision, MNIST idx files, 2-D toys) to seeded model-space batches.

Images come from torchvision (or, for MNIST, our own reader of the idx files) as float tensors [C, H, W] in
[0, 1]; `batches` turns them into model-space batches (flip, dequantization, scaling) on the generator's
device. Toy data are drawn on the fly. Nothing here downloads unless asked to (`download=True`).

Resizing: the original resizes with `tf.image.resize(..., antialias=True)` (bilinear; bicubic in LSUN's
crop_resize). We resize float tensors with `torch.nn.functional.interpolate(..., antialias=True)` in the
same modes, which agrees with TF/PIL up to rounding; where the original casts the bicubic result to uint8,
we clamp to [0, 1] instead.
"""
import functools
import gzip
import math
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from score_sde.analytic import GaussianMixture, two_mode_mixture
from score_sde.configs import num_channels
from score_sde.distributed import ONE_PROCESS, Shard
from score_sde.registry import lookup
from score_sde.sde import expand_to

DEFAULT_ROOT = "~/.cache/score_sde/data"
SPLITS = ("train", "test")
TOY_EPOCH_SIZE = 10_000  # points per toy "epoch", the size of the CIFAR10 / MNIST test sets
SYNTHETIC_SIZES = {"train": 1024, "test": 256}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DOWNLOAD_HINT = "or pass --config.data.download=True to download it (needs network access)"


# Scalers: [0, 1] data <-> model space, as the original's get_data_scaler / get_data_inverse_scaler.


def get_data_scaler(centered: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """x in [0, 1] -> 2x − 1 in [-1, 1] if centered, else x unchanged."""
    return (lambda x: x * 2.0 - 1.0) if centered else (lambda x: x)


def get_data_inverse_scaler(centered: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The inverse of get_data_scaler(centered): model space -> [0, 1]."""
    return (lambda x: (x + 1.0) / 2.0) if centered else (lambda x: x)


# Batch-level augmentation, on the batch's device.


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard = ONE_PROCESS
                ) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2.

    Args:
        x: [B, ..., W] images, this rank's shard of a global batch; generator: on x's device, in the same
            state on every rank (the coins are tossed for the global batch, each rank keeps its own).
    Returns:
        [B, ..., W], each sample either x[i] or x[i] mirrored along the last axis.
    """
    coins = torch.rand(shard.global_size(x.shape[0]), generator=generator, device=x.device)
    flip = shard.of(coins) < 0.5
    return torch.where(expand_to(flip, x), x.flip(-1), x)


def uniform_dequantize(x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard = ONE_PROCESS
                       ) -> torch.Tensor:
    """(255·x + u) / 256 with u ~ U[0, 1) per pixel, the original's uniform dequantization.

    Args:
        x: [B, ...] 8-bit images scaled to [0, 1] (values k / 255), this rank's shard of a global batch;
            generator: on x's device, in the same state on every rank (as random_flip).
    Returns:
        [B, ...] in [0, 1): pixel k becomes uniform on [k / 256, (k + 1) / 256).
    """
    shape = (shard.global_size(x.shape[0]), *x.shape[1:])
    u = shard.of(torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype))
    return (x * 255.0 + u) / 256.0


# Toy data: 2-D point clouds spanning about ±5, drawn on the generator's device.


def toy_distribution(name: str, dim: int = 2) -> GaussianMixture | None:
    """The toy's exact distribution where it has one: for 'gaussian_mixture', 0.2·N(−5·1, I) + 0.8·N(5·1, I)
    in `dim` dimensions (the issue's test mixture); None for the toys without a closed-form density."""
    lookup(TOYS, name, "toy dataset")
    if name != "gaussian_mixture":
        return None
    return two_mode_mixture(dim)


def _gaussian_mixture(n, generator, device, dim):
    # The same draws, in the same order, as GaussianMixture.sample, but on the generator's device.
    mix = toy_distribution("gaussian_mixture", dim)
    k = torch.multinomial(mix.weights.to(device), n, replacement=True, generator=generator)
    z = torch.randn(n, dim, generator=generator, dtype=torch.float64, device=device)
    return mix.means.to(device)[k] + expand_to(mix.stds.to(device)[k], z) * z


def _checkerboard(n, generator, device, dim):
    # The 4×4 checkerboard of FFJORD (Grathwohl et al. 2019) on [-2, 2)², scaled by 2.5 to [-5, 5)².
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    x1 = torch.rand(n, **kw) * 4 - 2
    x2 = torch.rand(n, **kw) - 2 * torch.randint(0, 2, (n,), generator=generator, device=device)
    return 2.5 * torch.stack([x1, x2 + torch.floor(x1) % 2], dim=1)


def _swiss_roll(n, generator, device, dim):
    # The 2-D swiss roll t·(cos t, sin t), t in [1.5π, 4.5π], scaled to radius 5, plus N(0, 0.1²) noise.
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, **kw))
    roll = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) * (5 / (4.5 * math.pi))
    return roll + 0.1 * torch.randn(n, 2, **kw)


def _two_moons(n, generator, device, dim):
    # sklearn's make_moons (unit half circles), centred and scaled by 3 to about [-4.5, 4.5] × [-2.3, 2.3].
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    inner = torch.rand(n, generator=generator, device=device) < 0.5
    theta = math.pi * torch.rand(n, **kw)
    outer_xy = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    inner_xy = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    xy = torch.where(inner[:, None], inner_xy, outer_xy) + 0.05 * torch.randn(n, 2, **kw)
    return 3 * (xy - torch.tensor([0.5, 0.25], dtype=torch.float64, device=device))


TOYS = {
    "gaussian_mixture": _gaussian_mixture,
    "checkerboard": _checkerboard,
    "swiss_roll": _swiss_roll,
    "two_moons": _two_moons,
}


def toy_batch(name: str, batch_size: int, generator: torch.Generator | None = None, dim: int = 2,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """Fresh points from a built-in toy distribution, drawn on the generator's device.

    Args:
        name: one of TOYS; batch_size: number of points B; generator: the source of randomness (its device is
            the output's); dim: dimension D, 2 except for 'gaussian_mixture'; dtype: default dtype if None.
    Returns:
        [B, D] points, about ±5 in each coordinate.
    """
    sample_fn = lookup(TOYS, name, "toy dataset")
    if dim != 2 and name != "gaussian_mixture":
        raise ValueError(f"toy {name!r} is 2-D; got dim={dim} (only 'gaussian_mixture' takes any dim)")
    device = generator.device if generator is not None else torch.device("cpu")
    return sample_fn(batch_size, generator, device, dim).to(dtype or torch.get_default_dtype())


# Image preprocessing on float tensors [C, H, W] in [0, 1].


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


def _to_float(image, num_channels):
    """A PIL image -> float tensor [C, H, W] in [0, 1] with num_channels (1: grey, 3: RGB)."""
    image = image.convert("L" if num_channels == 1 else "RGB")
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return x.reshape(image.height, image.width, num_channels).permute(2, 0, 1).float() / 255.0


def _celeba_crop(x, image_size):
    # The original center-crops the aligned 178×218 faces to 140×140, then resizes.
    return resize(center_crop(x, 140), image_size)


def _lsun_crop(x, image_size):
    # The original: at 128, resize_small then central_crop; otherwise crop_resize (square, bicubic).
    if image_size == 128:
        return center_crop(resize_small(x, image_size), image_size)
    return resize(crop_to_square(x), image_size, mode="bicubic")


def _square_resize(x, image_size):
    return resize(crop_to_square(x), image_size)


# Datasets: every item is (image [C, H, W] float in [0, 1], integer label; 0 where a dataset has none).


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

    def __init__(self, source, crop_fn, image_size: int, num_channels: int):
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


# MNIST from its idx files, gzipped or not; no torchvision layout needed.


def read_idx(path: str | Path) -> torch.Tensor:
    """An idx file (MNIST's format: 0, 0, type 0x08, rank, big-endian int32 sizes, uint8 payload).

    Args:
        path: the file; a name ending in .gz is read through gzip.
    Returns:
        uint8 tensor of the file's shape, e.g. [N, 28, 28] for images and [N] for labels.
    Raises:
        ValueError: the file is not a whole idx file (truncated, not gzip-compressed though named .gz,
            corrupt, or of another type). The message names the file: gzip's own errors (a bare EOFError
            for a truncated download) name none, and a data root may hold several candidates.
    """
    refetch = f"replace it with a fresh copy (MNIST's idx files are at {MNIST_URL})"
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except EOFError as error:  # the deflate stream stops early: an interrupted download or copy
        raise ValueError(f"cannot read {path}: the gzip data end early (truncated file?); {refetch}") \
            from error
    except gzip.BadGzipFile as error:  # the magic bytes, or the trailer's CRC or length
        if str(error).startswith("Not a gzipped file"):
            what = "not gzip-compressed, though its name ends in .gz (name a plain idx file without .gz)"
        else:
            what = f"corrupt gzip data ({error}); {refetch}"
        raise ValueError(f"cannot read {path}: {what}") from error
    except zlib.error as error:
        raise ValueError(f"cannot read {path}: corrupt gzip data ({error}); {refetch}") from error
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        found = f"header {data[:4].hex()}"
        if len(data) < 4:
            found = f"only {len(data)} byte(s): empty or truncated"
        elif data[:2] == b"\x1f\x8b":
            found += ": gzip-compressed, so its name must end in .gz"
        raise ValueError(f"cannot read {path}: not an idx file of unsigned bytes ({found})")
    rank = data[3]
    if len(data) < 4 + 4 * rank:
        raise ValueError(f"cannot read {path}: the header announces {rank} sizes but the file ends after "
                         f"{len(data)} bytes (truncated file?); {refetch}")
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    payload = data[4 + 4 * rank:]
    if len(payload) != math.prod(shape):
        hint = f" (truncated file?); {refetch}" if len(payload) < math.prod(shape) else ""
        raise ValueError(f"cannot read {path}: the header says {shape}, but the payload has {len(payload)} "
                         f"bytes{hint}")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(shape)


def _find_file(folders, name):
    """The first of folder/name, folder/name.gz over the folders, or None."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


# One builder per dataset name: (root, split, image_size, num_channels, category, download) -> Dataset.


def _check_channels(name, num_channels, expected):
    if num_channels != expected:
        raise ValueError(f"{name} images have {expected} channel(s), not num_channels={num_channels}")


def _missing(name, expected, how, downloadable):
    """The error for a dataset that is not where we look: the path, how to get it, the download flag."""
    hint = f", {DOWNLOAD_HINT}" if downloadable else "; it cannot be downloaded automatically"
    return FileNotFoundError(f"{name} not found: expected {expected}. {how}{hint}.")


def _mnist(root, split, image_size, num_channels, category, download):
    _check_channels("MNIST", num_channels, 1)
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folders = (root / "MNIST" / "raw", root)  # torchvision's layout, or a folder holding the idx files
    if download and _find_file(folders, names[0]) is None:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=split == "train", download=True)  # writes root/MNIST/raw
    paths = [_find_file(folders, name) for name in names]
    if None in paths:
        expected = f"{names[0]}[.gz] and {names[1]}[.gz] in {folders[0]} or in {folders[1]}"
        how = f"Put the idx files from {MNIST_URL} in one of those folders"
        raise _missing(f"MNIST ({split} split)", expected, how + " (gzipped or not)", downloadable=True)
    images, labels = (read_idx(p) for p in paths)
    return TensorImages(images[:, None], labels, image_size)


def _cifar10(root, split, image_size, num_channels, category, download):
    from torchvision.datasets import CIFAR10

    _check_channels("CIFAR10", num_channels, 3)
    folder = root / "cifar-10-batches-py"
    how = (f"Extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html in {root} (it "
           "creates that folder with data_batch_1..5, test_batch and batches.meta)")
    if not download and not folder.is_dir():
        raise _missing("CIFAR10", f"the folder {folder}", how, downloadable=True)
    try:
        data = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise _missing("CIFAR10", f"complete, uncorrupted files in {folder} ({err})", how, True) from err
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    return TensorImages(images, torch.tensor(data.targets), image_size)


def _svhn(root, split, image_size, num_channels, category, download):
    from torchvision.datasets import SVHN

    _check_channels("SVHN", num_channels, 3)
    path = root / f"{split}_32x32.mat"
    if not download and not path.is_file():
        how = f"Put {path.name} from http://ufldl.stanford.edu/housenumbers/ in {root}"
        raise _missing("SVHN", f"the file {path}", how, downloadable=True)
    data = SVHN(str(root), split=split, download=download)
    return TensorImages(torch.from_numpy(data.data).contiguous(), torch.from_numpy(data.labels), image_size)


def _celeba(root, split, image_size, num_channels, category, download):
    from torchvision.datasets import CelebA

    _check_channels("CELEBA", num_channels, 3)
    folder = root / "celeba"
    how = (f"Put img_align_celeba/ (the extracted img_align_celeba.zip) and the annotation files "
           f"list_eval_partition.txt, identity_CelebA.txt, list_attr_celeba.txt, list_bbox_celeba.txt and "
           "list_landmarks_align_celeba.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html in "
           f"{folder} (downloading needs the gdown package and Google Drive's quota)")
    if not download and not (folder / "img_align_celeba").is_dir():
        raise _missing("CELEBA", f"the folder {folder / 'img_align_celeba'}", how, downloadable=True)
    celeba_split = "train" if split == "train" else "valid"  # the original evaluates on the validation split
    try:
        data = CelebA(str(root), split=celeba_split, target_type=[], download=download)
    except RuntimeError as err:
        raise _missing("CELEBA", f"complete, uncorrupted files in {folder} ({err})", how, True) from err
    return PILImages(data, _celeba_crop, image_size, 3)


def _lsun(root, split, image_size, num_channels, category, download):
    _check_channels("LSUN", num_channels, 3)
    if category is None:
        raise ValueError("LSUN needs config.data.category, e.g. 'bedroom' or 'church_outdoor'")
    subset = f"{category}_{'train' if split == 'train' else 'val'}"
    folder = root / f"{subset}_lmdb"
    if not folder.is_dir():
        how = (f"Download {subset}_lmdb.zip with the LSUN tools (https://github.com/fyu/lsun: python "
               f"download.py -c {category}) and unzip it in {root}")
        raise _missing("LSUN", f"the LMDB folder {folder}", how, downloadable=False)
    try:
        import lmdb  # noqa: F401  (torchvision's LSUN needs it; say so before it fails deeper down)
    except ImportError as err:
        raise ImportError("LSUN is stored as LMDB: install the lmdb package (pip install lmdb)") from err
    from torchvision.datasets import LSUN

    return PILImages(LSUN(str(root), classes=[subset]), _lsun_crop, image_size, 3)


def _image_folder(name):
    """A builder for a folder of images root/<name>/ (FFHQ, CelebAHQ), the same for every split."""

    def build(root, split, image_size, num_channels, category, download):
        if num_channels not in (1, 3):
            raise ValueError(f"{name} images are read as grey (1) or RGB (3), not {num_channels} channels")
        folder = root / name
        files = ImageFiles(folder) if folder.is_dir() else None
        if not files:
            raise _missing(name, f"image files in the folder {folder}", "Put the images (any depth, any "
                           "format PIL reads) there", downloadable=False)
        return PILImages(files, _square_resize, image_size, num_channels)

    return build


def _synthetic(root, split, image_size, num_channels, category, download):
    return SyntheticImages(SYNTHETIC_SIZES[split], image_size, num_channels, seed=SPLITS.index(split))


IMAGE_DATASETS = {
    "CIFAR10": _cifar10,
    "MNIST": _mnist,
    "SVHN": _svhn,
    "CELEBA": _celeba,
    "LSUN": _lsun,
    "FFHQ": _image_folder("FFHQ"),
    "CelebAHQ": _image_folder("CelebAHQ"),
    "synthetic": _synthetic,
}


def image_dataset(name: str, root: str | Path, split: str, image_size: int, num_channels: int,
                  category: str | None = None, download: bool = False) -> Dataset:
    """An image dataset whose items are (x [C, image_size, image_size] float in [0, 1], integer label).

    No flip or dequantization here (see `batches`). Crops follow the original: CELEBA center-crops 140×140;
    LSUN crops the central square (at 128: resizes the short side, then crops); FFHQ / CelebAHQ are read
    from root/<name>/ and center-cropped to a square; MNIST is read from root/MNIST/raw/ or root itself.

    Args:
        name: one of IMAGE_DATASETS; root: the data folder (~ expanded); split: 'train' or 'test' (the split
            the original evaluates on: CIFAR10/MNIST/SVHN test, CELEBA validation, LSUN val; the image
            folders have one split); image_size: output side; num_channels: C; category: LSUN's scene, e.g.
            'bedroom'; download: let torchvision download a missing dataset it knows how to get.
    Raises:
        FileNotFoundError: the data are not where expected (the message says where and how to get them).
    """
    builder = lookup(IMAGE_DATASETS, name, "dataset")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return builder(Path(os.path.expanduser(str(root))), split, image_size, num_channels, category, download)


# Seeded, sharded batch iteration.


def index_batches(num_items: int, batch_size: int, generator: torch.Generator | None = None,
                  shuffle: bool = False, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                  epochs: int | None = None) -> Iterator[torch.Tensor]:
    """This rank's batches of dataset indices, epoch after epoch.

    Each epoch orders the items (a permutation drawn from `generator` if shuffle, else 0..N−1) and gives
    rank r every world_size-th one from r: the ranks' shards are disjoint provided every rank's generator
    is in the same state. With drop_last (training), as DistributedSampler with drop_last, each rank keeps
    the same number of whole batches, so the ranks' k-th batches together are the one-process run's k-th
    batch of world_size times the size. Without it (evaluation), every item is kept once: the shards differ
    in size by at most one item. Batches never cross an epoch's end.

    Args:
        num_items: N; batch_size: indices per batch; generator: CPU, for the permutations; epochs: None for
            an endless stream.
    Returns:
        an iterator of index tensors [batch_size] (the last of an epoch may be shorter unless drop_last).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    per_rank = num_items // world_size
    if per_rank < (batch_size if drop_last else 1):
        raise ValueError(f"{num_items} items over {world_size} rank(s) give {per_rank} per rank, fewer than "
                         f"one {'full ' if drop_last else ''}batch of {batch_size}")
    stop = per_rank - per_rank % batch_size if drop_last else None
    return _index_stream(num_items, stop, batch_size, generator, shuffle, rank, world_size, epochs)


def _index_stream(num_items, stop, batch_size, generator, shuffle, rank, world_size, epochs):
    """Each epoch: this rank's first `stop` indices of its shard, in batches."""
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(num_items, generator=generator) if shuffle else torch.arange(num_items)
        yield from order[rank::world_size][:stop].split(batch_size)
        epoch += 1


def dataset_from_config(config, split: str) -> Dataset:
    """image_dataset for config.data (dataset, root, image_size, num_channels, category, download)."""
    d = config.data
    return image_dataset(d.dataset, d.get("root", DEFAULT_ROOT), split, d.image_size, num_channels(d),
                         category=d.get("category"), download=d.get("download", False))


def _config_batch_size(config, split, world_size):
    """This rank's share of config.training.batch_size (train) or config.eval.batch_size (test)."""
    total = config.training.batch_size if split == "train" else config.eval.batch_size
    if total % world_size:
        raise ValueError(f"the {split} batch size {total} does not split evenly over {world_size} ranks")
    return total // world_size


def batches(config, split: str, batch_size: int | None = None, generator: torch.Generator | None = None,
            rank: int = 0, world_size: int = 1, epochs: int | None = None) -> Iterator[torch.Tensor]:
    """Batches in model space for training ('train') or evaluation ('test'), on the generator's device.

    Images (config.data.dataset in IMAGE_DATASETS) are shuffled for 'train' (sequential for 'test'),
    sharded over ranks (`index_batches`), loaded by a DataLoader, then flipped (if config.data.random_flip
    and split == 'train'), dequantized (if config.data.uniform_dequantization) and scaled by
    get_data_scaler(config.data.centered), as the original. Training batches are all full; an evaluation
    epoch ends with a short batch when the split does not divide. Toys (config.data.dataset in TOYS) are
    drawn fresh, TOY_EPOCH_SIZE points an epoch, each rank its own, and yielded as drawn (no scaling).

    Args:
        config: the run's ConfigDict (config.data, config.seed; training/eval batch sizes if batch_size is
            None); split: 'train' or 'test'; batch_size: this rank's batch size (None: the config's divided
            by world_size); generator: every random choice comes from it, so the stream is determined by its
            seed; its device is the batches' (None: a CPU generator seeded from config.seed and the split);
            rank, world_size: this process's shard; epochs: passes over the data, None for an endless stream.
    Returns:
        an iterator of tensors [B, C, H, W] (images) or [B, D] (toys). The dataset is opened now, so a missing
        dataset raises here, not at the first batch.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    batch_size = batch_size or _config_batch_size(config, split, world_size)
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed + SPLITS.index(split))
    # One seed from the caller's generator, the same on every rank: the permutations use it as is, so the
    # shards stay disjoint; flips, dequantization noise and toy points are drawn for the global batch from
    # seed + 1 and sharded (score_sde.distributed), so any number of ranks draws what one process draws.
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    order_gen = torch.Generator().manual_seed(seed)
    draw_gen = torch.Generator(generator.device).manual_seed(seed + 1)
    train, d, shard = split == "train", config.data, Shard(rank, world_size)
    if d.dataset in TOYS:
        indices = index_batches(TOY_EPOCH_SIZE, batch_size, None, False, rank, world_size, train, epochs)
        return (shard.of(toy_batch(d.dataset, shard.global_size(len(i)), draw_gen, d.get("dim", 2)))
                for i in indices)
    dataset = dataset_from_config(config, split)
    indices = index_batches(len(dataset), batch_size, order_gen, train, rank, world_size, train, epochs)
    in_memory = isinstance(dataset, TensorImages | SyntheticImages)  # decoding files is what workers help
    workers = d.get("num_workers")
    if workers is None:
        workers = 0 if in_memory else min(4, os.cpu_count() or 1)
    augment_fn = functools.partial(augment, flip=d.random_flip and train, dequantize=d.uniform_dequantization,
                                   centered=d.centered, shard=shard)
    return _loaded(dataset, indices, workers, draw_gen, augment_fn)


def plain_batches(config, split: str, batch_size: int) -> Iterator[torch.Tensor]:
    """Every image of a split once, in order, in [0, 1]: no shuffling, flip, dequantization or scaling
    (reference statistics for FID are computed on such images)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    dataset = dataset_from_config(config, split)
    indices = index_batches(len(dataset), batch_size, epochs=1)
    identity = functools.partial(augment, flip=False, dequantize=False, centered=False)
    return _loaded(dataset, indices, 0, torch.Generator(), identity)


def augment(x: torch.Tensor, generator: torch.Generator | None, flip: bool, dequantize: bool,
            centered: bool, shard: Shard = ONE_PROCESS) -> torch.Tensor:
    """[0, 1] images [B, C, H, W] -> model space: optional flip, then dequantization, then the data scaler."""
    if flip:
        x = random_flip(x, generator, shard)
    if dequantize:
        x = uniform_dequantize(x, generator, shard)
    return get_data_scaler(centered)(x)


def _loaded(dataset, indices, num_workers, generator, augment_fn):
    device = generator.device
    loader = DataLoader(dataset, batch_sampler=(i.tolist() for i in indices), num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    for x, _ in loader:
        yield augment_fn(x.to(device, non_blocking=True), generator)
