"""FID, KID and IS against closed forms and hand computations."""
import math

import numpy as np
import pytest
import torch

from score_sde import metrics


def random_spd(dim, seed):
    a = np.random.default_rng(seed).normal(size=(dim, dim))
    return a @ a.T + dim * np.eye(dim)


def test_frechet_distance_equals_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    # diagonal covariances: Σ(√a − √b)²
    a, b = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # Σ₂ = c²Σ₁: tr(Σ₁ + c²Σ₁ − 2cΣ₁) = (1 − c)²·tr Σ₁
    sigma = random_spd(6, 1)
    expected = np.sum((mu1 - mu2) ** 2) + (1 - 1.7) ** 2 * np.trace(sigma)
    assert metrics.frechet_distance(mu1, sigma, mu2, 1.7**2 * sigma) == pytest.approx(expected, rel=1e-9)


def test_a_set_against_itself_is_zero_and_statistics_are_unbiased():
    features = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    mu, sigma = metrics.feature_statistics(features)
    assert mu.dtype == np.float64 and sigma.shape == (8, 8)
    np.testing.assert_allclose(sigma, np.cov(features.double().numpy(), rowvar=False))
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_singular_covariances_take_the_offset_and_stay_finite():
    features = np.random.default_rng(0).normal(size=(5, 20))  # 5 points in 20-D: rank 4
    mu, sigma = metrics.feature_statistics(features)
    other_mu, other_sigma = metrics.feature_statistics(features[::-1] + 1.0)
    value = metrics.frechet_distance(mu, sigma, other_mu, other_sigma)
    assert math.isfinite(value) and value == pytest.approx(20.0, rel=1e-3)  # the same spread, shifted by 1


def test_mismatched_shapes_and_invalid_inputs_raise():
    with pytest.raises(ValueError, match="shapes"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="features"):
        metrics.feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="probabilities"):
        metrics.inception_score(np.full((20, 3), 0.5))


def test_mmd_equals_a_hand_computation():
    x, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])
    # k(a, b) = (a·b/2 + 1)³: k_xx off-diagonal 1, k_yy off-diagonal 1, k_xy (3.375, 1, 3.375, 1)
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(1 + 1 - 2 * (2 * 3.375 + 2) / 4)


def test_mmd_estimate_is_unbiased():
    """Two independent samples of one distribution: the mean over many draws is 0 within 3 standard
    errors (the biased estimate, with the diagonal, would sit far above: about E k(x, x) / m)."""
    rng = np.random.default_rng(0)
    values = [metrics.mmd2_unbiased(rng.normal(size=(20, 5)), rng.normal(size=(20, 5))) for _ in range(2000)]
    assert abs(np.mean(values)) < 3 * np.std(values) / math.sqrt(len(values))
    x = rng.normal(size=(20, 5))
    biased_excess = np.trace(metrics.polynomial_kernel(x, x)).mean() / 20
    assert biased_excess > 20 * np.std(values) / math.sqrt(len(values))


def test_kid_separates_distributions_and_is_near_zero_for_one():
    rng = np.random.default_rng(1)
    same = metrics.kernel_inception_distance(rng.normal(size=(400, 16)), rng.normal(size=(400, 16)),
                                             num_subsets=50, subset_size=200)
    shifted = metrics.kernel_inception_distance(rng.normal(size=(400, 16)), rng.normal(size=(400, 16)) + 0.5,
                                                num_subsets=50, subset_size=200)
    assert abs(same[0]) < 3 * same[1] and shifted[0] > 10 * shifted[1]


def test_inception_score_is_exp_of_the_mean_kl_and_the_class_count_when_ideal():
    ideal = np.eye(10)[np.tile(np.arange(10), 10)]  # each split: one confident prediction per class
    assert metrics.inception_score(ideal) == pytest.approx((10.0, 0.0))
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4]])
    marginal = p.mean(0)
    expected = math.exp(np.mean(np.sum(p * np.log(p / marginal), axis=1)))
    assert metrics.inception_score(p, splits=1) == pytest.approx((expected, 0.0))
    assert metrics.inception_score(np.full((20, 4), 0.25), splits=2) == pytest.approx((1.0, 0.0))


def test_sliced_w2_is_the_shift_for_translated_sets_and_zero_for_a_set_against_itself():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    directions = metrics.unit_directions(64, 2, seed=1)
    assert metrics.sliced_w2(x, x, directions) == 0.0
    shift = torch.tensor([3.0, 4.0], dtype=torch.float64)
    # W2 of a projected translate is |u·shift|: the rms over unit directions u of |u·shift|
    expected = (directions @ shift).pow(2).mean().sqrt().item()
    assert metrics.sliced_w2(x, x + shift, directions) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="equal-size"):
        metrics.sliced_w2(x, x[:10], directions)
