"""The variational bound on the negative log-likelihood that the likelihood-weighted DSM loss gives
(Song et al. 2021b, Thm. 1), estimated without an ODE solve.

For data x₀ and times in [eps, T], with x_t = m·x₀ + s·z,

  L_eps(x₀) = E[−log π(x_T)] + ½ ∫_eps^T E[ g²‖score(x_t, t) + z/s‖² − g²·d/s² − 2∇·f(x_t, t) ] dt.

With the exact score its mean over the data is H(p_eps) + KL(p_T ‖ π) (docs/training.md derives it): the
entropy of the data perturbed to eps plus the prior mismatch. A model's score only adds to it, so L_eps
bounds the cross-entropy of the model's p_eps from above, as the probability-flow likelihood measures it,
with the eps truncation and the prior mismatch as the only other gaps.
"""
import torch

from score_sde.losses import loss_weight
from score_sde.sde import expand_to, randn_like
from score_sde.time_sampling import importance_time


def dsm_bound(sde, score_fn, x, eps=1e-5, num_times=1, generator=None):
    """An unbiased estimate of L_eps(x) [B] in nats, one per item of x [B, ...] (model space).

    The time integral is estimated with num_times draws of t from the importance density ∝ g²/s²
    (time_sampling.importance_time), each with its own noise z; the prior term with one draw of x_T.
    """
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
