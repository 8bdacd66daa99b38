"""What the modes need to know about the data a model was trained on, in one object: toy points or images.

Each kind answers the same questions, so that the edge (run_lib, api.load) asks instead of branching on the
dataset's name: the shape of a batch of samples, the map between data space and the network's input range,
the unit of a likelihood and how log p becomes it, the DSM bound in that unit, how samples are pictured, and
how their quality is judged. `api.data_kind(config)` builds one from config.data.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from score_sde.analytic import GaussianMixture
from score_sde.bound import discrete_bound, dsm_bound
from score_sde.data import get_data_inverse_scaler, get_data_scaler, toy_batch, toy_distribution
from score_sde.evaluation import sample_quality
from score_sde.features import FeatureFn, data_to_uint8
from score_sde.likelihood import bits_per_dim
from score_sde.plots import image_grid_png, save_samples_png
from score_sde.sde import SDE, ScoreFn

# What judges image samples: the feature network and the reference statistics (evaluation.load_statistics).
Judge = tuple[FeatureFn, dict[str, np.ndarray]]


@dataclass(frozen=True)
class ToyPoints:
    """Points of a named toy distribution (data.TOYS) in `dim` dimensions, used as drawn: data space is
    model space. Likelihoods are nats per point; sample quality is the exact mean log-density, where the
    distribution has one."""

    name: str
    dim: int = 2
    unit: ClassVar[str] = "nats"
    bound_quantity: ClassVar[str] = "p_eps"  # the bound is on the model's −log p_eps
    judged_by_features: ClassVar[bool] = False
    endless: ClassVar[bool] = True  # fresh points every batch: one batch per pass is the held-out set
    likelihood_options: ClassVar[dict] = {}

    def shape(self, num: int) -> tuple[int, ...]:
        return (num, self.dim)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def snapshot_size(self, batch_size: int) -> int:
        return 1000  # enough points to see the distribution's shape

    def density(self) -> GaussianMixture | None:
        return toy_distribution(self.name, self.dim)

    def from_log_likelihood(self, logp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return logp

    def bound(self, sde: SDE, score_fn: ScoreFn, x: torch.Tensor, num_times: int,
              generator: torch.Generator | None) -> torch.Tensor:
        return dsm_bound(sde, score_fn, x, num_times=num_times, generator=generator)

    def save_picture(self, path: Path, samples: torch.Tensor) -> None:
        """A scatter plot of the samples beside as many data points (seed 0)."""
        reference = toy_batch(self.name, len(samples), torch.Generator().manual_seed(0), self.dim)
        save_samples_png(path, samples, reference=reference)

    def round_arrays(self, samples: torch.Tensor, judge: Judge | None) -> dict[str, np.ndarray]:
        """What a round of evaluation samples keeps: the points themselves."""
        return dict(samples=samples.cpu().numpy())

    def quality(self, samples: torch.Tensor, seed: int) -> dict[str, float]:
        """The exact mean log-density (nats) of the samples and of as many fresh data points (seeded by
        seed); samples on the data give the data's value. Empty without a known density."""
        exact = self.density()
        if exact is None:
            return {}
        points = toy_batch(self.name, len(samples), torch.Generator().manual_seed(seed + 7), self.dim)
        return dict(samples_nats=exact.log_prob(samples.double().cpu()).mean().item(),
                    data_nats=exact.log_prob(points.double()).mean().item())

    def rounds_quality(self, rounds: dict[str, np.ndarray], judge: Judge | None, seed: int
                       ) -> dict[str, float]:
        return self.quality(torch.from_numpy(rounds["samples"]), seed)

    def predicted_classes(self, rounds: dict[str, np.ndarray]) -> torch.Tensor | None:
        """Each sample's class by the exact density's most responsible component; None without one."""
        exact = self.density()
        if exact is None:
            return None
        return exact.responsibilities(torch.from_numpy(rounds["samples"]).double()).argmax(1)


@dataclass(frozen=True)
class Images:
    """[C, H, W] images in [0, 1] in data space, scaled to [−1, 1] for the network when centered.
    Likelihoods are bits/dim of the 8-bit pixels (dequantized); sample quality is FID / KID / IS from a
    feature network's statistics (the judge)."""

    num_channels: int
    image_size: int
    centered: bool
    unit: ClassVar[str] = "bits/dim"
    bound_quantity: ClassVar[str] = "pixels"  # the bound is on −log P of the pixels themselves
    judged_by_features: ClassVar[bool] = True
    endless: ClassVar[bool] = False
    likelihood_options: ClassVar[dict] = dict(uniform_dequantization=True)  # bits/dim's definition

    def shape(self, num: int) -> tuple[int, ...]:
        return (num, self.num_channels, self.image_size, self.image_size)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return get_data_scaler(self.centered)(x)

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        return get_data_inverse_scaler(self.centered)(x)

    def snapshot_size(self, batch_size: int) -> int:
        return min(64, batch_size)  # one 8 × 8 grid

    def density(self) -> None:
        return None

    def from_log_likelihood(self, logp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bits_per_dim(logp, x.shape, centered=self.centered)

    def bound(self, sde: SDE, score_fn: ScoreFn, x: torch.Tensor, num_times: int,
              generator: torch.Generator | None) -> torch.Tensor:
        nats = discrete_bound(sde, score_fn, x, num_times=num_times, low=-1.0 if self.centered else 0.0,
                              high=1.0, generator=generator)
        return nats / (x[0].numel() * math.log(2))

    def save_picture(self, path: Path, samples: torch.Tensor) -> None:
        """A grid of the samples (data space in [0, 1], or uint8 0–255)."""
        image_grid_png(path, samples.float() / 255 if samples.dtype == torch.uint8 else samples)

    def round_arrays(self, samples: torch.Tensor, judge: Judge) -> dict[str, np.ndarray]:
        """What a round of evaluation samples keeps: uint8 images and the judge's features and class
        probabilities of them."""
        images = data_to_uint8(samples)
        features, probabilities = judge[0](images)
        return dict(samples=images.cpu().numpy(), features=features.float().numpy(),
                    probabilities=probabilities.float().numpy())

    def quality(self, samples: torch.Tensor, seed: int) -> dict[str, float]:
        return {}  # FID and its kin need the judge's reference statistics: rounds_quality

    def rounds_quality(self, rounds: dict[str, np.ndarray], judge: Judge, seed: int) -> dict[str, float]:
        return sample_quality(rounds["features"], rounds["probabilities"], judge[1])

    def predicted_classes(self, rounds: dict[str, np.ndarray]) -> torch.Tensor:
        """Each sample's class by the judge's classifier (meaningful when it knows the data's classes)."""
        return torch.from_numpy(rounds["probabilities"]).argmax(1)
