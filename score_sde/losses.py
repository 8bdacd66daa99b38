"""Denoising score-matching losses: continuous (any SDE), and the discrete SMLD (NCSN) and DDPM ones.

Conventions of the original code: per-sample squared errors reduced by a mean over dimensions
(reduce_mean=True) or half their sum (reduce_mean=False), then averaged over the batch.
"""
import torch

from score_sde.distributed import ONE_PROCESS
from score_sde.sde import VESDE, VPSDE, expand_to


def _global_noise(batch, generator, shard):
    """Standard normal noise for the global batch of which `batch` is this rank's shard; the shard's part."""
    shape = (shard.global_size(batch.shape[0]), *batch.shape[1:])
    return shard.of(torch.randn(shape, generator=generator, device=batch.device, dtype=batch.dtype))


def _reduce(losses, reduce_mean):
    flat = losses.flatten(1)
    return flat.mean(1) if reduce_mean else 0.5 * flat.sum(1)


def dsm_losses(sde, score_fn, x, t, z, reduce_mean=False, likelihood_weighting=False):
    """Per-sample continuous DSM loss [B] at times t [B] with noise z like x (Song et al. 2021, eq. 7).

    λ(t) = s(t)²: ‖s·score + z‖²; with likelihood_weighting, λ(t) = g(t)²: g²·‖score + z/s‖² (Song et al.
    2021b), which bounds the negative log-likelihood.
    """
    mean, std = sde.marginal_prob(x, t)
    score = score_fn(mean + expand_to(std, x) * z, t)
    if not likelihood_weighting:
        return _reduce((score * expand_to(std, x) + z) ** 2, reduce_mean)
    g2 = sde.sde(torch.zeros_like(x), t)[1] ** 2
    return _reduce((score + z / expand_to(std, x)) ** 2, reduce_mean) * g2


def smld_losses(sde, model_fn, x, labels, z, reduce_mean=False):
    """Per-sample NCSN loss [B] (Song & Ermon 2019, eq. 5): σ²·‖model(x + σz, i) + z/σ‖², with labels i
    indexing the noise levels from the largest (0) to the smallest (N − 1), as NCSN does."""
    sigma = sde.discrete_sigmas_on(x.device).to(x.dtype).flip(0)[labels]
    noise = expand_to(sigma, x) * z
    score = model_fn(x + noise, labels)
    return _reduce((score + noise / expand_to(sigma**2, x)) ** 2, reduce_mean) * sigma**2


def ddpm_losses(sde, model_fn, x, labels, z, reduce_mean=False):
    """Per-sample DDPM loss [B] (Ho et al. 2020, eq. 14): ‖model(√ᾱ_i·x + √(1 − ᾱ_i)·z, i) − z‖²."""
    alphas_cumprod = sde.alphas_cumprod_on(x.device).to(x.dtype)[labels]
    perturbed = expand_to(alphas_cumprod.sqrt(), x) * x + expand_to((1 - alphas_cumprod).sqrt(), x) * z
    return _reduce((model_fn(perturbed, labels) - z) ** 2, reduce_mean)


def get_loss_fn(sde, continuous=True, reduce_mean=False, likelihood_weighting=False, eps=1e-5):
    """The training loss as a function loss_fn(fn, batch, generator=None, shard=ONE_PROCESS) -> scalar.

    Continuous: fn is a score function (x, t) and t ~ U(eps, T). Discrete: fn is the network (x, labels)
    with integer noise-level labels ~ U{0, ..., N − 1}: the SMLD loss for a VESDE (fn returns the score), the
    DDPM loss for a VPSDE (fn predicts the noise). Other SDEs have no discrete loss.

    Under several processes, batch is this rank's shard of a global batch (score_sde.distributed): the times
    and noise are drawn for the global batch and sharded alike, so the ranks together draw what one process
    with the global batch draws.
    """
    if continuous:
        def loss_fn(score_fn, batch, generator=None, shard=ONE_PROCESS):
            n = shard.global_size(batch.shape[0])
            t = eps + (sde.T - eps) * shard.of(torch.rand(n, generator=generator, device=batch.device,
                                                          dtype=batch.dtype))
            z = _global_noise(batch, generator, shard)
            return dsm_losses(sde, score_fn, batch, t, z, reduce_mean, likelihood_weighting).mean()

        return loss_fn
    if likelihood_weighting:
        raise ValueError("likelihood_weighting applies to continuous training only")
    if isinstance(sde, VESDE):
        discrete_losses = smld_losses
    elif isinstance(sde, VPSDE):
        discrete_losses = ddpm_losses
    else:
        raise ValueError(
            f"discrete training is defined for VESDE (SMLD) and VPSDE (DDPM), not {type(sde).__name__}"
        )

    def loss_fn(model_fn, batch, generator=None, shard=ONE_PROCESS):
        n = shard.global_size(batch.shape[0])
        labels = shard.of(torch.randint(0, sde.N, (n,), generator=generator, device=batch.device))
        z = _global_noise(batch, generator, shard)
        return discrete_losses(sde, model_fn, batch, labels, z, reduce_mean).mean()

    return loss_fn
