"""Probability-flow log-likelihoods against exact mixture densities, and the bits/dim convention."""
import math

import pytest
import torch
from exact import all_sdes, sde_id, two_modes

from score_sde.analytic import GaussianMixture
from score_sde.data import get_data_scaler, uniform_dequantize
from score_sde.likelihood import bits_per_dim, log_likelihood

EPS = 1e-5
MIX = two_modes()


def at(value, x):
    return torch.full((x.shape[0],), value, dtype=x.dtype)


def exact_p_T(sde, mixture):
    return lambda z: mixture.marginal_log_prob(sde, z, at(sde.T, z))


@pytest.fixture(scope="module")
def points():
    return MIX.sample(1000, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_exact_divergence_matches_exact_density(sde, points):
    logp, z, nfe = log_likelihood(sde, MIX.score_fn(sde), points, eps=EPS, divergence="exact")
    # With the SDE's prior, the only error beyond the solver's is the prior mismatch at z, known exactly here.
    log_p_eps = MIX.marginal_log_prob(sde, points, at(EPS, points))
    expected = log_p_eps - exact_p_T(sde, MIX)(z) + sde.prior_logp(z)
    assert (logp - expected).abs().mean() < 1e-3
    logp, _, _ = log_likelihood(sde, MIX.score_fn(sde), points, eps=EPS, divergence="exact",
                                prior_logp=exact_p_T(sde, MIX))
    assert (logp - MIX.marginal_log_prob(sde, points, at(EPS, points))).abs().mean() < 1e-3
    assert logp.shape == (1000,) and z.shape == points.shape and nfe > 20


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
@pytest.mark.parametrize("divergence", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(sde, divergence, points):
    gen = torch.Generator().manual_seed(1)
    logp, _, _ = log_likelihood(sde, MIX.score_fn(sde), points, eps=EPS, divergence=divergence,
                                prior_logp=exact_p_T(sde, MIX), generator=gen)
    error = logp - MIX.marginal_log_prob(sde, points, at(EPS, points))
    assert error.abs().max() > 1e-3  # a real estimate, not the exact trace
    assert error.mean().abs() < 3 * error.std() / math.sqrt(len(error))


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_bits_per_dim_on_3072d_gaussian(sde):
    gen = torch.Generator().manual_seed(0)
    means = 0.5 * torch.rand(1, 3, 32, 32, generator=gen) - 0.25
    data = GaussianMixture(weights=[1.0], means=means, stds=[0.2])
    x = data.sample(16, generator=gen)
    for divergence in ("rademacher", "gaussian"):
        logp, z, _ = log_likelihood(sde, data.score_fn(sde), x, eps=EPS, divergence=divergence, generator=gen)
        exact = data.marginal_log_prob(sde, x, at(EPS, x)) - exact_p_T(sde, data)(z) + sde.prior_logp(z)
        error = bits_per_dim(logp, x.shape) - bits_per_dim(exact, x.shape)
        assert error.mean().abs() < 0.01, (divergence, error)


def test_uniform_model_density_costs_eight_bits():
    x_shape = (5, 3, 4, 4)
    dims = 48
    uniform_centered = torch.full((5,), -dims * math.log(2.0))  # density 2^-D on [-1, 1]^D
    torch.testing.assert_close(bits_per_dim(uniform_centered, x_shape), torch.full((5,), 8.0))
    torch.testing.assert_close(bits_per_dim(torch.zeros(5), x_shape, centered=False), torch.full((5,), 8.0))


@pytest.mark.parametrize("centered", [True, False])
def test_dequantized_bits_per_dim_bounds_the_discrete_probability(centered):
    """For a smooth density, E_u[bits/dim of dequantized pixels] is −log2 P(pixel), from above and tightly."""
    low, width = (-1.0, 2.0) if centered else (0.0, 1.0)
    density = torch.distributions.Normal(torch.tensor(low + width / 2, dtype=torch.float64), 0.15 * width)
    pixels = torch.tensor([[40], [128], [200]]).repeat_interleave(20000, 0)
    u = uniform_dequantize(pixels.double() / 255, generator=torch.Generator().manual_seed(0))
    x = get_data_scaler(centered)(u)
    assert x.min() >= low and x.max() <= low + width
    bpd = bits_per_dim(density.log_prob(x).sum(1), x.shape, centered=centered).reshape(3, -1).mean(1)
    edges = low + width * torch.tensor([[40, 41], [128, 129], [200, 201]], dtype=torch.float64) / 256
    prob = density.cdf(edges[:, 1]) - density.cdf(edges[:, 0])
    discrete = -torch.log2(prob)
    assert (bpd >= discrete - 1e-3).all()
    torch.testing.assert_close(bpd, discrete, atol=2e-3, rtol=0)


def test_unknown_divergence_raises(points):
    sde = all_sdes()[0]
    with pytest.raises(ValueError, match="unknown divergence 'hutch'; expected one of"):
        log_likelihood(sde, MIX.score_fn(sde), points[:4], divergence="hutch")


@pytest.mark.parametrize("divergence", ["rademacher", "gaussian", "exact"])
def test_one_score_evaluation_per_function_evaluation(divergence):
    """The drift and its divergence come out of one pass (plus vector-Jacobian products): the network is
    called exactly as many times as the reported NFE."""
    sde, calls = all_sdes()[0], []
    score_fn = MIX.score_fn(sde)

    def counting_score_fn(x, t):
        calls.append(1)
        return score_fn(x, t)

    x = MIX.sample(20, generator=torch.Generator().manual_seed(1))
    _, _, nfe = log_likelihood(sde, counting_score_fn, x, eps=EPS, divergence=divergence,
                               generator=torch.Generator().manual_seed(2))
    assert nfe == len(calls) > 0
