"""Correctors of the PC sampler: score-based MCMC at a fixed noise level t_i.

`update(x, t, noise)` runs n_steps Langevin steps x ← x + ε·score + √(2ε)·z, the k-th with z = noise[k] (the
caller draws the `noises` = n_steps standard normal tensors, as for predictors), and returns (x, x_mean); the
two correctors differ only in how they choose the step size ε.
"""
from collections.abc import Sequence

import torch

from score_sde.sde import SDE, ScoreFn, expand_to


class LangevinCorrector:
    """Langevin dynamics with the step set by a target signal-to-noise ratio (Song et al. 2021, Alg. 4–5):
    ε = 2α·(snr·‖z‖ / ‖score‖)², norms averaged over the batch as in the original code."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, snr: float = 0.16, n_steps: int = 1):
        if snr <= 0 or n_steps < 0:
            raise ValueError(f"need snr > 0 and n_steps >= 0, got snr={snr}, n_steps={n_steps}")
        self.sde = sde
        self.score_fn = score_fn
        self.snr = snr
        self.n_steps = n_steps
        self.evaluations = self.noises = n_steps

    def step_size(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor, noise: torch.Tensor
                  ) -> torch.Tensor:
        score_norm = score.flatten(1).norm(dim=1).mean()
        noise_norm = noise.flatten(1).norm(dim=1).mean()
        return 2 * self.sde.langevin_step_scale(t) * (self.snr * noise_norm / score_norm) ** 2

    def update(self, x: torch.Tensor, t: torch.Tensor, noise: Sequence[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        x_mean = x
        for z in noise:
            score = self.score_fn(x, t)
            eps = self.step_size(x, t, score, z)
            x_mean = x + expand_to(eps, x) * score
            x = x_mean + expand_to(torch.sqrt(2 * eps), x) * z
        return x, x_mean


class AnnealedLangevinCorrector(LangevinCorrector):
    """Annealed Langevin dynamics of NCSN / NCSNv2 (Song & Ermon 2019, Alg. 1): ε = 2α·(snr·σ_t)², a step
    proportional to the noise variance, independent of the batch."""

    def step_size(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor, noise: torch.Tensor
                  ) -> torch.Tensor:
        std = self.sde.marginal_coefficients(t)[1]
        return 2 * self.sde.langevin_step_scale(t) * (self.snr * std) ** 2


class NoneCorrector:
    """No corrector: predictor-only sampling."""

    evaluations = 0
    noises = 0

    def __init__(self, sde: SDE, score_fn: ScoreFn, snr: float = 0.16, n_steps: int = 1):
        pass

    def update(self, x: torch.Tensor, t: torch.Tensor, noise: Sequence[torch.Tensor] = ()
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


CORRECTORS = {
    "langevin": LangevinCorrector,
    "ald": AnnealedLangevinCorrector,
    "none": NoneCorrector,
}
# Any corrector above, as pc_step takes it.
Corrector = LangevinCorrector | AnnealedLangevinCorrector | NoneCorrector
