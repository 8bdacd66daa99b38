"""Guidance as score functions (score_sde/guidance.py), on exact answers: for a Gaussian mixture the noisy
classifier p_t(k | x) and the class-conditional score ∇ log p_t(x | k) are known in closed form."""

import pytest
import torch

from score_sde.analytic import GaussianMixture, guided_gaussian_endpoint, three_component_mixture
from score_sde.guidance import classifier_free_guidance, classifier_guidance
from score_sde.sampling import ode_sample, pc_sample
from score_sde.sampling.fast import fast_sample
from score_sde.sampling.ode import probability_flow_drift
from score_sde.sampling.schedules import time_grid
from score_sde.sde import VESDE, VPSDE, subVPSDE

F64 = dict(dtype=torch.float64)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small float64 batches: extra threads only contend
    yield
    torch.set_num_threads(threads)


def isotropic_mixture():
    return GaussianMixture([0.5, 0.3, 0.2], [[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]], [1.0, 0.7, 1.3])


MIXTURES = {"isotropic": isotropic_mixture, "full": three_component_mixture}


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
@pytest.mark.parametrize("name", list(MIXTURES))
def test_exact_classifier_guidance_at_scale_one_is_the_class_conditional_score(sde, name):
    """∇ log p_t(x) + ∇ log p_t(k | x) = ∇ log p_t(x | k) (Bayes' rule), at every t, to rounding; and the
    conditional score is the component's own, checked against autograd of its log-density."""
    mix = MIXTURES[name]()
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, *mix.event_shape, generator=gen, dtype=torch.float64)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.99 + 0.01
    labels = torch.randint(0, 3, (64,), generator=gen)
    guided = classifier_guidance(mix.score_fn(sde), mix.classifier_log_prob_fn(sde), labels, scale=1.0)
    conditional = mix.conditional_score_fn(sde)(x, t, labels)
    assert torch.allclose(guided(x, t), conditional, atol=1e-9, rtol=1e-9)
    for k in range(3):
        alone = GaussianMixture([1.0], mix.means[k:k + 1], covs=mix.covariances[k:k + 1])
        chosen = labels == k
        assert torch.allclose(conditional[chosen], alone.score_fn(sde)(x[chosen], t[chosen]), atol=1e-9)


def test_classifier_free_guidance_is_the_stated_combination():
    mix, sde = three_component_mixture(), VPSDE()
    cond = mix.conditional_score_fn(sde)
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(16, 3, generator=gen, dtype=torch.float64), torch.full((16,), 0.3, dtype=torch.float64)
    labels = torch.randint(0, 3, (16,), generator=gen)
    assert torch.equal(classifier_free_guidance(cond, labels, 0.0)(x, t), cond(x, t, labels))
    combined = 3.0 * cond(x, t, labels) - 2.0 * cond(x, t, None)
    assert torch.allclose(classifier_free_guidance(cond, labels, 2.0)(x, t), combined, atol=1e-12)


@pytest.mark.parametrize("sde", [VPSDE(N=500), VESDE(N=500)], ids=["VP", "VE"])
def test_pc_with_exact_classifier_guidance_samples_one_component(sde):
    """Scale 1 with the exact classifier: PC's samples of class 1 are component 1's (weight ≥ 0.99, mean
    within 0.05, std within 5 %), and the sampler keeps no graph."""
    mix = isotropic_mixture()
    labels = torch.full((2000,), 1)
    score_fn = classifier_guidance(mix.score_fn(sde), mix.classifier_log_prob_fn(sde), labels)
    x, _ = pc_sample(sde, score_fn, (2000, 2), predictor="reverse_diffusion", corrector="langevin",
                     denoise=True, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert not x.requires_grad
    assert mix.responsibilities(x)[:, 1].mean() >= 0.99
    assert (x.mean(0) - mix.means[1]).abs().max() < 0.05
    assert (x.std(0) / 0.7 - 1).abs().max() < 0.05


def test_bad_labels_and_weights_are_refused():
    mix, sde = isotropic_mixture(), VPSDE()
    x, t = torch.zeros(2, 2, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    guided = classifier_guidance(mix.score_fn(sde), mix.classifier_log_prob_fn(sde), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got \[0, 3\]"):
        guided(x, t)
    with pytest.raises(ValueError, match="integer class indices"):
        classifier_guidance(mix.score_fn(sde), mix.classifier_log_prob_fn(sde), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="w must be >= 0"):
        classifier_free_guidance(mix.conditional_score_fn(sde), torch.tensor([0]), -1.0)


# Classifier-free guidance on two Gaussians, per coordinate: the class N(μ_c, σ_c²) and the unconditional data
# N(μ, σ²). Coordinate 0 has σ_c < σ (guidance sharpens it, to σ_c^{1+w}/σ^w), coordinate 1 has σ_c > σ.
COND_MEAN, COND_STD = torch.tensor([1.0, -0.5], **F64), torch.tensor([0.5, 1.2], **F64)
MEAN, STD = torch.tensor([-1.0, 0.5], **F64), torch.tensor([1.5, 0.8], **F64)
SDES = [VPSDE(), subVPSDE(), VESDE()]
SDE_IDS = ["VP", "subVP", "VE"]


def diagonal_gaussian(mean, std):
    return GaussianMixture([1.0], mean[None], covs=torch.diag(std**2)[None])


def guided_gaussian_score_fn(sde, w, batch):
    """The CFG score of the exact conditional (label 0) and unconditional (label None) Gaussian scores."""
    cond, uncond = diagonal_gaussian(COND_MEAN, COND_STD), diagonal_gaussian(MEAN, STD)

    def cond_score_fn(x, t, labels):
        return (uncond if labels is None else cond).score_fn(sde)(x, t)

    return classifier_free_guidance(cond_score_fn, torch.zeros(batch, dtype=torch.long), w)


def exact_prior(sde, mean, std, zeta):
    """Points of the exact p_T of N(mean, std²), m_T·mean + √(m_T²·std² + s_T²)·ζ."""
    m, s = sde.marginal_coefficients(torch.full((1,), sde.T, **F64))
    return m * mean + (m**2 * std**2 + s**2).sqrt() * zeta


def standardised_normal(num_samples, dim, seed):
    """Normal draws shifted and scaled to mean 0 and std 1 per coordinate, so that samples' moments carry only
    the sampler's error, no sampling error."""
    zeta = torch.randn(num_samples, dim, generator=torch.Generator().manual_seed(seed), **F64)
    return (zeta - zeta.mean(0)) / zeta.std(0)


def rk4(drift_fn, x, times):
    """Classical fourth-order Runge–Kutta over the given times (any spacing, decreasing is fine)."""
    for t, t_next in zip(times[:-1], times[1:]):
        h, t, half = t_next - t, t.expand(x.shape[0]), (t + (t_next - t) / 2).expand(x.shape[0])
        k1 = drift_fn(x, t)
        k2 = drift_fn(x + h / 2 * k1, half)
        k3 = drift_fn(x + h / 2 * k2, half)
        k4 = drift_fn(x + h * k3, t_next.expand(x.shape[0]))
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_guided_gaussian_endpoint_is_where_the_guided_flow_goes(sde, w):
    """The closed form against brute force: RK4 with 400 steps equal in log-SNR on the guided PF ODE of the
    exact scores maps x_T = m_T·μ_c + √v_c(T)·ζ to end_mean + end_std·ζ (the flow is affine), to 1e-6 (the
    RK4 error measured: 3e-8 at most, falling 16-fold per halving of the step)."""
    zeta = torch.tensor([-1.0, 0.0, 1.0, 2.0], **F64)[:, None].expand(4, 2)
    drift_fn = probability_flow_drift(sde, guided_gaussian_score_fn(sde, w, 4))
    x = rk4(drift_fn, exact_prior(sde, COND_MEAN, COND_STD, zeta),
            time_grid(sde, "logsnr", 400, sde.sampling_eps))
    end_mean, end_std = guided_gaussian_endpoint(sde, w, COND_MEAN, COND_STD, MEAN, STD, sde.sampling_eps)
    torch.testing.assert_close(x, end_mean + end_std * zeta, atol=1e-6, rtol=0)


def test_guided_gaussian_endpoint_limits():
    """w = 0 leaves the conditional's marginal; guidance sharpens towards σ_c^{1+w}/σ^w and pushes the mean
    away from μ (a large σ_max: T is nearly infinite); floats are taken as one coordinate."""
    sde = VESDE(sigma_min=1e-4, sigma_max=1e4)
    mean, std = guided_gaussian_endpoint(sde, 0.0, 1.0, 0.5, -1.0, 1.5, 0.0)
    torch.testing.assert_close(mean, torch.tensor([1.0], **F64))
    torch.testing.assert_close(std, torch.tensor([(0.5**2 + 1e-8) ** 0.5], **F64))
    for w in (1.0, 3.0):
        mean, std = guided_gaussian_endpoint(sde, w, COND_MEAN, COND_STD, MEAN, STD, 0.0)
        torch.testing.assert_close(std, COND_STD ** (1 + w) / STD**w, rtol=1e-6, atol=0)
        assert ((mean - COND_MEAN) * (COND_MEAN - MEAN) > 0).all()
    with pytest.raises(ValueError, match="w must be >= 0"):
        guided_gaussian_endpoint(sde, -1.0, 1.0, 0.5, -1.0, 1.5, 0.0)
    with pytest.raises(ValueError, match="t_end must lie"):
        guided_gaussian_endpoint(sde, 1.0, 1.0, 0.5, -1.0, 1.5, 1.0)
    with pytest.raises(ValueError, match="must be positive"):
        guided_gaussian_endpoint(sde, 1.0, 1.0, 0.0, -1.0, 1.5, 0.0)


# (sampler, keyword arguments, tolerance on the mean, std rel. tolerance); fast solvers: 200 steps.
# Measured over VP, sub-VP and VE and w in {1, 3}, the largest errors (mean, std) are: rk45 at 1e-7 3e-7 and
# 8e-7; adams_pc (3rd order) 6e-4 and 6e-4; dpmpp_2m (2nd order) 2e-3 and 1.8e-2, at w = 3 on sub-VP, where
# the std is 0.019. Halving the steps multiplies adams_pc's errors by about 8 and dpmpp_2m's by about 4.
GUIDED_SAMPLERS = {
    "rk45": (ode_sample, dict(rtol=1e-7, atol=1e-7), 2e-6, 4e-6),
    "adams_pc": (fast_sample, dict(solver="adams_pc", steps=200), 2e-3, 2e-3),
    "dpmpp_2m": (fast_sample, dict(solver="dpmpp_2m", steps=200), 6e-3, 5e-2),
}


@pytest.mark.parametrize("sampler", list(GUIDED_SAMPLERS))
@pytest.mark.parametrize("w", [1.0, 3.0])
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_cfg_samplers_reach_the_guided_gaussian_endpoint(sde, w, sampler):
    """CFG on exact Gaussian scores, started from the conditional's exact p_T: the samples' mean and std are
    the closed form's, to each sampler's own error (the start is standardised, so no sampling error)."""
    sample_fn, kwargs, mean_tol, std_tol = GUIDED_SAMPLERS[sampler]
    z = exact_prior(sde, COND_MEAN, COND_STD, standardised_normal(1000, 2, seed=0))
    x, _ = sample_fn(sde, guided_gaussian_score_fn(sde, w, 1000), (1000, 2), z=z, **kwargs)
    end_mean, end_std = guided_gaussian_endpoint(sde, w, COND_MEAN, COND_STD, MEAN, STD, sde.sampling_eps)
    assert (x.mean(0) - end_mean).abs().max() < mean_tol
    assert (x.std(0) / end_std - 1).abs().max() < std_tol


def test_cfg_at_zero_weight_is_the_conditional_sampler_bit_for_bit():
    mix, sde = isotropic_mixture(), VPSDE()
    labels = torch.tensor([0, 1, 2, 1] * 50)
    cond = mix.conditional_score_fn(sde)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), **F64)
    guided_fn = classifier_free_guidance(cond, labels, 0.0)
    guided, _ = fast_sample(sde, guided_fn, (200, 2), solver="dpmpp_2m", z=z)
    conditional, _ = fast_sample(sde, lambda x, t: cond(x, t, labels), (200, 2), solver="dpmpp_2m", z=z)
    assert torch.equal(guided, conditional)


def test_a_stochastic_sampler_misses_the_flows_endpoint():
    """The closed form is the ODE's: at w > 0 the guided score is not the score of a diffusing density, so the
    reverse SDE ends elsewhere. Measured on VP at w = 1, coordinate 0: std 0.31 against the flow's 0.17."""
    sde = VPSDE()
    z = exact_prior(sde, COND_MEAN, COND_STD, standardised_normal(2000, 2, seed=0))
    x, _ = fast_sample(sde, guided_gaussian_score_fn(sde, 1.0, 2000), (2000, 2), solver="dpmpp_2m_sde",
                       steps=200, z=z, generator=torch.Generator().manual_seed(0))
    _, end_std = guided_gaussian_endpoint(sde, 1.0, COND_MEAN, COND_STD, MEAN, STD, sde.sampling_eps)
    assert x[:, 0].std() > 1.5 * end_std[0]


@pytest.mark.parametrize("solver", ["adams_pc", "dpmpp_2m"])
@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["VP", "VE"])
def test_fast_solvers_with_exact_classifier_guidance_sample_one_component(sde, solver):
    """Scale 1 with the exact classifier, 100 steps from component k's exact p_T, N(m_T·μ_k, m_T²σ_k² + s_T²):
    the samples are component k's alone (weight ≥ 0.99, mean within 0.05, std within 5 %), each k."""
    mix = isotropic_mixture()
    zeta = standardised_normal(1000, 2, seed=1)
    for k in range(3):
        labels = torch.full((1000,), k)
        score_fn = classifier_guidance(mix.score_fn(sde), mix.classifier_log_prob_fn(sde), labels)
        z = exact_prior(sde, mix.means[k], mix.stds[k], zeta)
        x, _ = fast_sample(sde, score_fn, (1000, 2), solver=solver, steps=100, z=z)
        assert mix.responsibilities(x)[:, k].mean() >= 0.99
        assert (x.mean(0) - mix.means[k]).abs().max() < 0.05
        assert (x.std(0) / mix.stds[k] - 1).abs().max() < 0.05
