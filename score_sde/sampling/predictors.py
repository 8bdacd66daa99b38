"""Predictors of the PC sampler: one step of a reverse-time SDE solver, from noise level t_i to t_{i-1}.

Each class holds what it needs for the whole run. `update(x, t, noise)` returns the new sample and its
noise-free mean (x, x_mean); `noise` is a tuple of `noises` standard normal tensors like x, drawn by the
caller, so that a step is a pure tensor function that compiles into one graph (a `torch.Generator` cannot be
traced). `evaluations` is the number of score evaluations per step.
"""
import math
from collections.abc import Sequence

import torch

from score_sde.sde import SDE, ScoreFn, expand_to


class EulerMaruyamaPredictor:
    """x ← x − [f − g²·score]·Δt + g·√Δt·z with Δt = T/N (Song et al. 2021, eq. 6 discretized)."""

    evaluations = 1
    noises = 1

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.rsde = sde.reverse(score_fn, probability_flow)
        self.dt = -sde.T / sde.N

    def update(self, x: torch.Tensor, t: torch.Tensor, noise: Sequence[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x + drift * self.dt
        return x_mean + expand_to(diffusion * math.sqrt(-self.dt), x) * noise[0], x_mean


class ReverseDiffusionPredictor:
    """Reverse of the SDE's own discrete step: x ← x − f_i + G_i²·score + G_i·z (Song et al. 2021, eq. 46)."""

    evaluations = 1
    noises = 1

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.rsde = sde.reverse(score_fn, probability_flow)

    def update(self, x: torch.Tensor, t: torch.Tensor, noise: Sequence[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        f, G = self.rsde.discretize(x, t)
        x_mean = x - f
        return x_mean + expand_to(G, x) * noise[0], x_mean


class AncestralSamplingPredictor:
    """Ancestral sampling of the DDPM (VP) or SMLD (VE) chain: x ← (x + g2·score)/a + std·z (eq. 47)."""

    evaluations = 1
    noises = 1

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        if probability_flow:
            raise ValueError("ancestral sampling is stochastic by definition: use probability_flow=False")
        sde.ancestral_coefficients(torch.ones(1))  # raises now, before the loop, if the SDE has no chain
        self.sde = sde
        self.score_fn = score_fn

    def update(self, x: torch.Tensor, t: torch.Tensor, noise: Sequence[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        a, g2, std = self.sde.ancestral_coefficients(t)
        x_mean = (x + expand_to(g2, x) * self.score_fn(x, t)) / expand_to(a, x)
        return x_mean + expand_to(std, x) * noise[0], x_mean


class NonePredictor:
    """No predictor: corrector-only sampling (annealed Langevin dynamics with the `ald` corrector).
    `pc_sample` skips it, so that the corrector's last mean is what denoising returns."""

    evaluations = 0
    noises = 0

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        pass


PREDICTORS = {
    "euler_maruyama": EulerMaruyamaPredictor,
    "reverse_diffusion": ReverseDiffusionPredictor,
    "ancestral_sampling": AncestralSamplingPredictor,
    "none": NonePredictor,
}
# Any predictor above, as pc_step takes it.
Predictor = EulerMaruyamaPredictor | ReverseDiffusionPredictor | AncestralSamplingPredictor | NonePredictor
