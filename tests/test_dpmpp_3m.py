"""DPM-Solver++(3M) against exact answers: a data prediction quadratic in λ, which its third and later steps
integrate exactly, and the closed-form flow of Gaussian data, on which it converges with order 3 and the
half weight on d2 (k-diffusion's and diffusers') with order 2 (benchmarks/peer_3m.py)."""
import math

import pytest
import torch

from score_sde.analytic import GaussianMixture
from score_sde.sampling.fast import fast_sample
from score_sde.sampling.schedules import time_grid
from score_sde.sampling.solvers import DPMSolverPP3M
from score_sde.sde import VESDE, VPSDE, expand_to

SDES = [(VPSDE(), 1e-3), (VESDE(), 1e-5)]
IDS = ["VPSDE", "VESDE"]
STEPS = 12


def quadratic_in_log_snr(shape, seed=0):
    """Coefficients a, b, c [*shape] of a data prediction x̂₀(λ) = a + b·λ + c·λ², the same for every x."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3)]


def exact_step(x, coeffs, m_next, s_now, s_next, lam_now, lam_next):
    """(s_next/s_now)·x + m_next·∫ e^{−(λ_next − λ)}·x̂₀(λ) dλ over [λ_now, λ_next], by the antiderivative of
    e^u·(A + B·u + C·u²), u = λ − λ_next, which is e^u·(A + B·(u − 1) + C·(u² − 2u + 2))."""
    a, b, c = coeffs
    big_a, big_b = a + b * lam_next + c * lam_next**2, b + 2 * c * lam_next

    def antiderivative(u):
        return math.exp(u) * (big_a + big_b * (u - 1) + c * (u * u - 2 * u + 2))

    return (s_next / s_now) * x + m_next * (antiderivative(0.0) - antiderivative(lam_now - lam_next))


def run_on_quadratic(sde, eps, schedule, shape):
    """fast_sample's dpmpp_3m with x̂₀ quadratic in λ: the grid's (m, s, λ), x at every grid point, coeffs."""
    coeffs = quadratic_in_log_snr(shape[1:])

    def score_fn(x, t):  # x̂₀ = (x + s²·score)/m is then the quadratic, whatever x
        m, s = sde.marginal_coefficients(t)
        lam = expand_to(sde.log_snr(t), x)
        x0 = coeffs[0] + coeffs[1] * lam + coeffs[2] * lam**2
        return (expand_to(m, x) * x0 - x) / expand_to(s, x) ** 2

    z = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xs = [z]
    fast_sample(sde, score_fn, shape, solver="dpmpp_3m", steps=STEPS, schedule=schedule, eps=eps, z=z,
                callback=lambda i, x, x0: xs.append(x))
    t = time_grid(sde, schedule, STEPS, eps)
    m, s = sde.marginal_coefficients(t)
    return m.tolist(), s.tolist(), sde.log_snr(t).tolist(), xs, coeffs


def worst_step_error(sde, eps, schedule, shape):
    """The largest error of steps 3, 4, ... against the exact step from the same x, relative to max |x|."""
    m, s, lam, xs, coeffs = run_on_quadratic(sde, eps, schedule, shape)
    errors = []
    for i in range(2, STEPS):
        exact = exact_step(xs[i], coeffs, m[i + 1], s[i], s[i + 1], lam[i], lam[i + 1])
        errors.append(((xs[i + 1] - exact).abs().max() / exact.abs().max()).item())
    return max(errors)


@pytest.mark.parametrize("shape", [(4, 2), (2, 1, 3, 3)], ids=["points", "images"])
@pytest.mark.parametrize("schedule", ["logsnr", "karras"])
@pytest.mark.parametrize("sde,eps", SDES, ids=IDS)
def test_third_and_later_steps_integrate_a_quadratic_data_prediction_exactly(sde, eps, schedule, shape):
    """On the karras grid the λ-steps differ, so r0 ≠ r1 in the divided differences."""
    assert worst_step_error(sde, eps, schedule, shape) < 1e-12


@pytest.mark.parametrize("sde,eps", SDES, ids=IDS)
def test_half_weight_on_the_second_difference_is_not_exact(sde, eps, monkeypatch):
    """k-diffusion's and diffusers' −φ₃·d2 misses half the quadratic term: the test above can fail."""
    monkeypatch.setattr(DPMSolverPP3M, "second_difference_weight", 1.0)
    assert worst_step_error(sde, eps, "logsnr", (4, 2)) > 1e-4


def gaussian_flow_errors(sde, eps, std, steps, num=64):
    """Mean error of dpmpp_3m at each number of logsnr steps against the closed-form flow of N(μ, std²I)
    data: (x − m·μ)/√(m²·std² + s²) is constant along it."""
    mu = torch.tensor([1.0, -0.5], dtype=torch.float64)
    z = torch.randn(num, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (m_T, m_e), (s_T, s_e) = (v.tolist() for v in sde.marginal_coefficients(
        torch.tensor([sde.T, eps], dtype=torch.float64)))
    x_T = m_T * mu + math.sqrt(m_T**2 * std**2 + s_T**2) * z
    exact = m_e * mu + math.sqrt(m_e**2 * std**2 + s_e**2) * z
    score_fn = GaussianMixture([1.0], [mu.tolist()], [std]).score_fn(sde)
    runs = [fast_sample(sde, score_fn, x_T.shape, solver="dpmpp_3m", steps=n, schedule="logsnr", eps=eps,
                        z=x_T)[0] for n in steps]
    return [(x - exact).norm(dim=1).mean().item() for x in runs]


@pytest.mark.parametrize("sde,eps", SDES, ids=IDS)
def test_error_falls_eightfold_when_the_steps_double(sde, eps):
    """Order 3 on data of std 0.02, near σ(eps) ≈ 0.01. For much wider data the h³ term of the global error
    nearly cancels (docs/fast_sampling.md) and the ratio is about 16 up to 160 steps."""
    coarse, fine = gaussian_flow_errors(sde, eps, 0.02, (80, 160))
    assert 7 < coarse / fine < 10.5, (coarse, fine)


@pytest.mark.parametrize("sde,eps", SDES, ids=IDS)
def test_half_weight_falls_only_fourfold(sde, eps, monkeypatch):
    """k-diffusion's weight is second order: on N(μ, 0.5²I) data the ratio is about 4 where ours is ≥ 8."""
    ours = gaussian_flow_errors(sde, eps, 0.5, (80, 160))
    monkeypatch.setattr(DPMSolverPP3M, "second_difference_weight", 1.0)
    half = gaussian_flow_errors(sde, eps, 0.5, (80, 160))
    assert ours[0] / ours[1] > 8 and 3.5 < half[0] / half[1] < 5, (ours, half)
