"""Per-step callbacks for the samplers: callback(step, x, x0_hat) after every step, with x̂₀ the data
prediction (Tweedie's formula) of the step's last score evaluation, so that watching costs no evaluation."""
from collections.abc import Callable

import torch

from score_sde.sde import SDE, ScoreFn, expand_to

# callback(step, x, x0_hat), as pc_sample, ode_sample and fast_sample take it.
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class LastEvaluation:
    """score_fn that remembers its last call, for the x̂₀ = (x + s²·score) / m a callback receives."""

    def __init__(self, sde: SDE, score_fn: ScoreFn):
        self.sde, self.score_fn, self.last = sde, score_fn, None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        score = self.score_fn(x, t)
        self.last = (x, t, score)
        return score

    def x0_hat(self) -> torch.Tensor:
        x, t, score = self.last
        m, s = self.sde.marginal_coefficients(t)
        return (x + expand_to(s.to(x.dtype), x) ** 2 * score) / expand_to(m.to(x.dtype), x)
