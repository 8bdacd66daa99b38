"""The exact mixture score and density: gradients of each other, stable in high dimension."""
import math

import pytest
import torch
from exact import all_sdes, sde_id, two_modes

from score_sde.analytic import GaussianMixture


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
@pytest.mark.parametrize("event_shape", [(2,), (1, 3, 3)])
def test_score_is_gradient_of_marginal_log_density(sde, event_shape):
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(3, *event_shape, generator=gen, dtype=torch.float64) * 2
    mix = GaussianMixture(weights=[0.2, 0.3, 0.5], means=means, stds=[0.5, 0.3, 1.0])
    x = torch.randn(64, *event_shape, generator=gen, dtype=torch.float64).requires_grad_(True)
    t = 0.01 + 0.99 * torch.rand(64, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad(mix.marginal_log_prob(sde, x, t).sum(), x)
    torch.testing.assert_close(mix.score_fn(sde)(x, t), grad)


def test_log_prob_matches_torch_distributions():
    mix = two_modes()
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=mix.weights),
        torch.distributions.Independent(
            torch.distributions.Normal(mix.means, mix.stds[:, None].expand(2, 2)), 1
        ),
    )
    x = torch.randn(100, 2, dtype=torch.float64) * 6
    torch.testing.assert_close(mix.log_prob(x), reference.log_prob(x))


def test_samples_have_the_mixture_moments():
    mix = two_modes()
    x = mix.sample(20000, generator=torch.Generator().manual_seed(0))
    upper = x.sum(1) > 0
    assert abs(upper.double().mean().item() - 0.8) < 0.01
    five = torch.full((2,), 5.0, dtype=torch.float64)
    torch.testing.assert_close(x[upper].mean(0), five, atol=0.05, rtol=0)
    torch.testing.assert_close(x[upper].std(0), torch.ones(2, dtype=torch.float64), atol=0.03, rtol=0)


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_stable_in_3072_dimensions(sde):
    """Far apart components in 3072-D: the density underflows without logsumexp, the score without softmax."""
    gen = torch.Generator().manual_seed(0)
    means = torch.stack([torch.full((3, 32, 32), -0.5), torch.full((3, 32, 32), 0.5)]).double()
    mix = GaussianMixture(weights=[0.4, 0.6], means=means, stds=[0.05, 0.1])
    x = mix.sample(8, generator=gen)
    t = torch.full((8,), 1e-3, dtype=torch.float64)
    logp = mix.marginal_log_prob(sde, x, t)
    score = mix.score_fn(sde)(x, t)
    assert torch.isfinite(logp).all() and torch.isfinite(score).all()
    # Each point is deep inside one component, so the mixture is that component alone.
    m, s = sde.marginal_coefficients(t)
    k = (x.flatten(1).mean(1) > 0).long()
    var = m**2 * mix.stds[k] ** 2 + s**2
    centre = m[:, None] * mix.means[k].flatten(1)
    expected = (math.log(0.4) + (math.log(1.5)) * k - 0.5 * 3072 * torch.log(2 * math.pi * var)
                - (x.flatten(1) - centre).pow(2).sum(1) / (2 * var))
    torch.testing.assert_close(logp, expected)
    torch.testing.assert_close(score.flatten(1), (centre - x.flatten(1)) / var[:, None])


def test_bad_mixture_raises():
    with pytest.raises(ValueError, match="need weights"):
        GaussianMixture(weights=[0.5, 0.5], means=[[0.0, 0.0]], stds=[1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture(weights=[0.5, 0.5], means=[[0.0], [1.0]], stds=[1.0, -1.0])
    with pytest.raises(ValueError, match="event shape"):
        two_modes().log_prob(torch.zeros(4, 3))
