"""The SDEs against their closed forms (Song et al. 2021, App. B) and against each other's consistency."""
import math

import pytest
import torch
from exact import all_sdes, sde_id

from score_sde.sde import VESDE, VPSDE, expand_to, subVPSDE

SDES = all_sdes()


def times(n=16, seed=0, low=0.0):
    gen = torch.Generator().manual_seed(seed)
    return low + (1 - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def test_defaults_are_the_original_ones():
    vp, ve = VPSDE(), VESDE()
    assert (vp.beta_min, vp.beta_max, vp.N, vp.T) == (0.1, 20.0, 1000, 1.0)
    assert (ve.sigma_min, ve.sigma_max, ve.N) == (0.01, 50.0, 1000)


def test_vp_closed_forms():
    sde, t = VPSDE(), times()
    x = torch.randn(16, 3, 4, 4, dtype=torch.float64)
    beta = 0.1 + t * 19.9
    integral = 0.1 * t + 0.5 * 19.9 * t**2  # ∫_0^t β
    drift, diffusion = sde.sde(x, t)
    torch.testing.assert_close(drift, -0.5 * beta[:, None, None, None] * x)
    torch.testing.assert_close(diffusion, beta.sqrt())
    mean, std = sde.marginal_prob(x, t)
    torch.testing.assert_close(mean, torch.exp(-0.5 * integral)[:, None, None, None] * x)
    torch.testing.assert_close(std, torch.sqrt(1 - torch.exp(-integral)))


def test_subvp_closed_forms():
    sde, t = subVPSDE(), times()
    x = torch.randn(16, 5, dtype=torch.float64)
    beta = 0.1 + t * 19.9
    integral = 0.1 * t + 0.5 * 19.9 * t**2
    drift, diffusion = sde.sde(x, t)
    torch.testing.assert_close(drift, -0.5 * beta[:, None] * x)
    torch.testing.assert_close(diffusion, torch.sqrt(beta * (1 - torch.exp(-2 * integral))))
    mean, std = sde.marginal_prob(x, t)
    torch.testing.assert_close(mean, torch.exp(-0.5 * integral)[:, None] * x)
    torch.testing.assert_close(std, 1 - torch.exp(-integral))


def test_ve_closed_forms():
    sde, t = VESDE(), times()
    x = torch.randn(16, 2, 3, dtype=torch.float64)
    sigma = 0.01 * 5000**t
    drift, diffusion = sde.sde(x, t)
    torch.testing.assert_close(drift, torch.zeros_like(x))
    torch.testing.assert_close(diffusion, sigma * math.sqrt(2 * math.log(5000)))
    mean, std = sde.marginal_prob(x, t)
    torch.testing.assert_close(mean, x)
    # The original's convention: std σ(t), i.e. the paper's σ(t)² − σ(0)² plus σ_min² already in the data.
    torch.testing.assert_close(std, sigma)


@pytest.mark.parametrize("sde", SDES, ids=sde_id)
def test_kernel_solves_the_sde_moment_equations(sde):
    """For dx = a(t)·x dt + g dw: dm/dt = a·m and d(s²)/dt = 2a·s² + g². A wrong f, g, m or s breaks this."""
    t, h = times(low=0.05)[:-1], 1e-6
    (m_hi, s_hi), (m_lo, s_lo) = sde.marginal_coefficients(t + h), sde.marginal_coefficients(t - h)
    dm, dvar = (m_hi - m_lo) / (2 * h), (s_hi**2 - s_lo**2) / (2 * h)  # central differences
    m, s = sde.marginal_coefficients(t)
    drift, g = sde.sde(torch.ones(15, 1, dtype=torch.float64), t)
    a = drift[:, 0]  # the drift is linear: f(x, t) = a(t)·x
    torch.testing.assert_close(dm, a * m, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dvar, 2 * a * s**2 + g**2, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=sde_id)
def test_log_snr_inverts(sde):
    t = times(low=1e-3)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t)
    m, s = sde.marginal_coefficients(t)
    torch.testing.assert_close(sde.log_snr(t), torch.log(m / s))


@pytest.mark.parametrize("sde", SDES, ids=sde_id)
def test_prior_logp_is_the_prior_density(sde):
    gen = torch.Generator().manual_seed(0)
    z = sde.prior_sampling((4000, 3), generator=gen, dtype=torch.float64)
    var = z.var().item()
    expected_var = 2500.0 if isinstance(sde, VESDE) else 1.0
    assert abs(var / expected_var - 1) < 0.05
    dist = torch.distributions.Normal(torch.zeros(()), torch.tensor(expected_var).sqrt().double())
    torch.testing.assert_close(sde.prior_logp(z[:5].reshape(5, 3, 1)), dist.log_prob(z[:5]).sum(1))


def test_vp_discretize_is_the_ddpm_chain():
    sde = VPSDE(N=50)
    betas = torch.linspace(0.1 / 50, 20 / 50, 50, dtype=torch.float64)
    t = torch.linspace(1, 1e-3, 50, dtype=torch.float64)
    x = torch.randn(50, 4, dtype=torch.float64)
    f, G = sde.discretize(x, t)
    index = torch.arange(49, -1, -1)  # linspace(T, eps, N) visits the levels from the top
    torch.testing.assert_close(f, torch.sqrt(1 - betas[index])[:, None] * x - x)
    torch.testing.assert_close(G, betas[index].sqrt())


def test_ve_discretize_is_the_smld_chain():
    sde = VESDE(N=10)
    sigmas = torch.exp(torch.linspace(math.log(0.01), math.log(50), 10, dtype=torch.float64))
    t = torch.linspace(1, 1e-3, 10, dtype=torch.float64)
    x = torch.randn(10, 4, dtype=torch.float64)
    f, G = sde.discretize(x, t)
    index = torch.arange(9, -1, -1)
    previous = torch.cat([torch.zeros(1, dtype=torch.float64), sigmas[:-1]])
    torch.testing.assert_close(f, torch.zeros_like(x))
    torch.testing.assert_close(G, torch.sqrt(sigmas[index] ** 2 - previous[index] ** 2))


def test_subvp_discretize_is_euler_maruyama():
    sde, t = subVPSDE(N=50), times()
    x = torch.randn(16, 4, dtype=torch.float64)
    drift, g = sde.sde(x, t)
    f, G = sde.discretize(x, t)
    torch.testing.assert_close(f, drift / 50)
    torch.testing.assert_close(G, g / math.sqrt(50))


@pytest.mark.parametrize("sde", SDES, ids=sde_id)
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_sde(sde, probability_flow):
    t = times()
    x = torch.randn(16, 2, 2, dtype=torch.float64)

    def score_fn(x, t):
        return -x * expand_to(1 + t, x)

    drift, g = sde.sde(x, t)
    rdrift, rg = sde.reverse(score_fn, probability_flow).sde(x, t)
    weight = 0.5 if probability_flow else 1.0
    torch.testing.assert_close(rdrift, drift - weight * expand_to(g**2, x) * score_fn(x, t))
    torch.testing.assert_close(rg, torch.zeros_like(g) if probability_flow else g)
    f, G = sde.discretize(x, t)
    rf, rG = sde.reverse(score_fn, probability_flow).discretize(x, t)
    torch.testing.assert_close(rf, f - weight * expand_to(G**2, x) * score_fn(x, t))


@pytest.mark.parametrize("sde", SDES, ids=sde_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_keep_dtype_and_rank(sde, dtype):
    for shape in [(3, 2), (3, 1, 4, 4), (3, 2, 2, 2, 2)]:
        x = torch.randn(shape, dtype=dtype)
        t = torch.full((3,), 0.5, dtype=dtype)
        for out in (*sde.sde(x, t), *sde.marginal_prob(x, t), *sde.discretize(x, t)):
            assert out.dtype == dtype
        assert sde.marginal_prob(x, t)[0].shape == shape
        assert sde.prior_sampling(shape, dtype=dtype).dtype == dtype
        assert sde.prior_logp(x).shape == (3,)


@pytest.mark.parametrize("sde", SDES, ids=sde_id)
def test_bad_time_raises(sde):
    x = torch.randn(4, 2)
    for method in (sde.sde, sde.marginal_prob, sde.discretize):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1"):
            method(x, torch.tensor([0.5, 0.5, 1.5, 0.5]))
        with pytest.raises(ValueError, match="t must lie"):
            method(x, torch.tensor([0.5, -0.1, 0.5, 0.5]))
        with pytest.raises(ValueError, match="shape"):
            method(x, torch.full((3,), 0.5))
        with pytest.raises(ValueError, match="shape"):
            method(x, torch.tensor(0.5))


@pytest.mark.parametrize("make,match", [
    (lambda: VPSDE(N=0), "N must be"),
    (lambda: VESDE(N=2.5), "N must be"),
    (lambda: VPSDE(beta_min=-1.0), "0 <= beta_min < beta_max"),
    (lambda: subVPSDE(beta_min=1.0, beta_max=1.0), "0 <= beta_min < beta_max"),
    (lambda: VPSDE(beta_max=float("nan")), "finite"),
    (lambda: VESDE(sigma_min=0.0), "0 < sigma_min < sigma_max"),
    (lambda: VESDE(sigma_min=50.0, sigma_max=0.01), "0 < sigma_min < sigma_max"),
    (lambda: VESDE(sigma_max=float("inf")), "finite"),
])
def test_bad_construction_raises(make, match):
    # Each of these once trained to NaN weights or sampled all-NaN without a word (issue 14).
    with pytest.raises(ValueError, match=match):
        make()


def test_ancestral_needs_a_discrete_chain():
    with pytest.raises(ValueError, match="subVPSDE has none"):
        subVPSDE().ancestral_coefficients(torch.ones(1))
