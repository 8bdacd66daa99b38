"""The on-device Dormand–Prince integrator and the probability-flow ODE sampler, against exact answers."""
import math

import pytest
import torch
from exact import all_sdes, assert_matches_two_modes, mode_stats, ode_weight_from_prior, sde_id, two_modes

from score_sde.likelihood import log_likelihood
from score_sde.sampling import ode_sample
from score_sde.sampling.odeint import dopri5, odeint
from score_sde.sde import VPSDE

MIX = two_modes()
NUM = 5000


def gaussian_decay(t, y):
    return -2 * t * y  # y(t) = y(t0)·exp(t0² − t²)


@pytest.mark.parametrize("t0, t1", [(0.0, 2.0), (2.0, 0.5)])
def test_dopri5_solves_a_known_ode_like_scipy(t0, t1):
    y0 = torch.linspace(-1, 1, 7, dtype=torch.float64).reshape(7, 1)
    exact = y0 * math.exp(t0**2 - t1**2)
    y, nfe = odeint(gaussian_decay, y0, t0, t1, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(y, exact, rtol=1e-6, atol=1e-7)
    y_scipy, nfe_scipy = odeint(gaussian_decay, y0, t0, t1, rtol=1e-8, atol=1e-8, method="scipy-rk45")
    # Same tableau and the same step-size control as scipy's RK45: the same steps, to rounding.
    assert nfe == nfe_scipy
    torch.testing.assert_close(y, y_scipy, rtol=1e-12, atol=1e-12)


def test_dopri5_error_follows_the_tolerance():
    y0 = torch.ones(1, 1, dtype=torch.float64)
    errors = [(odeint(gaussian_decay, y0, 0.0, 2.0, rtol=tol, atol=tol)[0] - math.exp(-4)).abs().item()
              for tol in (1e-4, 1e-7)]
    assert errors[1] < errors[0] / 100 and errors[1] < 1e-6


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown ODE method 'euler'; expected one of"):
        odeint(gaussian_decay, torch.ones(1, 1), 0.0, 1.0, method="euler")


def exact_prior_samples(sde, num, gen):
    """Exact samples of p_T: data samples pushed through the kernel."""
    m, s = sde.marginal_coefficients(torch.ones(num, dtype=torch.float64))
    return m[:, None] * MIX.sample(num, generator=gen) + s[:, None] * torch.randn(num, 2, generator=gen,
                                                                                 dtype=torch.float64)


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_ode_from_exact_p_T_recovers_mixture(sde):
    gen = torch.Generator().manual_seed(0)
    z = exact_prior_samples(sde, NUM, gen)
    x, nfe = ode_sample(sde, MIX.score_fn(sde), (NUM, 2), z=z, dtype=torch.float64)
    assert_matches_two_modes(x)
    assert 20 < nfe < 500


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_ode_from_prior_carries_the_prior_mismatch(sde):
    """Deterministic flow: whatever the prior puts on the far side of the flow's mode boundary ends there."""
    gen = torch.Generator().manual_seed(1)
    x, _ = ode_sample(sde, MIX.score_fn(sde), (NUM, 2), generator=gen, dtype=torch.float64)
    expected = ode_weight_from_prior(sde, eps=1e-3)
    assert abs(mode_stats(x)[0] - expected) < 0.015, (mode_stats(x)[0], expected)


def test_ve_prior_mismatch_is_visible():
    assert abs(ode_weight_from_prior(all_sdes()[2], eps=1e-3) - 0.777) < 0.001


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_ode_device_and_scipy_paths_agree(sde):
    gen = torch.Generator().manual_seed(2)
    z = exact_prior_samples(sde, 64, gen)
    x, nfe = ode_sample(sde, MIX.score_fn(sde), (64, 2), z=z)
    x_scipy, nfe_scipy = ode_sample(sde, MIX.score_fn(sde), (64, 2), z=z, method="scipy-rk45")
    assert nfe == nfe_scipy
    torch.testing.assert_close(x, x_scipy, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_drift_stops_the_adaptive_solver(bad):
    # NaN once defeated the step-size underflow check: a NaN network looped forever instead of failing.
    def score_fn(x, t):
        return torch.full_like(x, bad)

    with pytest.raises(FloatingPointError, match="not finite"):
        ode_sample(VPSDE(), score_fn, (4, 2))
    with pytest.raises(FloatingPointError, match="not finite"):
        log_likelihood(VPSDE(), score_fn, torch.zeros(4, 2))


def test_ode_denoise_and_bad_input():
    sde = all_sdes()[0]
    z = torch.randn(8, 2, dtype=torch.float64)
    x, nfe = ode_sample(sde, MIX.score_fn(sde), (8, 2), z=z)
    x_denoised, nfe_denoised = ode_sample(sde, MIX.score_fn(sde), (8, 2), z=z, denoise=True)
    assert nfe_denoised == nfe + 1 and not torch.equal(x, x_denoised)
    with pytest.raises(ValueError, match="z has shape"):
        ode_sample(sde, MIX.score_fn(sde), (4, 2), z=z)
    with pytest.raises(ValueError, match="eps"):
        ode_sample(sde, MIX.score_fn(sde), (8, 2), eps=1.5)


@pytest.mark.parametrize("bad", [1e30, float("nan")])
def test_a_non_finite_trial_stage_is_rejected_not_fatal(bad):
    # A stage far off the path can return a drift so large (a network extrapolating) that the float32 error
    # norm overflows, or NaN (inf − inf inside the network). As in scipy, that step is rejected and retried
    # smaller; the solve goes on.
    calls = 0

    def fn(t, y):
        nonlocal calls
        calls += 1
        return torch.full_like(y, bad) if calls == 5 else -y  # the 5th call: a stage of the first step

    y, nfe = dopri5(fn, torch.ones(3), 0.0, 1.0)
    assert calls > 5 and nfe == calls
    torch.testing.assert_close(y, torch.full((3,), math.exp(-1.0)), rtol=1e-4, atol=1e-5)
