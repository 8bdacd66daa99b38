"""Denoising score-matching losses: continuous (any SDE), and the discrete SMLD (NCSN) and DDPM ones.

Conventions of the original code: per-sample squared errors reduced by a mean over dimensions
(reduce_mean=True) or half their sum (reduce_mean=False), then averaged over the batch.

The continuous objective with weighting w is J_w = 1/(T − eps) ∫_eps^T w(t) ℓ(t) dt, where ℓ(t) is the
expected reduced ‖score(x_t, t) + z/s(t)‖² (docs/training.md). With t drawn from a density p (time_sampling),
each sample's loss is w(t)·ℓ̂ / ((T − eps)·p(t)): an unbiased estimate of J_w for every density, which only
changes the variance. Uniform t with the score-matching or likelihood weighting is the original's estimator.
"""
from collections.abc import Callable

import torch

from score_sde.distributed import ONE_PROCESS, Shard
from score_sde.registry import lookup
from score_sde.sde import SDE, VESDE, VPSDE, ScoreFn, expand_to
from score_sde.time_sampling import BinnedTime, lognormal_time, time_density

WEIGHTINGS = ("score_matching", "likelihood", "edm")


def global_noise(batch: torch.Tensor, generator: torch.Generator | None = None, shard: Shard = ONE_PROCESS
                 ) -> torch.Tensor:
    """Standard normal noise for the global batch of which `batch` is this rank's shard; the shard's part."""
    shape = (shard.global_size(batch.shape[0]), *batch.shape[1:])
    return shard.of(torch.randn(shape, generator=generator, device=batch.device, dtype=batch.dtype))


def with_classes(fn: Callable[..., torch.Tensor], class_labels: torch.Tensor | None
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """fn(x, t_or_labels, class_labels) as a function of (x, t_or_labels); fn itself when class_labels is None
    (an unconditional network is then called exactly as before)."""
    if class_labels is None:
        return fn
    return lambda x, t: fn(x, t, class_labels)


def _reduce(losses, reduce_mean):
    flat = losses.flatten(1)
    return flat.mean(1) if reduce_mean else 0.5 * flat.sum(1)


def dsm_losses(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
               reduce_mean: bool = False, likelihood_weighting: bool = False) -> torch.Tensor:
    """Per-sample continuous DSM loss [B] at times t [B] with noise z like x (Song et al. 2021, eq. 7).

    λ(t) = s(t)²: ‖s·score + z‖²; with likelihood_weighting, λ(t) = g(t)²: g²·‖score + z/s‖² (Song et al.
    2021b), which bounds the negative log-likelihood.
    """
    if likelihood_weighting:
        return weighted_dsm_losses(sde, score_fn, x, t, z, loss_weight(sde, t, "likelihood"), reduce_mean)
    mean, std = sde.marginal_prob(x, t)
    score = score_fn(mean + expand_to(std, x) * z, t)
    return _reduce((score * expand_to(std, x) + z) ** 2, reduce_mean)


def weighted_dsm_losses(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                        weight: torch.Tensor, reduce_mean: bool = False) -> torch.Tensor:
    """Per-sample weight·‖score + z/s‖² [B] (reduced as the original), for times t [B], noise z like x and
    per-sample weights [B]: the general form of dsm_losses, where the weight holds w(t) / p(t)."""
    mean, std = sde.marginal_prob(x, t)
    score = score_fn(mean + expand_to(std, x) * z, t)
    return _reduce((score + z / expand_to(std, x)) ** 2, reduce_mean) * weight


def loss_weight(sde: SDE, t: torch.Tensor, weighting: str, eps: float | None = None, sigma_data: float = 0.5,
                edm_density: BinnedTime | None = None) -> torch.Tensor:
    """w(t) [B] of the objective J_w, on the scale of ‖score + z/s‖²:

    - "score_matching": s(t)² (Song et al. 2021, the original's default);
    - "likelihood": g(t)², which makes J_w a bound on the negative log-likelihood (Song et al. 2021b);
    - "edm": EDM's objective E_{ln σ ~ N(P_mean, P_std²)} [λ(σ)‖D − x₀‖²] with λ(σ) = (σ² + σ_d²)/(σ·σ_d)²
      (Karras et al. 2022, eq. 8 and Table 1) written over t: ‖D − x₀‖² = σ²s²‖score + z/s‖² with σ = s/m,
      so w(t) = (T − eps)·p_LN(t)·s²(σ² + σ_d²)/σ_d², p_LN being `edm_density`. Drawn with t ~ p_LN, the
      per-sample loss is EDM's own.
    """
    lookup(dict.fromkeys(WEIGHTINGS), weighting, "weighting")
    eps = sde.likelihood_eps if eps is None else eps
    if weighting == "likelihood":
        return sde.sde(torch.zeros_like(t)[:, None], t)[1] ** 2
    m, s = sde.marginal_coefficients(t)
    if weighting == "score_matching":
        return s**2
    sigma2 = (s / m) ** 2
    return (sde.T - eps) * edm_density.pdf(t) * s**2 * (sigma2 + sigma_data**2) / sigma_data**2


def smld_losses(sde: VESDE, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                labels: torch.Tensor, z: torch.Tensor, reduce_mean: bool = False) -> torch.Tensor:
    """Per-sample NCSN loss [B] (Song & Ermon 2019, eq. 5): σ²·‖model(x + σz, i) + z/σ‖², with labels i
    indexing the noise levels from the largest (0) to the smallest (N − 1), as NCSN does."""
    sigma = sde.discrete_sigmas_on(x.device).to(x.dtype).flip(0)[labels]
    noise = expand_to(sigma, x) * z
    score = model_fn(x + noise, labels)
    return _reduce((score + noise / expand_to(sigma**2, x)) ** 2, reduce_mean) * sigma**2


def ddpm_losses(sde: VPSDE, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                labels: torch.Tensor, z: torch.Tensor, reduce_mean: bool = False) -> torch.Tensor:
    """Per-sample DDPM loss [B] (Ho et al. 2020, eq. 14): ‖model(√ᾱ_i·x + √(1 − ᾱ_i)·z, i) − z‖²."""
    alphas_cumprod = sde.alphas_cumprod_on(x.device).to(x.dtype)[labels]
    perturbed = expand_to(alphas_cumprod.sqrt(), x) * x + expand_to((1 - alphas_cumprod).sqrt(), x) * z
    return _reduce((model_fn(perturbed, labels) - z) ** 2, reduce_mean)


def get_loss_fn(sde: SDE, continuous: bool = True, reduce_mean: bool = False,
                likelihood_weighting: bool = False, eps: float | None = None, t_sampling: str = "uniform",
                weighting: str | None = None, lognormal_mean: float = -1.2, lognormal_std: float = 1.2,
                sigma_data: float = 0.5) -> Callable[..., torch.Tensor]:
    """The training loss as a function loss_fn(fn, batch, generator=None, shard=ONE_PROCESS,
    class_labels=None) -> scalar; with class labels [B], fn is called as fn(x, t, class_labels).

    Continuous: fn is a score function (x, t) and t is drawn from the `t_sampling` density (time_sampling:
    "uniform", "lognormal" with EDM's lognormal_mean / lognormal_std, "importance"); the loss estimates the
    objective of `weighting` (loss_weight: "score_matching", "likelihood", "edm" with sigma_data; None takes
    "likelihood" if likelihood_weighting, the original's knob, else "score_matching"). Discrete: fn is the
    network (x, labels) with integer noise-level labels ~ U{0, ..., N − 1}: the SMLD loss for a VESDE (fn
    returns the score), the DDPM loss for a VPSDE (fn predicts the noise). Other SDEs have no discrete loss.
    eps, the smallest training time, defaults to sde.likelihood_eps (the original's 1e-5): training covers
    the times the likelihood integrates over.

    Under several processes, batch is this rank's shard of a global batch (score_sde.distributed): the times
    and noise are drawn for the global batch and sharded alike, so the ranks together draw what one process
    with the global batch draws.
    """
    eps = sde.likelihood_eps if eps is None else eps
    if weighting is None:
        weighting = "likelihood" if likelihood_weighting else "score_matching"
    elif likelihood_weighting and weighting != "likelihood":
        raise ValueError(f"likelihood_weighting=True contradicts weighting={weighting!r}")
    lookup(dict.fromkeys(WEIGHTINGS), weighting, "weighting")
    if continuous:
        density = time_density(sde, t_sampling, eps, lognormal_mean=lognormal_mean,
                               lognormal_std=lognormal_std)
        edm_density = lognormal_time(sde, eps, lognormal_mean, lognormal_std) if weighting == "edm" else None
        original = t_sampling == "uniform" and weighting != "edm"  # the original's estimator, bit for bit

        def loss_fn(score_fn, batch, generator=None, shard=ONE_PROCESS, class_labels=None):
            score_fn = with_classes(score_fn, class_labels)
            n = shard.global_size(batch.shape[0])
            t = shard.of(density.sample(n, generator, batch.device, batch.dtype))
            z = global_noise(batch, generator, shard)
            if original:
                return dsm_losses(sde, score_fn, batch, t, z, reduce_mean, weighting == "likelihood").mean()
            weight = loss_weight(sde, t, weighting, eps, sigma_data, edm_density) / ((sde.T - eps) *
                                                                                      density.pdf(t))
            return weighted_dsm_losses(sde, score_fn, batch, t, z, weight, reduce_mean).mean()

        return loss_fn
    if weighting != "score_matching" or t_sampling != "uniform":
        raise ValueError(f"weighting={weighting!r} and t_sampling={t_sampling!r} apply to continuous "
                         "training only (the discrete losses weight and draw their levels as SMLD and DDPM "
                         "do)")
    if isinstance(sde, VESDE):
        discrete_losses = smld_losses
    elif isinstance(sde, VPSDE):
        discrete_losses = ddpm_losses
    else:
        raise ValueError(
            f"discrete training is defined for VESDE (SMLD) and VPSDE (DDPM), not {type(sde).__name__}"
        )

    def loss_fn(model_fn, batch, generator=None, shard=ONE_PROCESS, class_labels=None):
        model_fn = with_classes(model_fn, class_labels)
        n = shard.global_size(batch.shape[0])
        labels = shard.of(torch.randint(0, sde.N, (n,), generator=generator, device=batch.device))
        z = global_noise(batch, generator, shard)
        return discrete_losses(sde, model_fn, batch, labels, z, reduce_mean).mean()

    return loss_fn
