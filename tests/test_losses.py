"""Score-matching losses at the exact score equal their analytic minimum; any other score does worse.

For Gaussian data N(μ, c²I) and x_t = m·x_0 + s·z, the optimal score gives
E‖s·score + z‖² = d·m²c²/(m²c² + s²).
"""
import pytest
import torch
from exact import all_sdes, sde_id
from scipy.integrate import quad

from score_sde.analytic import GaussianMixture
from score_sde.losses import ddpm_losses, dsm_losses, get_loss_fn, smld_losses
from score_sde.sde import VESDE, VPSDE, subVPSDE

C, DIM, NUM = 0.7, 3, 40000
DATA = GaussianMixture(weights=[1.0], means=[[0.5, -1.0, 2.0]], stds=[C])


def optimum_per_sample(m, s):
    """E of half the summed squared error (reduce_mean=False) at the optimum, per sample."""
    return 0.5 * DIM * m**2 * C**2 / (m**2 * C**2 + s**2)


def assert_mean_within_mc_error(losses, expected, sigmas=4.0):
    error = losses.mean().item() - expected
    standard_error = losses.std().item() / len(losses) ** 0.5
    assert abs(error) < sigmas * standard_error, f"mean {expected + error} vs {expected} ± {standard_error}"


def draws(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return DATA.sample(NUM, generator=gen), torch.randn(NUM, DIM, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_dsm_at_fixed_t_equals_optimum(sde, likelihood_weighting):
    x, z = draws()
    for t_value in (0.05, 0.3, 0.9):
        t = torch.full((NUM,), t_value, dtype=torch.float64)
        losses = dsm_losses(sde, DATA.score_fn(sde), x, t, z, likelihood_weighting=likelihood_weighting)
        m, s = (v[0].item() for v in sde.marginal_coefficients(t))
        g2 = sde.sde(x[:1], t[:1])[1].item() ** 2
        expected = optimum_per_sample(m, s) * (g2 / s**2 if likelihood_weighting else 1.0)
        assert_mean_within_mc_error(losses, expected)


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_perturbed_score_scores_higher(sde):
    x, z = draws()
    t = torch.full((NUM,), 0.4, dtype=torch.float64)
    exact = DATA.score_fn(sde)

    def perturbed(x, t):
        return exact(x, t) + 0.2

    s = sde.marginal_coefficients(t[:1])[1].item()
    excess = dsm_losses(sde, perturbed, x, t, z) - dsm_losses(sde, exact, x, t, z)
    # ‖s·(score + δ) + z‖² − ‖s·score + z‖² has mean s²‖δ‖² at the optimum: the cross term averages to 0.
    assert_mean_within_mc_error(excess, 0.5 * s**2 * 0.04 * DIM)
    assert excess.mean() > 0


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_continuous_loss_fn_averages_over_t(sde):
    eps = 1e-5
    loss_fn = get_loss_fn(sde, continuous=True, reduce_mean=True, eps=eps)
    gen = torch.Generator().manual_seed(1)
    batch = DATA.sample(NUM, generator=gen)
    estimates = torch.stack([loss_fn(DATA.score_fn(sde), batch[i::20], gen) for i in range(20)])

    def per_t(t):
        m, s = (v.item() for v in sde.marginal_coefficients(torch.tensor([t], dtype=torch.float64)))
        return optimum_per_sample(m, s) * 2 / DIM  # reduce_mean: a mean over dimensions

    expected = quad(per_t, eps, 1.0)[0] / (1 - eps)
    assert_mean_within_mc_error(estimates, expected)


def test_smld_loss_equals_optimum():
    sde = VESDE(N=10)
    x, z = draws()
    sigmas = sde.discrete_sigmas.flip(0)
    for label in (0, 4, 9):
        labels = torch.full((NUM,), label)

        def model_fn(x, labels):  # NCSN's network: the score at the label's noise level
            sigma = sigmas[labels]
            return DATA.perturbed_score(x, torch.ones_like(sigma), sigma)

        losses = smld_losses(sde, model_fn, x, labels, z)
        assert_mean_within_mc_error(losses, optimum_per_sample(1.0, sigmas[label].item()))
        wrong = smld_losses(sde, lambda x, labels: model_fn(x, labels) + 0.1, x, labels, z)
        assert wrong.mean() > losses.mean()


def test_ddpm_loss_equals_optimum():
    sde = VPSDE(N=50)
    x, z = draws()
    alphas_cumprod = sde.alphas_cumprod
    for label in (0, 20, 49):
        labels = torch.full((NUM,), label)
        m, s = alphas_cumprod[label].sqrt(), (1 - alphas_cumprod[label]).sqrt()

        def model_fn(x, labels, m=m, s=s):  # DDPM's network predicts the noise: −s·score
            return -s * DATA.perturbed_score(x, m.expand(len(x)), s.expand(len(x)))

        losses = ddpm_losses(sde, model_fn, x, labels, z)
        assert_mean_within_mc_error(losses, optimum_per_sample(m.item(), s.item()))
        wrong = ddpm_losses(sde, lambda x, labels: model_fn(x, labels) + 0.1, x, labels, z)
        assert wrong.mean() > losses.mean()


def test_discrete_loss_fn_picks_the_sde_family():
    x = DATA.sample(8, generator=torch.Generator().manual_seed(0))
    seen = []

    def model_fn(x, labels):
        seen.append(labels)
        return torch.zeros_like(x)

    loss = get_loss_fn(VESDE(N=10), continuous=False)(model_fn, x)
    assert loss.ndim == 0 and seen[-1].dtype == torch.int64 and seen[-1].max() < 10
    with pytest.raises(ValueError, match="subVPSDE"):
        get_loss_fn(subVPSDE(), continuous=False)
    with pytest.raises(ValueError, match="continuous training only"):
        get_loss_fn(VPSDE(), continuous=False, likelihood_weighting=True)
