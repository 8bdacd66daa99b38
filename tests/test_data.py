"""Data: scalers, augmentation, toys against their exact distribution, MNIST from the shared idx files,
clear errors for missing datasets, and the seeded, sharded batch iterator."""
import gzip
import itertools
import shutil

import ml_collections
import numpy as np
import pytest
import torch
from exact import assert_matches_two_modes
from PIL import Image
from shared import require_mnist

import run_lib
from score_sde import data, distributed


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def options(dataset="synthetic", image_size=8, num_channels=3, batch_size=16, **knobs):
    """data.batches' plain arguments for a small dataset, but the split: no flip, scaling or dequantization
    unless asked for."""
    defaults = dict(random_flip=False, centered=False, uniform_dequantization=False)
    return dict(name=dataset, batch_size=batch_size, image_size=image_size, num_channels=num_channels,
                **(defaults | knobs))


def make_config(dataset="synthetic", image_size=8, num_channels=3, batch_size=16, **data_kwargs):
    config = ml_collections.ConfigDict()
    config.seed = 0
    knobs = dict(random_flip=False, centered=False, uniform_dequantization=False) | data_kwargs
    config.data = ml_collections.ConfigDict(dict(dataset=dataset, image_size=image_size,
                                                 num_channels=num_channels, **knobs))
    config.training = ml_collections.ConfigDict(dict(batch_size=batch_size))
    config.eval = ml_collections.ConfigDict(dict(batch_size=batch_size))
    return config


def synthetic_images(split, image_size=8, num_channels=3):
    dataset = data.image_dataset("synthetic", "unused", split, image_size, num_channels)
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def as_rows(x):
    return {tuple(row.tolist()) for row in x.flatten(1)}


# Scalers and augmentation.


@pytest.mark.parametrize("centered", [True, False])
def test_scalers_map_unit_interval_and_invert(centered):
    x = torch.rand(4, 3, 5, 5, generator=gen(), dtype=torch.float64)
    y = data.get_data_scaler(centered)(x)
    torch.testing.assert_close(y, 2 * x - 1 if centered else x)
    torch.testing.assert_close(data.get_data_inverse_scaler(centered)(y), x)


@pytest.mark.parametrize("shape", [(256, 3, 4, 6), (256, 5)])
def test_random_flip_mirrors_about_half_of_the_samples(shape):
    x = torch.rand(*shape, generator=gen())
    y = data.random_flip(x, gen(1))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 96 < mirrored.sum().item() < 160  # Binomial(256, 1/2): mean 128, sd 8
    torch.testing.assert_close(data.random_flip(x, gen(1)), y)


def test_uniform_dequantization_spreads_each_level_over_its_bin():
    levels = torch.randint(0, 256, (64, 3, 8, 8), generator=gen())
    y = data.uniform_dequantize(levels / 255.0, gen(1))
    assert torch.equal(torch.floor(y * 256).long(), levels)  # (k + u) / 256 stays in [k/256, (k+1)/256)
    u = y * 256 - levels
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    torch.testing.assert_close(data.uniform_dequantize(levels / 255.0, gen(1)), y)


def test_uniform_dequantization_never_reaches_the_next_bin_in_float32():
    """In float32, 255 + u rounds to 256 for u within 2⁻¹⁷ of 1: about 30 of these 4M pixels would land on
    the next bin's edge (1.0) without the guard."""
    top = torch.ones(4_000_000)
    y = data.uniform_dequantize(top, gen(2))
    assert y.max() < 1 and torch.all(torch.floor(y * 256) == 255)


# Toys.


@pytest.mark.parametrize("name", sorted(data.TOYS))
def test_toys_shape_range_and_determinism(name):
    x = data.toy_batch(name, 5000, gen(0))
    assert x.shape == (5000, 2) and x.dtype == torch.get_default_dtype()
    bound = 12.0 if name == "gaussian_mixture" else 6.0
    assert x.abs().max() < bound and (x.std(0) > 1.0).all()  # spread over about ±5
    assert torch.equal(data.toy_batch(name, 5000, gen(0)), x)
    assert not torch.equal(data.toy_batch(name, 5000, gen(1)), x)


def test_checkerboard_points_lie_on_the_dark_squares():
    x = data.toy_batch("checkerboard", 5000, gen(), dtype=torch.float64)
    squares = torch.floor(x / 2.5).long()
    assert ((squares.sum(1) % 2) == 0).all() and (x.abs() <= 5).all()


def test_gaussian_mixture_toy_has_its_distribution_moments():
    mix = data.toy_distribution("gaussian_mixture")
    x = data.toy_batch("gaussian_mixture", 20000, gen(), dtype=torch.float64)
    assert_matches_two_modes(x, weight=0.8, weight_tol=0.01)
    w, means = mix.weights, mix.means
    mean = (w[:, None] * means).sum(0)
    centred = means - mean
    spread = (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
    cov = torch.eye(2, dtype=torch.float64) + spread
    torch.testing.assert_close(x.mean(0), mean, atol=0.1, rtol=0)  # (3, 3)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.5, rtol=0.03)  # I + 16·11ᵀ


def test_gaussian_mixture_toy_draws_as_its_distribution_samples():
    x = data.toy_batch("gaussian_mixture", 100, gen(3), dtype=torch.float64)
    torch.testing.assert_close(x, data.toy_distribution("gaussian_mixture").sample(100, generator=gen(3)))


def test_toy_distribution_only_for_the_mixture_and_errors_name_the_choices():
    assert data.toy_distribution("gaussian_mixture", dim=3).event_shape == (3,)
    assert data.toy_batch("gaussian_mixture", 7, gen(), dim=3).shape == (7, 3)
    assert all(data.toy_distribution(name) is None for name in data.TOYS if name != "gaussian_mixture")
    with pytest.raises(ValueError, match="checkerboard"):
        data.toy_batch("spiral", 4, gen())
    with pytest.raises(ValueError, match="2-D"):
        data.toy_batch("two_moons", 4, gen(), dim=3)


# Image datasets.


def test_mnist_test_split_loads_from_the_shared_idx_files():
    mnist = require_mnist()
    dataset = data.image_dataset("MNIST", mnist, "test", image_size=28, num_channels=1)
    assert len(dataset) == 10_000
    x, label = dataset[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and label == 7  # the known first test label
    assert x.min() == 0 and x.max() <= 1 and torch.equal(torch.round(x * 255), x * 255)
    y, _ = data.image_dataset("MNIST", mnist, "test", image_size=32, num_channels=1)[0]
    assert y.shape == (1, 32, 32) and y.min() >= 0 and y.max() <= 1
    torch.testing.assert_close(y.mean(), x.mean(), atol=0.01, rtol=0)


@pytest.mark.parametrize("gzipped", [True, False])
def test_mnist_reads_torchvision_layout_gzipped_or_not(tmp_path, gzipped):
    mnist = require_mnist()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in mnist.glob("t10k-*.gz"):
        if gzipped:
            (raw / source.name).symlink_to(source)
        else:
            with gzip.open(source, "rb") as f_in, open(raw / source.stem, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
    dataset = data.image_dataset("MNIST", tmp_path, "test", image_size=28, num_channels=1)
    reference = data.image_dataset("MNIST", mnist, "test", image_size=28, num_channels=1)
    assert len(dataset) == 10_000 and torch.equal(dataset.images, reference.images)
    assert torch.equal(dataset.labels, reference.labels)


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + bytes(12))  # float32 payload
    with pytest.raises(ValueError, match="unsigned bytes"):
        data.read_idx(path)


def small_idx():
    """A whole idx file of 3 images of 2×2 unsigned bytes: magic 0, 0, 0x08, rank 3, sizes, payload."""
    sizes = b"".join(n.to_bytes(4, "big") for n in (3, 2, 2))
    return b"\x00\x00\x08\x03" + sizes + bytes(range(12))


@pytest.mark.parametrize("name, damage, what", [
    ("images.gz", lambda raw: gzip.compress(raw)[:len(gzip.compress(raw)) // 2], "truncated"),
    ("images.gz", lambda raw: raw, "not gzip-compressed"),
    ("images.gz", lambda raw: gzip.compress(raw)[:-8] + bytes(8), "CRC"),
    ("images", lambda raw: raw[:-5], "truncated"),
    ("images", lambda raw: raw[:9], "truncated"),  # inside the sizes: they would read as 0, an empty file
    ("images", lambda raw: b"", "empty"),
    ("images", gzip.compress, "gzip-compressed, so its name must end in .gz"),
], ids=["truncated-gz", "plain-named-gz", "bad-crc", "truncated-payload", "truncated-header", "empty",
        "gz-named-plain"])
def test_read_idx_errors_name_the_file_and_the_damage(tmp_path, name, damage, what):
    """A damaged download must say which file and what is wrong: gzip's own EOFError names neither."""
    whole = tmp_path / f"whole-{name}"
    whole.write_bytes(gzip.compress(small_idx()) if name.endswith(".gz") else small_idx())
    assert data.read_idx(whole).tolist() == torch.arange(12).reshape(3, 2, 2).tolist()
    path = tmp_path / name
    path.write_bytes(damage(small_idx()))
    with pytest.raises(ValueError) as info:
        data.read_idx(path)
    message = str(info.value)
    assert message.startswith(f"cannot read {path}: ") and what in message, message
    assert (info.value.__cause__ is not None) == name.endswith(".gz")  # gzip's own error kept as the cause


def test_missing_cifar10_names_the_path_and_the_download_flag(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.image_dataset("CIFAR10", tmp_path, "train", image_size=32, num_channels=3)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "download=True" in message


def test_missing_mnist_names_both_folders(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.image_dataset("MNIST", tmp_path, "train", image_size=28, num_channels=1)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "download=True" in message


def test_datasets_torchvision_cannot_download_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded") as info:
        data.image_dataset("LSUN", tmp_path, "test", 64, 3, category="church_outdoor")
    assert str(tmp_path / "church_outdoor_val_lmdb") in str(info.value)
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        data.image_dataset("FFHQ", tmp_path, "train", 64, 3)


def test_bad_names_splits_and_channels_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="CIFAR10"):
        data.image_dataset("CIFAR100", tmp_path, "train", 32, 3)
    with pytest.raises(ValueError, match="'validation'"):
        data.image_dataset("synthetic", tmp_path, "validation", 32, 3)
    with pytest.raises(ValueError, match="channel"):
        data.image_dataset("MNIST", tmp_path, "test", 28, 3)
    with pytest.raises(ValueError, match="category"):
        data.image_dataset("LSUN", tmp_path, "train", 64, 3)


def test_image_folder_reads_nested_files_crops_to_square_and_resizes(tmp_path):
    folder = tmp_path / "CelebAHQ" / "part"
    folder.mkdir(parents=True)
    wide = torch.zeros(3, 40, 60, dtype=torch.uint8)
    wide[:, :, 10:50] = 255  # white exactly on the central 40×40 square
    Image.fromarray(wide.permute(1, 2, 0).numpy()).save(folder / "b.png")
    Image.fromarray(torch.full((50, 50), 128, dtype=torch.uint8).numpy()).save(folder / "a.png")
    dataset = data.image_dataset("CelebAHQ", tmp_path, "train", image_size=16, num_channels=3)
    assert len(dataset) == 2
    (grey, label), (white, _) = dataset[0], dataset[1]
    assert grey.shape == white.shape == (3, 16, 16) and label == 0
    torch.testing.assert_close(grey, torch.full_like(grey, 128 / 255))
    torch.testing.assert_close(white, torch.ones_like(white))


def test_resize_downsamples_like_pil_with_antialiasing():
    x = torch.rand(1, 64, 48, generator=gen())
    ours = data.resize(x, 16)
    pil = Image.fromarray(x[0].numpy()).resize((16, 16), Image.BILINEAR)  # float32 "F" image
    torch.testing.assert_close(ours[0], torch.tensor(np.asarray(pil)), atol=1e-4, rtol=0)


def test_center_crop_takes_the_original_offsets():
    x = torch.arange(218 * 178).reshape(1, 218, 178)
    crop = data.center_crop(x, 140)  # CelebA: offsets (218 − 140) // 2 = 39 and (178 − 140) // 2 = 19
    assert crop.shape == (1, 140, 140) and crop[0, 0, 0] == 39 * 178 + 19
    assert data.crop_to_square(x).shape == (1, 178, 178)


def test_synthetic_dataset_is_deterministic_and_splits_differ():
    train = synthetic_images("train")
    assert train.shape == (data.SYNTHETIC_SIZES["train"], 3, 8, 8)
    assert torch.equal(synthetic_images("train"), train)
    assert torch.equal(torch.round(train * 255), train * 255)  # 8-bit levels, so dequantization applies
    assert not as_rows(train) & as_rows(synthetic_images("test"))


# The batch iterator.


@pytest.mark.parametrize("centered", [True, False])
def test_test_batches_are_the_scaled_dataset_in_order(centered):
    images = synthetic_images("test")
    got = torch.cat(list(data.batches(**options(centered=centered), split="test", epochs=1)))
    torch.testing.assert_close(got, data.get_data_scaler(centered)(images))


def test_train_batches_are_full_shuffled_and_cover_an_epoch_once():
    stream = list(data.batches(**options(batch_size=48), split="train", generator=gen(), epochs=2))
    n = data.SYNTHETIC_SIZES["train"]
    assert len(stream) == 2 * (n // 48) and all(x.shape == (48, 3, 8, 8) for x in stream)
    first_epoch = torch.cat(stream[:n // 48])
    assert len(as_rows(first_epoch)) == len(first_epoch)  # no image twice within an epoch
    assert as_rows(first_epoch) <= as_rows(synthetic_images("train"))
    assert not torch.equal(first_epoch[:48], synthetic_images("train")[:48])


def test_batches_are_deterministic_given_the_generator_seed():
    knobs = options(random_flip=True, uniform_dequantization=True, centered=True)

    def take(seed, count=5):
        stream = data.batches(**knobs, split="train", generator=gen(seed))
        return torch.stack([next(stream) for _ in range(count)])

    assert torch.equal(take(0), take(0))
    assert not torch.equal(take(0), take(1))
    assert take(0).min() >= -1 and take(0).max() < 1


def test_flip_only_in_training_and_dequantization_in_both():
    knobs = options(random_flip=True, uniform_dequantization=True)
    images = synthetic_images("test")
    test = torch.cat(list(data.batches(**knobs, split="test", generator=gen(0), epochs=1)))
    assert torch.equal(torch.floor(test * 256), torch.round(images * 255))  # dequantized, never mirrored
    knobs["uniform_dequantization"] = False
    train = torch.cat(list(data.batches(**knobs, split="train", generator=gen(1), epochs=1)))
    originals = as_rows(synthetic_images("train"))
    mirrored = sum(row not in originals for row in as_rows(train))
    assert 0 < mirrored < len(train)
    assert as_rows(train) <= originals | as_rows(synthetic_images("train").flip(-1))


@pytest.mark.parametrize("split", ["train", "test"])
def test_two_ranks_get_disjoint_halves(split):
    shards = [torch.cat(list(data.batches(**options(batch_size=16), split=split, generator=gen(5),
                                          shard=distributed.Shard(rank, 2), epochs=1)))
              for rank in (0, 1)]
    rows = [as_rows(shard) for shard in shards]
    n = data.SYNTHETIC_SIZES[split]
    assert len(rows[0]) == len(rows[1]) == n // 2 and not rows[0] & rows[1]
    assert rows[0] | rows[1] == as_rows(synthetic_images(split))


def test_batch_size_is_the_configs_share_per_rank():
    config = make_config(batch_size=32)
    assert next(data.batches(**run_lib.data_options(config, "train", distributed.Shard(1, 2)))).shape[0] == 16
    with pytest.raises(ValueError, match="evenly"):
        run_lib.data_options(config, "train", distributed.Shard(0, 3))


def test_index_batches_shards_like_distributed_sampler_with_drop_last_and_keeps_all_without():
    parts = [list(data.index_batches(11, 2, gen(), shuffle=True, rank=r, world_size=3, drop_last=True,
                                     epochs=1)) for r in range(3)]
    assert all(len(p) == 1 and len(p[0]) == 2 for p in parts)  # 11 // 3 = 3 per rank, one full batch of 2
    tails = [list(data.index_batches(11, 2, None, rank=r, world_size=3, epochs=1)) for r in range(3)]
    assert [torch.cat(t).tolist() for t in tails] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    with pytest.raises(ValueError, match="rank"):
        data.index_batches(11, 2, rank=3, world_size=3)
    with pytest.raises(ValueError, match="full batch"):
        data.index_batches(11, 4, rank=0, world_size=3, drop_last=True)


def test_worker_processes_give_the_same_stream():
    knobs = options(random_flip=True, uniform_dequantization=True, split="train")
    serial = list(data.batches(**knobs, generator=gen(), epochs=1))
    assert torch.equal(torch.stack(list(data.batches(**knobs, num_workers=2, generator=gen(), epochs=1))),
                       torch.stack(serial))


def test_toy_batches_per_rank_and_epoch():
    knobs = options(dataset="two_moons", batch_size=500, dim=2)
    ranks = [list(data.batches(**knobs, split="train", generator=gen(), shard=distributed.Shard(r, 2),
                               epochs=1)) for r in (0, 1)]
    assert len(ranks[0]) == data.TOY_EPOCH_SIZE // 2 // 500 and ranks[0][0].shape == (500, 2)
    assert not torch.equal(ranks[0][0], ranks[1][0])  # each rank has its own points


@pytest.mark.parametrize("dataset", ["synthetic", "two_moons"])
def test_ranks_together_draw_the_one_process_batches(dataset):
    """Flips, dequantization noise and toy points are drawn for the global batch and sharded, so two ranks'
    k-th batches interleave into the one-process run's k-th batch of twice the size, bit for bit."""
    knobs = options(dataset=dataset, random_flip=True, uniform_dequantization=dataset == "synthetic", dim=2)
    single = list(itertools.islice(data.batches(**(knobs | dict(batch_size=32)), split="train",
                                                generator=gen(3)), 3))
    ranks = [list(itertools.islice(data.batches(**knobs, split="train", generator=gen(3),
                                                shard=distributed.Shard(r, 2)), 3))
             for r in (0, 1)]
    for k, batch in enumerate(single):
        assert torch.equal(distributed.interleave([ranks[0][k], ranks[1][k]]), batch)


def test_a_missing_dataset_raises_when_batches_is_called(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.batches(**options(dataset="CIFAR10", image_size=32, root=str(tmp_path)), split="train")

