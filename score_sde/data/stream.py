"""The seeded batch stream: dataset indices in seeded, sharded batches, and the model-space batches drawn
from them on the generator's device (images loaded, flipped, dequantized and scaled; toy points drawn)."""
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from score_sde.data.datasets import SyntheticImages, TensorImages
from score_sde.data.scaling import augment
from score_sde.data.sources import DEFAULT_ROOT, IMAGE_CLASSES, IMAGE_DATASETS, SPLITS, image_dataset
from score_sde.data.toys import TOY_CLASSES, TOYS, toy_batch
from score_sde.distributed import ONE_PROCESS, Shard

TOY_EPOCH_SIZE = 10_000  # points per toy "epoch", the size of the CIFAR10 / MNIST test sets
Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # x, or (x, class labels) with labels=True


def num_classes(name: str) -> int:
    """How many classes the items of dataset `name` carry as labels (0: none, e.g. CELEBA or the 2-D toys)."""
    return {**IMAGE_CLASSES, **TOY_CLASSES}.get(name, 0)


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



def batches(name: str, split: str, batch_size: int, generator: torch.Generator | None = None,
            shard: Shard = ONE_PROCESS, epochs: int | None = None, *, root: str | Path = DEFAULT_ROOT,
            image_size: int | None = None, num_channels: int | None = None, category: str | None = None,
            download: bool = False, dim: int = 2, random_flip: bool = False,
            uniform_dequantization: bool = False, centered: bool = False, num_workers: int | None = None,
            labels: bool = False) -> Iterator[Batch]:
    """Batches in model space for training ('train') or evaluation ('test'), on the generator's device.

    Images (name in IMAGE_DATASETS, opened by `image_dataset`) are shuffled for 'train' (sequential for
    'test'), sharded over ranks (`index_batches`), loaded by a DataLoader, then flipped (if random_flip and
    split == 'train'), dequantized (if uniform_dequantization) and scaled by get_data_scaler(centered), as
    the original. Training batches are all full; an evaluation epoch ends with a short batch when the split
    does not divide. Toys (name in TOYS) are drawn fresh, TOY_EPOCH_SIZE points an epoch, each rank its own,
    and yielded as drawn (no scaling).

    Args:
        name: a dataset of IMAGE_DATASETS or TOYS; split: 'train' or 'test'; batch_size: this rank's batch
            size; generator: every random choice comes from it, so the stream is determined by its seed; its
            device is the batches' (None: torch's global generator, CPU batches); shard: this process's
            share of every global batch; epochs: passes over the data, None for an endless stream.
        root, image_size, num_channels, category, download: the image dataset, as `image_dataset`; dim: the
            toy's dimension; random_flip, uniform_dequantization, centered: the images' augmentation and
            scaling; num_workers: DataLoader processes (None: 0 for images held in memory, else up to 4);
            labels: yield each batch's class labels too (a dataset with `num_classes(name)` > 0).
    Returns:
        an iterator of tensors [B, C, H, W] (images) or [B, D] (toys), or with labels of (x, int64 labels [B])
        on the same device; the images and points are the same either way. The dataset is opened now, so a
        missing dataset raises here, not at the first batch.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if labels and not num_classes(name):
        raise ValueError(f"labels=True, but the items of {name!r} carry no class labels; datasets with "
                         f"classes: {sorted({**IMAGE_CLASSES, **TOY_CLASSES})}")
    order_gen, draw_gen = _stream_generators(generator)
    train = split == "train"
    if name in TOYS:
        return _toy_stream(name, dim, batch_size, draw_gen, train, shard, epochs, labels)
    if name in IMAGE_DATASETS and (image_size is None or num_channels is None):
        raise ValueError(f"the image dataset {name!r} needs image_size and num_channels")
    dataset = image_dataset(name, root, split, image_size, num_channels, category, download)
    indices = index_batches(len(dataset), batch_size, order_gen, train, shard.rank, shard.world_size, train,
                            epochs)
    augment_fn = functools.partial(augment, flip=random_flip and train, dequantize=uniform_dequantization,
                                   centered=centered, shard=shard)
    return _loaded(dataset, indices, _num_workers(dataset, num_workers), draw_gen, augment_fn, labels)


def _stream_generators(generator):
    """(CPU generator for the permutations, generator on the batches' device for everything drawn)."""
    # One seed from the caller's generator, the same on every rank: the permutations use it as is, so the
    # shards stay disjoint; flips, dequantization noise and toy points are drawn for the global batch from
    # seed + 1 and sharded (score_sde.distributed), so any number of ranks draws what one process draws.
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(2**62, (1,), generator=generator, device=device))
    return torch.Generator().manual_seed(seed), torch.Generator(device).manual_seed(seed + 1)


def _toy_stream(name, dim, batch_size, generator, train, shard, epochs, labels):
    """Fresh toy points for each batch of indices: drawn for the global batch, this rank's shard kept."""
    indices = index_batches(TOY_EPOCH_SIZE, batch_size, None, False, shard.rank, shard.world_size, train,
                            epochs)
    for i in indices:
        batch = toy_batch(name, shard.global_size(len(i)), generator, dim, with_labels=labels)
        yield (shard.of(batch[0]), shard.of(batch[1])) if labels else shard.of(batch)


def _num_workers(dataset, num_workers):
    """num_workers, or by default none for images held in memory: decoding files is what workers help."""
    if num_workers is not None:
        return num_workers
    return 0 if isinstance(dataset, TensorImages | SyntheticImages) else min(4, os.cpu_count() or 1)


def plain_batches(dataset: Dataset, batch_size: int) -> Iterator[torch.Tensor]:
    """Every image of a dataset once, in order, in [0, 1]: no shuffling, flip, dequantization or scaling
    (reference statistics for FID are computed on such images).

    Args:
        dataset: items (x [C, H, W] in [0, 1], label), e.g. from `image_dataset`; batch_size: images a batch.
    Returns:
        an iterator of CPU tensors [batch_size, C, H, W], the last one shorter if the dataset does not divide.
    """
    indices = index_batches(len(dataset), batch_size, epochs=1)
    identity = functools.partial(augment, flip=False, dequantize=False, centered=False)
    return _loaded(dataset, indices, 0, torch.Generator(), identity)


def _loaded(dataset, indices, num_workers, generator, augment_fn, labels=False):
    """The dataset's images for each batch of indices, moved to the generator's device and augmented; with
    labels, (images, their class labels)."""
    device = generator.device
    loader = DataLoader(dataset, batch_sampler=(i.tolist() for i in indices), num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    for x, y in loader:
        x = augment_fn(x.to(device, non_blocking=True), generator)
        yield (x, y.to(device, torch.int64, non_blocking=True)) if labels else x
