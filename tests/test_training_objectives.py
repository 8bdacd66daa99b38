"""Every training-time density with every weighting is an unbiased estimate of its stated objective
(issue 15): on Gaussian data with the exact score, the Monte-Carlo mean of the training loss equals the
objective's quadrature within 3 standard errors, at a sample size where the standard error is below 1e-3
relative; a wrong density or a wrong weight fails the same test by many standard errors."""
import json
import math

import numpy as np
import pytest
import torch

from score_sde.analytic import GaussianMixture
from score_sde.losses import get_loss_fn, loss_weight, weighted_dsm_losses
from score_sde.sde import VESDE, VPSDE, subVPSDE
from score_sde.time_sampling import _log_snr_edges, importance_time, lognormal_time, time_density

DIM, MEAN, STD, EPS = 4, 0.5, 0.7, 1e-3
DATA = GaussianMixture([1.0], [[MEAN] * DIM], [STD])
BATCH = 200_000


def expected_loss(sde, t):
    """ℓ(t): the expected per-dimension ‖score + z/s‖² with the exact score of N(μ, σ₀²I), in closed form.

    With x_t = m·x₀ + s·z and v = m²σ₀² + s², score + z/s = −m(x₀ − μ)/v + z·m²σ₀²/(s·v), whose per-dimension
    second moment is m²σ₀²/v² + m⁴σ₀⁴/(s²v²) = m²σ₀²/(s²·v)."""
    m, s = sde.marginal_coefficients(t)
    return m**2 * STD**2 / (s**2 * (m**2 * STD**2 + s**2))


def objective(sde, weighting):
    """J_w = 1/(T − eps) ∫ w(t) ℓ(t) dt by 8-point Gauss–Legendre on each of the λ-spaced bins (the EDM
    weight is constant in t's bin factor, smooth in the rest)."""
    edges = _log_snr_edges(sde, EPS)
    nodes, weights = (torch.tensor(v) for v in np.polynomial.legendre.leggauss(8))
    a, b = edges[:-1, None], edges[1:, None]
    t = (0.5 * (b - a) * nodes + 0.5 * (b + a)).reshape(-1)
    dt = (0.5 * (b - a) * weights).reshape(-1)
    edm = lognormal_time(sde, EPS) if weighting == "edm" else None
    w = loss_weight(sde, t, weighting, EPS, 0.5, edm)
    return float((w * expected_loss(sde, t) * dt).sum()) / (sde.T - EPS)


def monte_carlo(loss_fn, sde, max_batches=200, min_batches=10):
    """(mean, standard error) of the batch-mean losses, drawing batches until the standard error is below 1e-3
    of the mean (or max_batches)."""
    gen, score_fn, means = torch.Generator().manual_seed(0), DATA.score_fn(sde), []
    while len(means) < max_batches:
        means.append(float(loss_fn(score_fn, DATA.sample(BATCH, generator=gen), gen)))
        if len(means) >= min_batches:
            mean, se = np.mean(means), np.std(means, ddof=1) / math.sqrt(len(means))
            if se < 1e-3 * abs(mean):
                break
    return mean, se


def assert_unbiased(sde, t_sampling, weighting, **kwargs):
    loss_fn = get_loss_fn(sde, reduce_mean=True, eps=EPS, t_sampling=t_sampling, weighting=weighting)
    target = objective(sde, weighting)
    mean, se = monte_carlo(loss_fn, sde, **kwargs)
    assert se < 1e-3 * target, f"standard error {se / target:.1e} relative: more samples needed"
    assert abs(mean - target) < 3 * se, f"{mean} vs the objective {target}: {(mean - target) / se:+.1f} SE"


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("t_sampling, weighting",
                         [("uniform", "score_matching"), ("importance", "likelihood"), ("lognormal", "edm")])
def test_each_objective_with_its_own_density_is_unbiased(sde, t_sampling, weighting):
    assert_unbiased(sde, t_sampling, weighting, max_batches=40)


@pytest.mark.slow
@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("weighting", ["score_matching", "likelihood", "edm"])
@pytest.mark.parametrize("t_sampling", ["uniform", "lognormal", "importance"])
def test_every_density_with_every_weighting_is_unbiased(sde, t_sampling, weighting):
    if isinstance(sde, subVPSDE) and t_sampling == "lognormal" and weighting != "edm":
        # unbiased too, but sub-VP's s ∝ t near 0 leaves the log-normal almost no mass where w(t)/s² is
        # large: the variance is too large to reach 1e-3 relative at any sample size a test can afford
        pytest.skip("heavy-tailed estimator: see docs/training.md")
    assert_unbiased(sde, t_sampling, weighting, max_batches=400)


def test_a_wrong_density_fails():
    # Draw t from the log-normal but divide by the importance density: the mean misses the objective.
    sde = VPSDE()
    drawn, claimed = lognormal_time(sde, EPS), importance_time(sde, EPS)
    mean, se = _estimate(sde, drawn,
                         lambda t: loss_weight(sde, t, "likelihood") / ((sde.T - EPS) * claimed.pdf(t)))
    assert abs(mean - objective(sde, "likelihood")) > 10 * se


def test_a_wrong_weight_fails():
    # The likelihood objective estimated with g instead of g²: the estimator is unbiased for something else.
    sde = VPSDE()
    density = importance_time(sde, EPS)
    g = lambda t: loss_weight(sde, t, "likelihood").sqrt()  # noqa: E731
    mean, se = _estimate(sde, density, lambda t: g(t) / ((sde.T - EPS) * density.pdf(t)))
    assert abs(mean - objective(sde, "likelihood")) > 10 * se


def _estimate(sde, density, weight_fn, batches=10):
    gen, score_fn, means = torch.Generator().manual_seed(1), DATA.score_fn(sde), []
    for _ in range(batches):
        x = DATA.sample(BATCH, generator=gen)
        t = density.sample(BATCH, gen, dtype=torch.float64)
        z = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        losses = weighted_dsm_losses(sde, score_fn, x, t, z, weight_fn(t), reduce_mean=True)
        means.append(float(losses.mean()))
    return np.mean(means), np.std(means, ddof=1) / math.sqrt(batches)


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("name", ["lognormal", "importance"])
def test_binned_densities_sample_what_their_pdf_says(sde, name):
    density = time_density(sde, name, EPS)
    a, b = density.edges[:-1], density.edges[1:]
    assert torch.isclose((density.pdf(a) * (b - a)).sum(), torch.tensor(1.0, dtype=torch.float64))
    t = density.sample(400_000, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert EPS <= t.min() and t.max() <= sde.T
    # the first two moments of the piecewise-constant pdf, exactly, against the draws'
    mean = (density.masses * (a + b) / 2).sum()
    second = (density.masses * (a * a + a * b + b * b) / 3).sum()
    se = (second - mean**2).sqrt() / math.sqrt(len(t))
    assert abs(t.mean() - mean) < 4 * se and abs((t * t).mean() - second) < 0.01 * second


def test_lognormal_draws_follow_edms_noise_distribution():
    # ln σ of the draws, σ = s/m, is N(-1.2, 1.2²) inside the range [eps, T] reaches.
    sde = VPSDE()
    t = lognormal_time(sde, EPS).sample(400_000, torch.Generator().manual_seed(3), dtype=torch.float64)
    log_sigma = -sde.log_snr(t)
    assert abs(log_sigma.mean() + 1.2) < 0.02 and abs(log_sigma.std() - 1.2) < 0.02


def test_uniform_score_matching_is_the_original_loss_bit_for_bit():
    sde, x = VPSDE(), DATA.sample(64, generator=torch.Generator().manual_seed(4)).float()
    score_fn = DATA.score_fn(sde)
    new = get_loss_fn(sde, t_sampling="uniform", weighting="score_matching")
    old = get_loss_fn(sde)
    gen = torch.Generator().manual_seed(5)
    assert new(score_fn, x, gen) == old(score_fn, x, torch.Generator().manual_seed(5))


def test_contradicting_and_unknown_settings_raise():
    with pytest.raises(ValueError, match="contradicts"):
        get_loss_fn(VPSDE(), likelihood_weighting=True, weighting="edm")
    with pytest.raises(ValueError, match="unknown weighting"):
        get_loss_fn(VPSDE(), weighting="sliced")
    with pytest.raises(ValueError, match="unknown t_sampling"):
        get_loss_fn(VPSDE(), t_sampling="beta")
    with pytest.raises(ValueError, match="continuous training only"):
        get_loss_fn(VPSDE(), continuous=False, t_sampling="importance")


@pytest.mark.parametrize("t_sampling, weighting, preconditioning", [
    ("lognormal", "edm", "edm"), ("importance", "likelihood", "none"), ("uniform", "score_matching", "edm")])
def test_the_toy_trains_and_samples_with_each_objective(tmp_path, monkeypatch, t_sampling, weighting,
                                                        preconditioning):
    import configs
    import run_lib

    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = configs.load_config("vp_toy")
    t, m = config.training, config.model
    t.n_iters, t.snapshot_freq, t.log_freq, t.batch_size = 300, 300, 50, 128
    t.t_sampling, t.weighting, m.preconditioning, m.num_scales = t_sampling, weighting, preconditioning, 50
    config.eval.batch_size = 500
    run_lib.train(config, tmp_path)
    losses = [json.loads(line)["training_loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
              if "training_loss" in line]
    assert np.mean(losses[-2:]) < losses[0]
    samples = run_lib.sample(config, tmp_path)
    quality = json.loads((tmp_path / "samples" / "samples.json").read_text())
    assert torch.isfinite(samples).all() and quality["samples_nats"] > quality["data_nats"] - 1.5
