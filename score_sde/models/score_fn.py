"""A network's output as a score function: the noise-conditioning conventions of the original score_sde.

The original code (models/utils.py, get_score_fn) feeds and reads its networks differently per SDE:

| SDE | continuous | labels given to the network | the network's output | score |
|---|---|---|---|---|
| VP | yes | 999·t (float) | noise prediction ε̂ | −ε̂ / s(t) |
| VP | no | t·(N − 1) (float) | noise prediction ε̂ | −ε̂ / √(1 − ᾱ_i), i = ⌊t·(N − 1)⌋ |
| sub-VP | either | 999·t (float) | noise prediction ε̂ | −ε̂ / s(t) |
| VE | yes | σ(t) (float) | the score | output |
| VE | no | round((T − t)·(N − 1)) (int64) | the score | output |

The VE index counts from the largest noise level (0) down, as NCSN's `sigmas` buffer is ordered.

Class-conditional networks (num_classes > 0) take class labels as a third argument; the functions here
pass `class_labels` [B] through (None: the network is called with (x, labels) only, which for a conditional
network means the null class, and which networks without the argument, such as NCSN, accept).
"""
from collections.abc import Callable

import torch
from torch import nn

from score_sde.sde import SDE, VESDE, VPSDE, ScoreFn, check_time, expand_to, subVPSDE

ModelFn = Callable[..., torch.Tensor]  # (x, labels) or (x, labels, class_labels) -> output


def _call(model_fn, x, labels, class_labels):
    """model_fn(x, labels), or model_fn(x, labels, class_labels) when there are class labels."""
    return model_fn(x, labels) if class_labels is None else model_fn(x, labels, class_labels)


def get_model_fn(model: nn.Module, train: bool = False) -> ModelFn:
    """The network as a function (x, labels, class_labels=None) -> output, run in train or eval mode (set
    at every call, as the original does, so a train-mode and an eval-mode function can share one network)."""

    def model_fn(x, labels, class_labels=None):
        model.train(train)
        return _call(model, x, labels, class_labels)

    return model_fn


def _predicts_noise(sde):
    if isinstance(sde, (VPSDE, subVPSDE)):
        return True
    if isinstance(sde, VESDE):
        return False
    raise ValueError(f"get_score_fn supports VPSDE, subVPSDE and VESDE, not {type(sde).__name__}")


def noise_labels(sde: SDE, t: torch.Tensor, continuous: bool = True) -> torch.Tensor:
    """The noise-conditioning labels [B] the original passes to its networks at times t [B] (table above).

    Args:
        sde: VPSDE, subVPSDE or VESDE.
        t: [B] times in [0, T].
        continuous: whether the network was trained in continuous time; the original ignores it for
            sub-VP, which has no discrete chain.
    """
    if _predicts_noise(sde):
        if continuous or isinstance(sde, subVPSDE):
            return t * 999  # the embedding's range for continuous VP models is that of DDPM's 1000 steps
        return t * (sde.N - 1)
    if continuous:
        return sde.marginal_coefficients(t)[1]
    return torch.round((sde.T - t) * (sde.N - 1)).long()


def noise_std(sde: SDE, t: torch.Tensor, continuous: bool = True) -> torch.Tensor:
    """The std [B] by which a VP / sub-VP network's noise prediction is divided to give the score.

    Continuous: s(t) of the SDE's kernel. Discrete VP: √(1 − ᾱ_i) of the DDPM chain at level
    i = ⌊t·(N − 1)⌋ (the original truncates the float label with .long()).
    """
    if continuous or isinstance(sde, subVPSDE):
        return sde.marginal_coefficients(t)[1]
    index = (t * (sde.N - 1)).long()
    return torch.sqrt(1.0 - sde.alphas_cumprod_on(t.device)[index]).to(t.dtype)


PRECONDITIONINGS = ("none", "edm")


def get_score_fn(sde: SDE, model: nn.Module, continuous: bool = True, train: bool = False,
                 preconditioning: str = "none", sigma_data: float = 0.5) -> ScoreFn:
    """The network as a score function score_fn(x [B, ...], t [B], class_labels=None) -> ∇ₓ log p_t(x), like
    x (∇ₓ log p_t(x | y) with class_labels y [B] for a class-conditional network).

    Args:
        sde: VPSDE, subVPSDE or VESDE; another SDE raises ValueError.
        model: a network (x, labels) -> tensor like x, or (x, labels, class_labels) for a class-conditional
            one.
        continuous: the network was trained with continuous time (True) or on the discrete DDPM / SMLD
            noise levels (False).
        train: run the network in train mode (dropout on) rather than eval mode.
        preconditioning: "none", the original's conventions (table above); or "edm", the network as the F
            of EDM's denoiser (edm_score_fn), continuous time only.
        sigma_data: the data's standard deviation assumed by "edm".

    Returns:
        score_fn. Its output has x's dtype: networks that divide by the float64 `sigmas` buffer return
        float64 for float32 input, which the original passed on to its samplers.
    """
    model_fn = get_model_fn(model, train=train)
    if preconditioning == "edm":
        if not continuous:
            raise ValueError("preconditioning 'edm' is for continuous-time training (training.continuous)")
        return edm_score_fn(sde, model_fn, sigma_data)
    if preconditioning != "none":
        raise ValueError(f"unknown preconditioning {preconditioning!r}; expected one of "
                         f"{list(PRECONDITIONINGS)}")
    predicts_noise = _predicts_noise(sde)

    def score_fn(x, t, class_labels=None):
        check_time(x, t, sde.T)
        output = model_fn(x, noise_labels(sde, t, continuous), class_labels)
        if predicts_noise:
            output = -output / expand_to(noise_std(sde, t, continuous), output)
        return output.to(x.dtype)

    return score_fn


def edm_score_fn(sde: SDE, model_fn: ModelFn, sigma_data: float = 0.5) -> ScoreFn:
    """The score of EDM's preconditioned denoiser (Karras et al. 2022, Table 1, eq. 7), for any SDE.

    With x = m·(x₀ + σ·z), σ = s/m, the denoiser works on x̂ = x/m: D(x̂; σ) = c_skip·x̂ + c_out·F(c_in·x̂,
    c_noise), with c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²). Tweedie's
    formula D = (x + s²·score)/m gives the score (m·D − x)/s², so the samplers and the likelihood are
    unchanged. c_noise is the network's own continuous label (999·t for VP and sub-VP, σ for VE) rather than
    EDM's ln(σ)/4: each family's time embedding then sees the range it was built for. The returned
    score_fn(x, t, class_labels=None) passes class labels on to model_fn.
    """
    def score_fn(x, t, class_labels=None):
        check_time(x, t, sde.T)
        m, s = sde.marginal_coefficients(t)
        sigma = s / m
        total = sigma**2 + sigma_data**2
        x_hat = x / expand_to(m, x)
        output = _call(model_fn, x_hat * expand_to(total.rsqrt(), x), noise_labels(sde, t, continuous=True),
                       class_labels)
        denoised = (expand_to(sigma_data**2 / total, x) * x_hat
                    + expand_to(sigma * sigma_data * total.rsqrt(), x) * output)
        return ((expand_to(m, x) * denoised - x) / expand_to(s**2, x)).to(x.dtype)

    return score_fn
