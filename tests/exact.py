"""Exact answers shared by the tests: the 2-D two-mode mixture and what each sampler should give on it."""
import math

import torch
from scipy.optimize import brentq
from scipy.stats import norm

from score_sde.analytic import two_mode_mixture
from score_sde.sde import VESDE, VPSDE, subVPSDE

WEIGHT = 0.8  # of the mode at (5, 5)


def two_modes():
    """0.2·N((−5, −5), I) + 0.8·N((5, 5), I), the issue's test mixture."""
    return two_mode_mixture()


def all_sdes(N=1000):
    return [VPSDE(N=N), subVPSDE(N=N), VESDE(N=N)]


def sde_id(sde):
    return type(sde).__name__


def mode_stats(x):
    """Weight of the (5, 5) mode, and per-coordinate means and stds of each mode (split at x1 + x2 = 0)."""
    upper = x.sum(1) > 0
    return upper.double().mean().item(), [(x[m].mean(0), x[m].std(0)) for m in (upper, ~upper)]


def assert_matches_two_modes(x, weight=WEIGHT, weight_tol=0.02):
    got, modes = mode_stats(x)
    assert abs(got - weight) <= weight_tol, f"mode weight {got:.4f}, expected {weight:.4f} ± {weight_tol}"
    for (mean, std), centre in zip(modes, (5.0, -5.0)):
        torch.testing.assert_close(mean, torch.full_like(mean, centre), atol=0.1, rtol=0)
        torch.testing.assert_close(std, torch.ones_like(std), atol=0.1, rtol=0)


def _projected_cdf(sde, y, t):
    """CDF at y of the mixture's projection on (1, 1)/√2 at time t: a 1-D two-component mixture."""
    m, s = (v.item() for v in sde.marginal_coefficients(torch.tensor([t], dtype=torch.float64)))
    scale = math.sqrt(m**2 + s**2)
    centre = 5 * math.sqrt(2) * m
    return (1 - WEIGHT) * norm.cdf((y + centre) / scale) + WEIGHT * norm.cdf((y - centre) / scale)


def ode_weight_from_prior(sde, eps):
    """Mode weight the exact probability-flow ODE gives when started from the SDE's prior instead of p_T.

    The score is linear across the modes' axis, so the flow acts on the projection y = (x1 + x2)/√2 alone, and
    monotonically: the points that end in the upper mode are those starting above the level c whose p_T mass
    above equals p_eps's mass above 0. The prior puts mass P(N(0, var) > c) there.
    """
    upper_mass = 1 - _projected_cdf(sde, 0.0, eps)
    c = brentq(lambda y: 1 - _projected_cdf(sde, y, sde.T) - upper_mass, -200.0, 200.0)
    log_density_at_zero = sde.prior_logp(torch.zeros(1, 1, dtype=torch.float64)).item()  # −½log(2π·var)
    prior_std = math.sqrt(math.exp(-2 * log_density_at_zero) / (2 * math.pi))
    return 1 - norm.cdf(c / prior_std)
