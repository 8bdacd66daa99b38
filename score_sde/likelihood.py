"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, App. D.2), and bits/dim.

Along the ODE dx/dt = f̃(x, t), d log p_t(x(t))/dt = −∇·f̃, so integrating x from eps to T together with the
divergence gives log p_eps(x) = log p_T(x(T)) + ∫_eps^T ∇·f̃ dt, with p_T replaced by the prior.
"""
import math
from collections.abc import Callable, Sequence

import torch

from score_sde.registry import lookup
from score_sde.sampling.ode import probability_flow_drift
from score_sde.sampling.odeint import odeint
from score_sde.sde import SDE, ScoreFn, randn_like


def rademacher_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1


# Hutchinson's probe distributions; "exact" takes the full Jacobian trace instead.
PROBES = {"rademacher": rademacher_like, "gaussian": randn_like, "exact": None}


def exact_divergence(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """tr(∂out/∂x) per sample [B], one backward pass per dimension: for small dimensions only."""
    flat_out = out.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(flat_out.shape[1]):
        (row,) = torch.autograd.grad(flat_out[:, i].sum(), x, retain_graph=True)
        div = div + row.flatten(1)[:, i]
    return div


def drift_and_divergence(drift_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                         t: torch.Tensor, probe: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The drift (like x) and its divergence [B] from one forward pass: with a probe v, the Hutchinson
    estimate vᵀ(∂f/∂x)v from one vector-Jacobian product; with probe None, the exact trace."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        drift = drift_fn(x, t)
        if probe is None:
            div = exact_divergence(drift, x)
        else:
            (vjp,) = torch.autograd.grad(drift, x, probe)
            div = (vjp * probe).flatten(1).sum(1)
    return drift.detach(), div.detach()


def log_likelihood(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, eps: float | None = None, rtol: float = 1e-5,
                   atol: float = 1e-5, method: str = "rk45", divergence: str = "rademacher",
                   prior_logp: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   generator: torch.Generator | None = None, progress: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """log p_eps(x) in nats through the probability-flow ODE.

    Args:
        sde, score_fn: the forward SDE and a score function (x [B, ...], t [B]) -> like x.
        x: [B, ...] points in model space (e.g. dequantized images scaled to [-1, 1]).
        eps: the start time of the integration (default: sde.likelihood_eps, the original's 1e-5).
        rtol, atol, method: the integrator's tolerances and name ("rk45" on the device, "scipy-rk45").
        divergence: "rademacher" or "gaussian" (Hutchinson, one probe per sample fixed along the path)
            or "exact" (full Jacobian trace, for small dimensions).
        prior_logp: optional z [B, ...] -> [B] used at T in place of sde.prior_logp.
        generator: a torch.Generator for the Hutchinson probes.
    Returns:
        (logp [B] in nats, z [B, ...] the latent at T, nfe the number of score evaluations).
    """
    make_probe = lookup(PROBES, divergence, "divergence")
    eps = sde.likelihood_eps if eps is None else eps
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
    probe = make_probe(x, generator) if make_probe else None
    drift_fn = probability_flow_drift(sde, score_fn)
    batch = x.shape[0]

    def augmented(t, state):
        drift, div = drift_and_divergence(drift_fn, state[:, :-1].reshape(x.shape), t.expand(batch), probe)
        return torch.cat([drift.flatten(1), div[:, None]], dim=1)

    start = torch.cat([x.detach().flatten(1), x.new_zeros(batch, 1)], dim=1)
    end, nfe = odeint(augmented, start, eps, sde.T, rtol, atol, method, progress)
    z = end[:, :-1].reshape(x.shape)
    prior = (prior_logp or sde.prior_logp)(z)
    return prior + end[:, -1], z, nfe


def bits_per_dim(logp: torch.Tensor, x_shape: Sequence[int], centered: bool = True, num_bits: int = 8
                 ) -> torch.Tensor:
    """Bits/dim of discrete num_bits data from logp [B] (nats) of its dequantized version in model space.

    With pixels v in {0, ..., 2^b − 1}, dequantized u = (v + U(0, 1)) / 2^b in [0, 1], and model input
    x = 2u − 1 (centered) or u, −log2 P(v) <= −log2 p(x)/D − log2|dx/du| + b per dimension
    (docs/likelihood.md).
    Returns [B].
    """
    num_dims = math.prod(x_shape[1:])
    log2_scale = 1.0 if centered else 0.0
    return -logp / (num_dims * math.log(2)) - log2_scale + num_bits


