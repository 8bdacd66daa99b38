"""The variational bound on the negative log-likelihood that the likelihood-weighted DSM loss gives
(Song et al. 2021b, Thm. 1), estimated without an ODE solve.

For data x₀ and times in [eps, T], with x_t = m·x₀ + s·z,

  L_eps(x₀) = E[−log π(x_T)] + ½ ∫_eps^T E[ g²‖score(x_t, t) + z/s‖² − g²·d/s² − 2∇·f(x_t, t) ] dt.

With the exact score its mean over the data is H(p_eps) + KL(p_T ‖ π) (docs/training.md derives it): the
entropy of the data perturbed to eps plus the prior mismatch. A model's score only adds to it, so L_eps
bounds the cross-entropy of the model's p_eps from above, as the probability-flow likelihood measures it,
with the eps truncation and the prior mismatch as the only other gaps.

For pixels, `discrete_bound` adds a reconstruction term and so bounds −log P of the pixels themselves
(docs/training.md §4): x₀ is a uniform dequantization of the pixels, and the decoder P(pixels | x_eps) is
the posterior of the bins under a uniform prior over them.
"""
import torch

from score_sde.losses import loss_weight
from score_sde.sde import SDE, ScoreFn, expand_to, randn_like
from score_sde.time_sampling import importance_time


def dsm_bound(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, eps: float | None = None, num_times: int = 1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """An unbiased estimate of L_eps(x) [B] in nats, one per item of x [B, ...] (model space).

    The time integral is estimated with num_times draws of t from the importance density ∝ g²/s²
    (time_sampling.importance_time), each with its own noise z; the prior term with one draw of x_T. eps
    defaults to sde.likelihood_eps, where the PF-ODE likelihood starts.
    """
    eps = sde.likelihood_eps if eps is None else eps
    if num_times < 1:
        raise ValueError(f"num_times must be a positive number of draws, got {num_times}")
    batch, dims = x.shape[0], x[0].numel()
    density = importance_time(sde, eps)
    end = torch.full((batch,), sde.T, dtype=x.dtype, device=x.device)
    mean_T, std_T = sde.marginal_prob(x, end)
    total = -sde.prior_logp(mean_T + expand_to(std_T, x) * randn_like(x, generator))
    for _ in range(num_times):
        t = density.sample(batch, generator, x.device, x.dtype)
        z = randn_like(x, generator)
        mean, std = sde.marginal_prob(x, t)
        score = score_fn(mean + expand_to(std, x) * z, t)
        g2 = loss_weight(sde, t, "likelihood")  # g(t)²
        drift_rate = sde.sde(torch.ones_like(x[:1]).expand_as(x), t)[0].flatten(1)[:, 0]  # f = a(t)·x
        # g²‖score + z/s‖² − g²·d/s², with d replaced by ‖z‖² (the same mean): the two 1/s² terms then cancel
        # exactly instead of in expectation, which removes their χ² noise from the estimate
        error = score.flatten(1).pow(2).sum(1) + 2 * (score * z).flatten(1).sum(1) / std
        integrand = g2 * error - 2 * drift_rate * dims
        total = total + 0.5 * integrand / density.pdf(t) / num_times
    return total


def reconstruction_term(sde: SDE, x: torch.Tensor, eps: float | None = None, low: float = -1.0,
                        high: float = 1.0, num_bins: int = 256, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """E[log q(x_eps | pixels) − log P(pixels | x_eps)] [B] in nats, one draw, for x [B, ...] a uniform
    dequantization of pixels in num_bins equal bins of [low, high] (model space).

    With P(pixels | v) = q(v | pixels) / Σ_k q(v | bin k) (the bins' posterior under a uniform prior), the
    term is log Σ_k q(v | bin k) per dimension. q(v | bin k) is the bin's uniform density pushed through
    v = m·x₀ + s·z, (Φ((v − m·lo_k)/s) − Φ((v − m·hi_k)/s)) / (m·w), and over contiguous bins the sum
    telescopes to the same expression with lo = low, hi = high: its log is −log(m·w) inside the range, a
    little less near its ends, where no bin lies beyond.
    """
    eps = sde.likelihood_eps if eps is None else eps
    t = torch.full((x.shape[0],), eps, dtype=torch.float64, device=x.device)
    m, s = (expand_to(c, x) for c in sde.marginal_coefficients(t))
    v = m * x.double() + s * randn_like(x.double(), generator)
    above_low, above_high = (v - m * low) / s, (v - m * high) / s
    log_low = torch.special.log_ndtr(above_low)  # log Φ(a), with a > b: Φ(a) − Φ(b) = Φ(a)(1 − Φ(b)/Φ(a))
    inside = log_low + torch.log1p(-torch.exp(torch.special.log_ndtr(above_high) - log_low))
    width = (high - low) / num_bins
    return (inside - torch.log(m * width)).flatten(1).sum(1).to(x.dtype)


def discrete_bound(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, eps: float | None = None, num_times: int = 1,
                   low: float = -1.0, high: float = 1.0, num_bins: int = 256,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """An unbiased estimate [B] (nats) of an upper bound on −log P(pixels), for x [B, ...] a uniform
    dequantization of the pixels in model space: dsm_bound (the model's −log p_eps) plus the
    reconstruction term. Divided by d·ln 2 it is bits/dim with no further offset."""
    return (dsm_bound(sde, score_fn, x, eps, num_times, generator)
            + reconstruction_term(sde, x, eps, low, high, num_bins, generator))
