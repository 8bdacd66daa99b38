"""Gaussian-mixture data with its exact score and log-density at every t under a linear SDE.

A linear SDE maps a component N(μ_k, σ_k²I) to N(m·μ_k, (m²σ_k² + s²)I), where x(t) = m(t)·x(0) + s(t)·z;
so the perturbed data stay a Gaussian mixture, and score and density are known in closed form. This is the
exact stand-in for a trained network that tests and benchmarks use.
"""
import math
from collections.abc import Sequence

import torch

from score_sde.sde import SDE, ScoreFn


class GaussianMixture:
    """Mixture Σ_k w_k·N(μ_k, σ_k²I) of isotropic Gaussians over events of any shape.

    Args:
        weights: [K] mixture weights (normalised here).
        means: [K, *event_shape] component means.
        stds: [K] component standard deviations (one per component: isotropic).
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor, means: Sequence | torch.Tensor,
                 stds: Sequence[float] | torch.Tensor):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        k = self.weights.shape[0]
        if self.weights.ndim != 1 or self.means.shape[0] != k or self.stds.shape != (k,):
            raise ValueError(
                f"need weights [K], means [K, ...] and stds [K]; got {tuple(self.weights.shape)}, "
                f"{tuple(self.means.shape)}, {tuple(self.stds.shape)}"
            )
        if (self.weights <= 0).any() or (self.stds <= 0).any():
            raise ValueError("mixture weights and stds must be positive")
        self.weights = self.weights / self.weights.sum()
        self.event_shape = tuple(self.means.shape[1:])

    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """num_samples draws, [num_samples, *event_shape]."""
        k = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        z = torch.randn(num_samples, *self.event_shape, generator=generator, dtype=torch.float64)
        x = self.means[k] + self.stds[k].reshape(-1, *([1] * len(self.event_shape))) * z
        return x.to(device=device, dtype=dtype)

    def component_log_probs(self, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log(w_k·N(x; m·μ_k, (m²σ_k² + s²)I)) per sample and component: [B, K].

        Args:
            x: [B, *event_shape]; m, s: [B], the kernel's mean scale and std.
        """
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x has event shape {tuple(x.shape[1:])}, the mixture {self.event_shape}")
        means, stds, weights = (v.to(x) for v in (self.means, self.stds, self.weights))
        flat = x.flatten(1)
        var = m[:, None] ** 2 * stds**2 + s[:, None] ** 2
        sq = (flat[:, None, :] - m[:, None, None] * means.flatten(1)[None]).pow(2).sum(-1)
        dim = flat.shape[1]
        return torch.log(weights) - 0.5 * dim * torch.log(2 * math.pi * var) - sq / (2 * var)

    def perturbed_log_prob(self, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats [B] of the data pushed through x ↦ m·x + s·z."""
        return torch.logsumexp(self.component_log_probs(x, m, s), dim=1)

    def perturbed_score(self, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """∇_x log p(x) (like x) of the data pushed through x ↦ m·x + s·z."""
        log_probs = self.component_log_probs(x, m, s)
        resp = torch.softmax(log_probs, dim=1)  # posterior over components, stable in any dimension
        means, stds = self.means.to(x), self.stds.to(x)
        var = m[:, None] ** 2 * stds**2 + s[:, None] ** 2
        flat = x.flatten(1)
        pull = (m[:, None, None] * means.flatten(1)[None] - flat[:, None, :]) / var[:, :, None]
        return (resp[:, :, None] * pull).sum(1).reshape(x.shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log-density of the data in nats, [B]."""
        one = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return self.perturbed_log_prob(x, one, torch.zeros_like(one))

    def marginal_log_prob(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log p_t(x) [B] of the data perturbed by the SDE's kernel at times t [B]."""
        return self.perturbed_log_prob(x, *sde.marginal_coefficients(t))

    def score_fn(self, sde: SDE) -> ScoreFn:
        """The exact score function (x [B, ...], t [B]) -> ∇_x log p_t(x) under the given SDE."""

        def score_fn(x, t):
            return self.perturbed_score(x, *sde.marginal_coefficients(t))

        return score_fn


def two_mode_mixture(dim: int = 2) -> GaussianMixture:
    """0.2·N(−5·1, I) + 0.8·N(5·1, I) in `dim` dimensions: the toy data, and the mixture of the demo, the
    tests and the benchmarks, whose exact answers they check samplers and likelihoods against."""
    return GaussianMixture(weights=[0.2, 0.8], means=[[-5.0] * dim, [5.0] * dim], stds=[1.0, 1.0])


def upper_mode_weight(x: torch.Tensor) -> float:
    """The fraction of the points x [B, d] on the heavier mode's side (Σ x > 0) of two_mode_mixture."""
    return (x.flatten(1).sum(1) > 0).double().mean().item()
