"""Guidance as score functions (score_sde/guidance.py), on exact answers: for a Gaussian mixture the noisy
classifier p_t(k | x) and the class-conditional score ∇ log p_t(x | k) are known in closed form."""

import pytest
import torch

from score_sde.analytic import GaussianMixture, three_component_mixture
from score_sde.guidance import classifier_free_guidance, classifier_guidance
from score_sde.sampling import pc_sample
from score_sde.sde import VESDE, VPSDE


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
