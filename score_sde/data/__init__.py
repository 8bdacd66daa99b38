"""The data pipeline: from its sources (torchvision, MNIST idx files, synthetic images, 2-D toys) to seeded
model-space batches. Every function takes plain arguments; run_lib turns a config into them.

    scaling.py     data scalers, random flip, uniform dequantization
    toys.py        the toy distributions (TOYS), toy_batch, toy_distribution
    idx.py         read_idx: MNIST's idx files
    transforms.py  crops and antialiased resizing of [C, H, W] images
    datasets.py    the Dataset classes (in memory, synthetic, PIL-decoded, a folder's image files)
    sources.py     image_dataset(name, root, split, ...): the datasets by name, with clear errors
    stream.py      index_batches and the seeded, sharded batch stream (batches, plain_batches)
"""
from score_sde.data.datasets import ImageFiles, PILImages, SyntheticImages, TensorImages
from score_sde.data.idx import MNIST_URL, read_idx
from score_sde.data.scaling import (
    augment,
    get_data_inverse_scaler,
    get_data_scaler,
    random_flip,
    uniform_dequantize,
)
from score_sde.data.sources import (
    DEFAULT_ROOT,
    IMAGE_CLASSES,
    IMAGE_DATASETS,
    SPLITS,
    SYNTHETIC_SIZES,
    image_dataset,
)
from score_sde.data.stream import TOY_EPOCH_SIZE, Batch, batches, index_batches, num_classes, plain_batches
from score_sde.data.toys import TOY_CLASSES, TOYS, toy_batch, toy_distribution
from score_sde.data.transforms import center_crop, crop_to_square, resize, resize_small

__all__ = [
    "Batch", "DEFAULT_ROOT", "IMAGE_CLASSES", "IMAGE_DATASETS", "MNIST_URL", "SPLITS", "SYNTHETIC_SIZES",
    "TOYS", "TOY_CLASSES", "TOY_EPOCH_SIZE",
    "ImageFiles", "PILImages", "SyntheticImages", "TensorImages",
    "augment", "batches", "center_crop", "crop_to_square", "get_data_inverse_scaler", "get_data_scaler",
    "image_dataset", "index_batches", "num_classes", "plain_batches", "random_flip", "read_idx", "resize",
    "resize_small", "toy_batch", "toy_distribution", "uniform_dequantize",
]
