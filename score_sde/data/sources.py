"""Image datasets by name (torchvision's, MNIST's idx files, image folders, synthetic images), read from a
local root, with errors that say where the data should be and how to get them. Nothing here downloads unless
asked to (`download=True`)."""
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from score_sde.data.datasets import ImageFiles, PILImages, SyntheticImages, TensorImages
from score_sde.data.idx import MNIST_URL, find_idx_file, read_idx
from score_sde.data.transforms import celeba_crop, lsun_crop, square_resize
from score_sde.registry import lookup

DEFAULT_ROOT = "~/.cache/score_sde/data"
SPLITS = ("train", "test")
SYNTHETIC_SIZES = {"train": 1024, "test": 256}
# The datasets whose items carry a class label, and how many classes (the others label every item 0).
IMAGE_CLASSES = {"MNIST": 10, "CIFAR10": 10, "SVHN": 10, "synthetic": 10}
DOWNLOAD_HINT = "or pass download=True to download it (needs network access)"


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
    if download and find_idx_file(folders, names[0]) is None:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=split == "train", download=True)  # writes root/MNIST/raw
    paths = [find_idx_file(folders, name) for name in names]
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
    return PILImages(data, celeba_crop, image_size, 3)


def _lsun(root, split, image_size, num_channels, category, download):
    _check_channels("LSUN", num_channels, 3)
    if category is None:
        raise ValueError("LSUN needs a category, e.g. 'bedroom' or 'church_outdoor'")
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

    return PILImages(LSUN(str(root), classes=[subset]), lsun_crop, image_size, 3)


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
        return PILImages(files, square_resize, image_size, num_channels)

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
