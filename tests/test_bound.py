"""The DSM bound (score_sde/bound.py): with the exact score of Gaussian data its mean is H(p_eps) +
KL(p_T ‖ π) in closed form; on a mixture with the exact score, the same by quadrature: the exact
negative log-likelihood of p_eps plus the prior mismatch."""
import math

import numpy as np
import pytest
import torch

from score_sde.analytic import GaussianMixture
from score_sde.bound import discrete_bound, dsm_bound
from score_sde.sde import VESDE, VPSDE, subVPSDE

EPS = 1e-3


def gaussian_bound_mean(sde, mean, std, dims):
    """H(p_eps) + KL(p_T ‖ π) for data N(mean, std²·I): p_t = N(m·mean, (m²std² + s²)·I)."""
    t = torch.tensor([EPS, sde.T], dtype=torch.float64)
    m, s = sde.marginal_coefficients(t)
    var = m**2 * std**2 + s**2
    entropy = 0.5 * dims * math.log(2 * math.pi * math.e * var[0])
    prior_var = sde.sigma_max**2 if isinstance(sde, VESDE) else 1.0
    kl = 0.5 * (dims * var[1] / prior_var + dims * (m[1] * mean) ** 2 / prior_var - dims
                + dims * math.log(prior_var / var[1]))
    return float(entropy + kl)


def monte_carlo(sde, data, batches=20, size=50_000):
    gen, score_fn, means = torch.Generator().manual_seed(0), data.score_fn(sde), []
    for _ in range(batches):
        means.append(dsm_bound(sde, score_fn, data.sample(size, generator=gen), EPS, generator=gen).mean())
    means = torch.stack(means)
    return float(means.mean()), float(means.std() / math.sqrt(batches))


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_exact_score_on_gaussian_data_gives_entropy_plus_prior_mismatch(sde):
    data = GaussianMixture([1.0], [[0.5, 0.5]], [0.7])
    mean, se = monte_carlo(sde, data)
    target = gaussian_bound_mean(sde, 0.5, 0.7, 2)
    assert abs(mean - target) < 3 * se and se < 0.01 * abs(target), (mean, target, se)


def test_a_worse_score_gives_a_larger_bound():
    sde, data = VPSDE(), GaussianMixture([1.0], [[0.5, 0.5]], [0.7])
    wrong = GaussianMixture([1.0], [[0.0, 0.0]], [1.0]).score_fn(sde)
    gen = torch.Generator().manual_seed(1)
    x = data.sample(200_000, generator=gen)
    exact_mean = dsm_bound(sde, data.score_fn(sde), x, EPS, generator=gen).mean()
    wrong_mean = dsm_bound(sde, wrong, x, EPS, generator=gen).mean()
    assert wrong_mean > exact_mean + 0.05


def entropy_and_prior_mismatch(sde, data, half_width=8.0, points=801):
    """H(p_eps) and KL(p_T ‖ π) of a 2-D mixture, by quadrature on a grid (trapezoid)."""
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    cell = (axis[1] - axis[0]) ** 2

    def log_p(t):
        return data.marginal_log_prob(sde, grid, torch.full((len(grid),), t, dtype=torch.float64))

    log_eps, log_T = log_p(EPS), log_p(sde.T)
    entropy = -float((log_eps.exp() * log_eps).sum() * cell)
    kl = float((log_T.exp() * (log_T - sde.prior_logp(grid))).sum() * cell)
    return entropy, kl


@pytest.mark.slow
def test_on_a_mixture_with_the_exact_score_the_bound_is_the_exact_nll_plus_the_prior_mismatch():
    # With the exact score, the bound exceeds the exact negative log-likelihood of p_eps, H(p_eps), by the
    # prior mismatch KL(p_T ‖ π) alone: it stays above the exact NLL, and is tight up to that gap.
    sde = VPSDE()
    data = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [0.5, 0.3])
    entropy, kl = entropy_and_prior_mismatch(sde, data)
    mean, se = monte_carlo(sde, data, batches=40)
    assert kl > 0 and se < 0.01 * abs(entropy)
    assert abs(mean - (entropy + kl)) < 3 * se, (mean, entropy, kl, se)


class BinnedData:
    """Pixels in `len(probs)` equal bins of [−1, 1], independent over `dims`, uniformly dequantized: the
    perturbed density per dimension is Σ_k P_k (Φ((v − m·lo_k)/s) − Φ((v − m·hi_k)/s)) / (m·w), so its
    score is exact in closed form."""

    def __init__(self, probs, dims):
        self.probs = torch.tensor(probs, dtype=torch.float64)
        self.edges = torch.linspace(-1, 1, len(probs) + 1, dtype=torch.float64)
        self.dims = dims

    def sample(self, n, generator):
        bins = torch.multinomial(self.probs, n * self.dims, replacement=True, generator=generator)
        u = torch.rand(n * self.dims, generator=generator, dtype=torch.float64)
        return (self.edges[bins] + u * (self.edges[1] - self.edges[0])).view(n, self.dims)

    def bin_densities(self, sde, v, t):
        """q(v | bin k) and its slope in v, both [B, d, K], for v [B, d] at times t [B]."""
        m, s = (c.double().view(-1, 1, 1) for c in sde.marginal_coefficients(t))
        normal = torch.distributions.Normal(0.0, 1.0)
        a, b = (v[..., None] - m * self.edges[:-1]) / s, (v[..., None] - m * self.edges[1:]) / s
        width = float(self.edges[1] - self.edges[0])
        return ((normal.cdf(a) - normal.cdf(b)) / (m * width),
                (normal.log_prob(a).exp() - normal.log_prob(b).exp()) / (m * width * s))

    def score_fn(self, sde):
        def score(v, t):
            density, slope = self.bin_densities(sde, v.double(), t)
            return ((slope * self.probs).sum(-1) / (density * self.probs).sum(-1)).to(v.dtype)
        return score

    def expected_bound(self, sde, t):
        """d·E_v[−log(Σ_k P_k q(v | k) / Σ_k q(v | k))] over v ~ p_t, by quadrature: the discrete bound's mean
        with the exact score, less the prior mismatch."""
        v = torch.linspace(-1.3, 1.3, 40001, dtype=torch.float64).view(-1, 1)
        density = self.bin_densities(sde, v, torch.full((len(v),), t, dtype=torch.float64))[0][:, 0]
        mixed = (density * self.probs).sum(-1)
        integrand = torch.where(mixed > 0, mixed * -torch.log(mixed / density.sum(-1)), 0.0)
        return self.dims * float(torch.trapezoid(integrand, v[:, 0]))

    def entropy(self):
        return -self.dims * float((self.probs * self.probs.log()).sum())


def test_discrete_bound_with_the_exact_score_matches_its_closed_form_and_bounds_the_pixels_entropy():
    # 16 bins with a third of the mass in each end bin (as MNIST's zeros), eps = 0.01 where s(eps) is a
    # third of a bin: the decoder's costs at the bins' boundaries and at the range's ends (0.3 nats in
    # all) are both many standard errors; without the reconstruction term the mean would be 1.5 nats lower
    sde, eps = VPSDE(), 1e-2
    data = BinnedData([1 / 3] + [1 / 42] * 14 + [1 / 3], dims=2)
    gen, score_fn = torch.Generator().manual_seed(5), data.score_fn(sde)
    values = torch.cat([discrete_bound(sde, score_fn, data.sample(50_000, gen), eps, num_times=4, num_bins=16,
                                       generator=gen) for _ in range(4)])
    mean, se = float(values.mean()), float(values.std() / math.sqrt(len(values)))
    target = data.expected_bound(sde, eps)  # + KL(p_T ‖ π), below 1e-4 here
    assert se < 0.02 and abs(mean - target) < 3 * se + 1e-4, (mean, target, se)
    assert mean - 3 * se > data.entropy() and target - data.entropy() > 10 * se  # a bound, not tight at eps


def test_bad_num_times_raises():
    with pytest.raises(ValueError, match="num_times"):
        dsm_bound(VPSDE(), lambda x, t: x, torch.zeros(2, 2), num_times=0)


def test_eval_reports_the_bound_above_the_datas_exact_nll(tmp_path, monkeypatch):
    import configs
    import run_lib
    from score_sde import data

    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = configs.load_config("vp_toy")
    t, e = config.training, config.eval
    t.n_iters, t.snapshot_freq, t.batch_size, config.model.num_scales = 300, 300, 128, 50
    e.begin_ckpt = e.end_ckpt = 1
    e.batch_size, e.enable_loss, e.enable_bound, e.bound_num_times = 2000, False, True, 4
    run_lib.train(config, tmp_path)
    results = run_lib.evaluate(config, tmp_path)["checkpoint_1"]
    bound = results["bound"]
    assert bound["unit"] == "nats" and bound["count"] == 2000
    # a trained model's bound on −log p lies above the mixture's entropy, the exact NLL of its data
    mixture = data.toy_distribution("gaussian_mixture", 2)
    entropy = float(-mixture.log_prob(mixture.sample(200_000, torch.Generator().manual_seed(3))).mean())
    assert bound["mean"] - 3 * bound["stderr"] > entropy - 0.01
    assert results["produced_by"]["bound"]["settings"]["num_times"] == 4
    # the per-item values are kept, in the split's order, for paired comparisons of two checkpoints
    values = np.load(tmp_path / "eval" / "ckpt_1" / "bound_values.npz")["values"]
    assert values.shape == (2000,)
    assert values.mean() == pytest.approx(bound["mean"], rel=1e-12)
