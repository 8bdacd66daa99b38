"""Resumable evaluation: samples drawn in rounds that are saved as they finish, reference statistics, and
FID / KID / IS of the samples against them (score_sde.metrics).

A round is one file, written atomically, holding its uint8 samples, their features and class
probabilities; an interrupted evaluation finds the finished rounds on disk and draws only the others. Each
round's samples come from a generator seeded by (seed, checkpoint, round), so the rounds, and therefore
the final numbers, do not depend on where a run was interrupted.
"""
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from score_sde import metrics
from score_sde.features import FeatureFn
from score_sde.files import save_npz_atomic


def round_seed(seed: int, checkpoint: int, round_index: int) -> int:
    """The generator seed of one round's samples: the same whatever happened to the other rounds."""
    return (seed * 1_000_003 + checkpoint) * 1_000_033 + round_index


def sample_rounds(draw_fn: Callable[[int, int], dict], num_samples: int, round_size: int, folder: Path,
                  signature: dict | None = None, main: bool = True, progress: bool = True) -> dict:
    """Draw num_samples in rounds of round_size (the last one shorter), or read the rounds already on disk
    that the same settings produced.

    Args:
        draw_fn: (round index, number of samples) -> {name: numpy array [n, ...]} for one round (e.g.
            samples, features, probabilities); it must draw the same for the same round index.
        folder: where round_<r>.npz files go.
        signature: what produced the rounds (the checkpoint's identity, the sampler's settings; JSON values).
            Each file records it with its round's index and size; a file recorded otherwise is drawn again.
        main: whether this process writes the files (rank 0); every process calls draw_fn.
    Returns:
        {name: array [num_samples, ...]}: the rounds concatenated in order.
    """
    if num_samples < 1 or round_size < 1:
        raise ValueError(f"num_samples and the round size must be positive, got {num_samples}, {round_size}")
    rounds = []
    for index in tqdm(range(math.ceil(num_samples / round_size)), desc="sample rounds", disable=not progress):
        path = folder / f"round_{index}.npz"
        size = min(round_size, num_samples - index * round_size)
        produced_by = json.dumps(dict(signature or {}, round=index, size=size), sort_keys=True)
        saved = _saved_round(path, produced_by)
        if saved is not None:
            rounds.append(saved)
            continue
        arrays = draw_fn(index, size)
        if main:
            save_npz_atomic(path, **arrays, produced_by=np.array(produced_by))
        rounds.append(arrays)
    return {name: np.concatenate([r[name] for r in rounds]) for name in rounds[0]}


def _saved_round(path: Path, produced_by: str) -> dict | None:
    """The arrays of the round file at path if it exists and records `produced_by`, else None."""
    if not path.is_file():
        return None
    with np.load(path) as saved:
        if "produced_by" not in saved.files or str(saved["produced_by"]) != produced_by:
            return None
        return {name: saved[name] for name in saved.files if name != "produced_by"}


def dataset_statistics(batches: Iterable[torch.Tensor], feature_fn: FeatureFn, keep_features: bool = False,
                       progress: bool = True) -> dict:
    """Mean and covariance (float64) of the features of uint8 image batches, and optionally the features."""
    pools = [feature_fn(batch)[0].numpy() for batch in tqdm(batches, desc="statistics", unit="batch",
                                                             disable=not progress)]
    features = np.concatenate(pools)
    mu, sigma = metrics.feature_statistics(features)
    stats = dict(mu=mu, sigma=sigma, count=np.array(len(features)))
    if keep_features:
        stats["features"] = features.astype(np.float32)
    return stats


def load_statistics(path: Path) -> dict:
    """The statistics file written by `--mode stats`; FileNotFoundError saying how to make it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no reference statistics at {path}: compute them with `python main.py "
                                "--mode stats --config ... --workdir ...` (same config), or point `stats` "
                                "at a statistics file")
    with np.load(path) as saved:
        missing = {"mu", "sigma"} - set(saved.files)
        if missing:
            raise ValueError(f"{path} is not a statistics file: it lacks {sorted(missing)}")
        return {name: saved[name] for name in saved.files}


def sample_quality(features: np.ndarray, probabilities: np.ndarray, reference: dict,
                   kid_subset_size: int = 1000) -> dict:
    """FID against the reference statistics; KID against the reference features when the file has them;
    IS over 10 splits (fewer when there are fewer than 10 samples); how many samples the feature network
    puts in each class (`predicted_classes`: for MNIST, the digits)."""
    mu, sigma = metrics.feature_statistics(features)
    result = dict(fid=metrics.frechet_distance(mu, sigma, reference["mu"], reference["sigma"]),
                  num_samples=len(features))
    if "features" in reference:
        kid, kid_std = metrics.kernel_inception_distance(features, reference["features"],
                                                         subset_size=kid_subset_size)
        result.update(kid=kid, kid_std=kid_std)
    inception, inception_std = metrics.inception_score(probabilities, splits=min(10, len(probabilities)))
    histogram = np.bincount(probabilities.argmax(1), minlength=probabilities.shape[1])
    result.update(inception_score=inception, inception_score_std=inception_std,
                  predicted_classes=histogram.tolist())
    return result
