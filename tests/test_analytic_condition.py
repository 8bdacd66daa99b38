"""Full-covariance mixtures and their exact posteriors under y = A·x + σ_y·n, checked against independent
answers: autograd, torch.distributions, importance sampling of the prior and Schur complements."""
import math

import pytest
import torch
from exact import all_sdes, sde_id

from score_sde.analytic import GaussianMixture, three_component_mixture
from score_sde.sde import VESDE, VPSDE

F64 = dict(dtype=torch.float64)


def correlated_mixture(gen, event_shape, rank_deficient=True):
    """Three components with random full covariances; component 0 is rank one when rank_deficient."""
    d = math.prod(event_shape)
    means = 2 * torch.randn(3, *event_shape, generator=gen, **F64)
    factors = 0.7 * torch.randn(3, d, d, generator=gen, **F64)
    covs = factors @ factors.mT + 0.1 * torch.eye(d, **F64)
    if rank_deficient:
        direction = torch.randn(d, generator=gen, **F64)
        covs[0] = torch.outer(direction, direction)
    return GaussianMixture(weights=[0.2, 0.3, 0.5], means=means, covs=covs)


def two_dimensional_mixture():
    covs = [[[1.0, 0.8], [0.8, 1.0]], [[0.5, -0.3], [-0.3, 0.8]]]
    return GaussianMixture(weights=[0.4, 0.6], means=[[-1.5, 1.0], [1.5, -0.5]], covs=covs)


def reference_mixture(mix, m, s):
    """torch.distributions' mixture of N(m·μ_k, m²Σ_k + s²I), for one scalar (m, s)."""
    d = mix.covariances.shape[-1]
    components = torch.distributions.MultivariateNormal(
        m * mix.means.flatten(1), m**2 * mix.covariances + s**2 * torch.eye(d, **F64))
    weights = torch.distributions.Categorical(probs=mix.weights)
    return torch.distributions.MixtureSameFamily(weights, components)


# The perturbed mixture: score, density, responsibilities, samples.

@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
@pytest.mark.parametrize("event_shape", [(3,), (2, 2)])
def test_full_score_is_gradient_of_full_log_density(sde, event_shape):
    gen = torch.Generator().manual_seed(0)
    mix = correlated_mixture(gen, event_shape)
    x = 2 * torch.randn(64, *event_shape, generator=gen, **F64).requires_grad_(True)
    t = 0.01 + 0.99 * torch.rand(64, generator=gen, **F64)
    (grad,) = torch.autograd.grad(mix.marginal_log_prob(sde, x, t).sum(), x)
    torch.testing.assert_close(mix.score_fn(sde)(x, t), grad)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=sde_id)
def test_scaled_identity_covariances_give_the_isotropic_mixture(sde):
    gen = torch.Generator().manual_seed(1)
    means, stds = torch.randn(3, 2, 3, generator=gen, **F64), torch.tensor([0.5, 0.3, 1.0], **F64)
    isotropic = GaussianMixture([0.2, 0.3, 0.5], means, stds=stds)
    full = GaussianMixture([0.2, 0.3, 0.5], means, covs=stds[:, None, None] ** 2 * torch.eye(6, **F64))
    x = torch.randn(32, 2, 3, generator=gen, **F64)
    t = 0.01 + 0.99 * torch.rand(32, generator=gen, **F64)
    torch.testing.assert_close(full.score_fn(sde)(x, t), isotropic.score_fn(sde)(x, t))
    torch.testing.assert_close(full.marginal_log_prob(sde, x, t), isotropic.marginal_log_prob(sde, x, t))
    torch.testing.assert_close(full.marginal_responsibilities(sde, x, t),
                               isotropic.marginal_responsibilities(sde, x, t))
    torch.testing.assert_close(full.log_prob(x), isotropic.log_prob(x))
    torch.testing.assert_close(full.covariances, isotropic.covariances)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=sde_id)
@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_perturbed_density_matches_torch_multivariate_normals(sde, t):
    gen = torch.Generator().manual_seed(2)
    mix = correlated_mixture(gen, (3,))
    m, s = sde.marginal_coefficients(torch.full((200,), t, **F64))
    reference = reference_mixture(mix, m[0], s[0])
    x = torch.cat([reference.sample((100,)), 3 * torch.randn(100, 3, generator=gen, **F64)])
    torch.testing.assert_close(mix.perturbed_log_prob(x, m, s), reference.log_prob(x))
    joint = reference.component_distribution.log_prob(x[:, None, :]) + mix.weights.log()
    torch.testing.assert_close(mix.responsibilities(x, m, s), torch.softmax(joint, dim=1))


def test_data_density_matches_torch_and_integrates_to_one():
    mix = two_dimensional_mixture()
    one = torch.ones(1, **F64)
    grid = torch.linspace(-9, 9, 721, **F64)
    points = torch.cartesian_prod(grid, grid)
    torch.testing.assert_close(mix.log_prob(points), reference_mixture(mix, one, 0 * one).log_prob(points))
    step = (grid[1] - grid[0]).item()
    mass = mix.log_prob(points).exp().sum().item() * step**2  # the tails beyond ±9 hold < 1e-12
    assert abs(mass - 1) < 1e-9


def test_singular_component_has_no_density_at_s_zero_but_a_perturbed_one():
    mix = correlated_mixture(torch.Generator().manual_seed(3), (3,))
    x = torch.randn(8, 3, **F64)
    with pytest.raises(ValueError, match=r"component\(s\) \[0\] have a singular covariance"):
        mix.log_prob(x)
    m, s = torch.ones(8, **F64), torch.full((8,), 1e-3, **F64)
    assert torch.isfinite(mix.perturbed_log_prob(x, m, s)).all()
    assert torch.isfinite(mix.perturbed_score(x, m, s)).all()


def test_full_samples_have_the_mixture_moments():
    gen = torch.Generator().manual_seed(4)
    mix = correlated_mixture(gen, (3,))
    x = mix.sample(200_000, generator=gen)
    mean = (mix.weights[:, None] * mix.means).sum(0)
    second = (mix.weights[:, None, None] * (mix.covariances + mix.means[:, :, None] * mix.means[:, None, :]))
    cov = second.sum(0) - torch.outer(mean, mean)
    centred = x - mean
    products = centred[:, :, None] * centred[:, None, :]
    n = len(x)
    assert ((x.mean(0) - mean).abs() <= 5 * x.std(0) / math.sqrt(n)).all()
    assert ((products.mean(0) - cov).abs() <= 5 * products.std(0) / math.sqrt(n)).all()


def test_rank_one_component_samples_lie_on_its_line():
    direction = torch.tensor([1.0, -2.0, 0.5], **F64)
    line = GaussianMixture([1.0], [[1.0, 2.0, 3.0]], covs=torch.outer(direction, direction)[None])
    offsets = line.sample(1000, generator=torch.Generator().manual_seed(5)) - line.means
    off_line = offsets - torch.outer(offsets @ direction, direction) / direction.dot(direction)
    assert off_line.abs().max() < 1e-12
    torch.testing.assert_close(offsets.var(0), direction**2, rtol=0.1, atol=0)


# The posterior given y = A·x + σ_y·n.

def importance_estimates(prior, A, y, sigma_y, num_samples, gen):
    """Posterior weights, component means, mean and covariance from prior samples weighted by N(y; Ax, σ_y²I).

    Returns (estimates, standard errors, effective sample size); estimates and errors are dicts of tensors.
    The component weights average P(k | x) (y depends on k only through x) over the weighted samples.
    """
    x = prior.sample(num_samples, generator=gen).flatten(1)
    w = torch.softmax(-0.5 * ((x @ A.T - y) ** 2).sum(1) / sigma_y**2, dim=0)
    resp = prior.responsibilities(x)
    est, err = {}, {}

    def weighted(name, weights, values):  # self-normalised estimate and its delta-method standard error
        est[name] = (weights[:, None] * values).sum(0)
        err[name] = ((weights[:, None] * (values - est[name])) ** 2).sum(0).sqrt()

    weighted("weights", w, resp)
    weighted("mean", w, x)
    centred = x - est["mean"]
    weighted("cov", w, (centred[:, :, None] * centred[:, None, :]).flatten(1))
    for k in range(len(prior.weights)):
        component = w * resp[:, k]
        weighted(f"mean_{k}", component / component.sum(), x)
    return est, err, 1 / (w**2).sum().item()


def exact_moments(posterior):
    means = posterior.means.flatten(1)
    mean = (posterior.weights[:, None] * means).sum(0)
    second = posterior.covariances + means[:, :, None] * means[:, None, :]
    cov = (posterior.weights[:, None, None] * second).sum(0) - torch.outer(mean, mean)
    exact = {"weights": posterior.weights, "mean": mean, "cov": cov.flatten()}
    exact.update({f"mean_{k}": means[k] for k in range(len(means))})
    return exact


CASES = {  # mixture, A, y, sigma_y
    "2d-noisy": (two_dimensional_mixture, [[1.0, 0.5]], [0.8], 0.3),
    "2d-sharp": (two_dimensional_mixture, [[1.0, 0.5]], [0.8], 0.05),
    "3d-two-rows": (three_component_mixture, [[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]], [1.0, 0.3], 0.3),
    "3d-shared-mass": (three_component_mixture, [[1.0, 0.0, 0.0]], [1.0], 0.05),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_condition_matches_importance_sampling_of_the_prior(case):
    make_prior, A, y, sigma_y = CASES[case]
    prior, A, y = make_prior(), torch.tensor(A, **F64), torch.tensor(y, **F64)
    est, err, ess = importance_estimates(prior, A, y, sigma_y, 200_000, torch.Generator().manual_seed(6))
    assert ess > 1000, f"only {ess:.0f} effective samples: the check would be weak"
    posterior = prior.condition(A, y, sigma_y)
    exact = exact_moments(posterior)
    # A component with posterior weight ~1e-4 gets its estimate from a handful of samples, whose error the
    # delta method does not describe: so the weights get an absolute 1e-3 on top of 5 standard errors, and
    # only components of weight > 1% have their means checked.
    slack = {"weights": 1e-3}
    for name, value in exact.items():
        if name.startswith("mean_") and posterior.weights[int(name[5:])] < 0.01:
            continue
        close = (value - est[name]).abs() <= 5 * err[name] + slack.get(name, 0.0)
        assert close.all(), f"{name}: exact {value}, estimated {est[name]} ± {err[name]}"
    # The observation moves the weights by many standard errors, so returning the prior would fail.
    assert ((prior.weights - est["weights"]).abs() / err["weights"]).max() > 10


def schur_posterior(prior, observed, y):
    """Noiseless observation of the flattened coordinates `observed`: per component, the Schur complement."""
    means, covs = prior.means.flatten(1), prior.covariances
    d = means.shape[1]
    free = [i for i in range(d) if i not in observed]
    post_means, post_covs, log_weights = [], [], []
    for w, mu, cov in zip(prior.weights, means, covs):
        cov_oo, cov_fo = cov[observed][:, observed], cov[free][:, observed]
        mean = torch.empty(d, **F64)
        mean[observed] = y
        mean[free] = mu[free] + cov_fo @ torch.linalg.solve(cov_oo, y - mu[observed])
        post_cov = torch.zeros(d, d, **F64)
        post_cov[torch.tensor(free)[:, None], torch.tensor(free)] = (
            cov[free][:, free] - cov_fo @ torch.linalg.solve(cov_oo, cov_fo.T))
        evidence = torch.distributions.MultivariateNormal(mu[observed], cov_oo).log_prob(y)
        post_means.append(mean), post_covs.append(post_cov), log_weights.append(w.log() + evidence)
    return torch.softmax(torch.stack(log_weights), 0), torch.stack(post_means), torch.stack(post_covs)


def isotropic_2x2_mixture():
    means = [[[0.0, 1.0], [2.0, -1.0]], [[1.0, 0.0], [0.5, 0.5]]]
    return GaussianMixture([0.3, 0.7], means, stds=[0.6, 1.1])


NOISELESS = {  # prior, observed flattened coordinates (in the order of y's entries), y
    "3d-full": (three_component_mixture, [2, 0], [0.4, 1.0]),
    "isotropic-2x2": (isotropic_2x2_mixture, [3, 1], [0.2, -0.4]),
}


@pytest.mark.parametrize("case", sorted(NOISELESS))
def test_noiseless_condition_matches_the_schur_complement(case):
    make_prior, observed, y = NOISELESS[case]
    prior, y = make_prior(), torch.tensor(y, **F64)
    A = torch.eye(math.prod(prior.event_shape), **F64)[observed]
    posterior = prior.condition(A, y, 0.0)
    weights, means, covs = schur_posterior(prior, observed, y)
    assert posterior.event_shape == prior.event_shape and not posterior.is_isotropic
    torch.testing.assert_close(posterior.weights, weights, rtol=0, atol=1e-12)
    torch.testing.assert_close(posterior.means.flatten(1), means, rtol=0, atol=1e-12)
    torch.testing.assert_close(posterior.covs, covs, rtol=0, atol=1e-12)


GENERAL_A = torch.tensor([[0.3, -1.2, 0.7], [1.1, 0.4, 0.2]], **F64)
GENERAL_Y = torch.tensor([0.5, -0.8], **F64)


def test_noiseless_posterior_lies_on_the_observation():
    posterior = three_component_mixture().condition(GENERAL_A, GENERAL_Y, 0.0)
    x = posterior.sample(20_000, generator=torch.Generator().manual_seed(7))
    assert (x @ GENERAL_A.T - GENERAL_Y).abs().max() < 1e-8
    assert (x.std(0) > 0.1).all()  # one free direction is left, and it moves every coordinate
    with pytest.raises(ValueError, match="singular covariance"):
        posterior.log_prob(x[:4])
    m, s = torch.ones(4, **F64), torch.full((4,), 1e-2, **F64)
    assert torch.isfinite(posterior.perturbed_score(x[:4], m, s)).all()


def test_condition_is_continuous_at_zero_noise():
    prior = three_component_mixture()
    exact, nearly = prior.condition(GENERAL_A, GENERAL_Y, 0.0), prior.condition(GENERAL_A, GENERAL_Y, 1e-6)
    for a, b in [(exact.weights, nearly.weights), (exact.means, nearly.means), (exact.covs, nearly.covs)]:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)  # O(σ_y²) = 1e-12 away


@pytest.mark.parametrize("y, weights", [
    (-3.0, [0.9953, 0.0047, 0.0000]),
    (-1.5, [0.5019, 0.4942, 0.0039]),
    (0.0, [0.0075, 0.8853, 0.1072]),
    (1.0, [0.0002, 0.4965, 0.5032]),
    (3.0, [0.0000, 0.0066, 0.9934]),
])
def test_three_component_mixture_has_its_documented_posterior_weights(y, weights):
    prior = three_component_mixture()
    posterior = prior.condition([[1.0, 0.0, 0.0]], [y], 0.0)
    torch.testing.assert_close(posterior.weights, torch.tensor(weights, **F64), rtol=0, atol=5e-5)
    marginal = torch.distributions.Normal(prior.means[:, 0], prior.covs[:, 0, 0].sqrt())
    torch.testing.assert_close(posterior.weights, torch.softmax(prior.weights.log() + marginal.log_prob(
        torch.tensor(y, **F64)), 0))


def test_three_component_mixture_is_bimodal_where_two_components_share():
    prior = three_component_mixture()
    posterior = prior.condition([[1.0, 0.0, 0.0]], [1.0], 0.0)
    modes = posterior.means[1:, 1:]  # (x_1, x_2) of the two components sharing the mass
    torch.testing.assert_close(modes, torch.tensor([[-2.625, 1.875], [1.3, -1.1]], **F64))
    assert (modes - prior.means[1:, 1:]).abs().max() > 0.5  # the correlations move them: conditioning matters


def test_a_component_whose_posterior_weight_underflows_keeps_working():
    posterior = three_component_mixture().condition([[1.0, 0.0, 0.0]], [200.0], 0.1)
    assert posterior.weights[0] == 0 and posterior.weights[2] == 1
    x = posterior.sample(16, generator=torch.Generator().manual_seed(8))
    m, s = torch.ones(16, **F64), torch.full((16,), 0.1, **F64)
    assert torch.isfinite(posterior.perturbed_score(x, m, s)).all()


def test_bad_observations_raise():
    prior = three_component_mixture()
    with pytest.raises(ValueError, match="need A"):
        prior.condition(torch.ones(1, 2, **F64), [0.0], 0.1)
    with pytest.raises(ValueError, match="need A"):
        prior.condition(torch.ones(2, 3, **F64), [0.0], 0.1)
    with pytest.raises(ValueError, match="sigma_y"):
        prior.condition(torch.ones(1, 3, **F64), [0.0], -1.0)
    rank_one = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], **F64)
    with pytest.raises(ValueError, match="singular for component"):
        prior.condition(rank_one, [1.0, 2.0], 0.0)
    prior.condition(rank_one, [1.0, 2.0], 0.1)  # noise makes S_k invertible


def test_bad_covariances_raise():
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixture([1.0], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixture([1.0], [[0.0, 0.0]], stds=[1.0], covs=torch.eye(2)[None])
    with pytest.raises(ValueError, match=r"\[K, d, d\]"):
        GaussianMixture([1.0], [[0.0, 0.0]], covs=torch.eye(3)[None])
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture([1.0], [[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="semi-definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="non-negative"):
        GaussianMixture([-1.0, 2.0], [[0.0], [1.0]], covs=torch.ones(2, 1, 1))
