"""get_score_fn applies the original's noise-conditioning conventions, and turns an exact noise prediction
into the exact score."""
import math

import pytest
import torch
from exact import all_sdes, sde_id
from torch import nn

from score_sde.analytic import GaussianMixture
from score_sde.models import get_score_fn
from score_sde.models.score_fn import noise_labels
from score_sde.sde import SDE, VESDE, VPSDE, subVPSDE

SHAPES = [(4, 2), (4, 3, 5, 5)]
T_VALUES = [0.0, 0.25, 0.5, 1.0]


class RecordingNet(nn.Module):
    """Returns 3·x + labels (broadcast), and remembers the labels and the mode it was called with."""

    def forward(self, x, labels):
        self.labels, self.was_training = labels, self.training
        return 3 * x + labels.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def expected_output(x, labels):
    return 3 * x + labels.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def vp_std(sde, t):
    """√(1 − e^{−∫β}) written out: ∫_0^t β = β_min·t + ½t²(β_max − β_min)."""
    integral = sde.beta_min * t + 0.5 * t**2 * (sde.beta_max - sde.beta_min)
    return math.sqrt(1 - math.exp(-integral))


def ddpm_std(sde, i):
    """√(1 − ᾱ_i) with ᾱ_i = Π_{j ≤ i} (1 − β_j), β_j = (β_min + j(β_max − β_min)/(N − 1)) / N."""
    betas = [(sde.beta_min + j * (sde.beta_max - sde.beta_min) / (sde.N - 1)) / sde.N for j in range(i + 1)]
    return math.sqrt(1 - math.prod(1 - b for b in betas))


def run(sde, continuous, shape, train=False):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = torch.tensor(T_VALUES, dtype=torch.float64)
    net = RecordingNet()
    score = get_score_fn(sde, net, continuous=continuous, train=train)(x, t)
    return x, net, score


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(  # sub-VP has no discrete chain: the original uses the continuous convention
    "sde, continuous", [(VPSDE(), True), (subVPSDE(), True), (subVPSDE(), False)],
    ids=["VPSDE-continuous", "subVPSDE-continuous", "subVPSDE-discrete"])
def test_vp_and_subvp_continuous_labels_and_score(sde, continuous, shape):
    x, net, score = run(sde, continuous, shape)
    labels = torch.tensor([999 * t for t in T_VALUES], dtype=torch.float64)
    torch.testing.assert_close(net.labels, labels)
    std = torch.tensor([vp_std(sde, t) if isinstance(sde, VPSDE) else vp_std(sde, t) ** 2 for t in T_VALUES],
                       dtype=torch.float64)
    expected = -expected_output(x, labels) / std.reshape(-1, *([1] * (x.ndim - 1)))
    torch.testing.assert_close(score[1:], expected[1:])  # at t = 0 the std is 0: the score is infinite
    assert score.shape == x.shape and score.dtype == x.dtype


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_vp_discrete_labels_are_fractional_steps_and_std_is_the_ddpm_chains(shape):
    sde = VPSDE()
    x, net, score = run(sde, False, shape)
    # labels = t·(N − 1) as floats: [0, 249.75, 499.5, 999]; the std index truncates them.
    torch.testing.assert_close(net.labels, torch.tensor([0.0, 249.75, 499.5, 999.0], dtype=torch.float64))
    std = torch.tensor([ddpm_std(sde, i) for i in (0, 249, 499, 999)], dtype=torch.float64)
    expected = -expected_output(x, net.labels) / std.reshape(-1, *([1] * (x.ndim - 1)))
    torch.testing.assert_close(score, expected)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ve_continuous_labels_are_sigma_and_output_is_the_score(shape):
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    x, net, score = run(sde, True, shape)
    sigmas = torch.tensor([0.01 * 5000**t for t in T_VALUES], dtype=torch.float64)
    torch.testing.assert_close(net.labels, sigmas)
    torch.testing.assert_close(score, expected_output(x, sigmas))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ve_discrete_labels_index_from_the_largest_noise(shape):
    x, net, score = run(VESDE(N=1000), False, shape)
    # round((1 − t)·999): t = 0.5 gives 499.5, which rounds half to even, to 500.
    assert net.labels.dtype == torch.int64
    assert net.labels.tolist() == [999, 749, 500, 0]
    torch.testing.assert_close(score, expected_output(x, net.labels))


def test_labels_keep_the_original_dtypes():
    t = torch.tensor([0.3, 0.7])
    assert noise_labels(VPSDE(), t, continuous=False).dtype == torch.float32
    assert noise_labels(subVPSDE(), t, continuous=False).dtype == torch.float32
    assert noise_labels(VESDE(), t, continuous=True).dtype == torch.float32
    assert noise_labels(VESDE(), t, continuous=False).dtype == torch.int64


@pytest.mark.parametrize("train", [False, True])
def test_train_flag_sets_the_mode_at_every_call(train):
    net = RecordingNet().train(not train)
    score_fn = get_score_fn(VESDE(), net, train=train)
    x, t = torch.randn(2, 2), torch.tensor([0.2, 0.4])
    score_fn(x, t)
    assert net.was_training is train
    net.train(not train)
    score_fn(x, t)
    assert net.training is train


def test_score_has_x_dtype_when_the_network_returns_float64():
    class Float64Net(nn.Module):
        def forward(self, x, labels):
            return x.double() / 2

    x = torch.randn(3, 2)
    score = get_score_fn(VESDE(), Float64Net())(x, torch.tensor([0.1, 0.5, 0.9]))
    assert score.dtype == torch.float32


def test_unknown_sde_is_a_value_error():
    class OtherSDE(SDE):
        sde = marginal_coefficients = t_from_log_snr = prior_sampling = prior_logp = None

    with pytest.raises(ValueError, match="OtherSDE"):
        get_score_fn(OtherSDE(N=10), RecordingNet())


def test_time_of_the_wrong_shape_is_a_value_error():
    with pytest.raises(ValueError, match="shape"):
        get_score_fn(VPSDE(), RecordingNet())(torch.randn(3, 2), torch.rand(2))


DATA = GaussianMixture(weights=[1.0], means=[[0.5, -1.0, 2.0]], stds=[0.7])


class ExactNoiseNet(nn.Module):
    """A perfect VP / sub-VP network: from labels 999·t it predicts the noise ε̂ = −s(t)·∇log p_t(x)."""

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def forward(self, x, labels):
        t = labels / 999
        m, s = self.sde.marginal_coefficients(t)
        return -s[:, None] * DATA.perturbed_score(x, m, s)


class ExactDDPMNet(nn.Module):
    """A perfect discrete DDPM network: at step i it predicts the noise of x_i = √ᾱ_i·x_0 + √(1 − ᾱ_i)·z."""

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def forward(self, x, labels):
        alpha_bar = self.sde.alphas_cumprod[labels.long()]
        m, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        return -s[:, None] * DATA.perturbed_score(x, m, s)


@pytest.mark.parametrize("sde", [s for s in all_sdes() if not isinstance(s, VESDE)], ids=sde_id)
def test_exact_noise_prediction_gives_the_exact_score(sde):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 2
    t = 0.001 + 0.999 * torch.rand(64, generator=gen, dtype=torch.float64)
    score = get_score_fn(sde, ExactNoiseNet(sde), continuous=True)(x, t)
    torch.testing.assert_close(score, DATA.score_fn(sde)(x, t))


def test_exact_ddpm_noise_prediction_gives_the_chains_score():
    sde = VPSDE()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    steps = torch.randint(1, sde.N, (64,), generator=gen)
    t = (steps + 0.25).double() / (sde.N - 1)  # inside step i's interval, away from rounding at its edges
    alpha_bar = sde.alphas_cumprod[steps]
    exact = DATA.perturbed_score(x, alpha_bar.sqrt(), (1 - alpha_bar).sqrt())
    torch.testing.assert_close(get_score_fn(sde, ExactDDPMNet(sde), continuous=False)(x, t), exact)


def test_exact_ve_network_score_is_passed_through():
    sde = VESDE()

    class ExactVENet(nn.Module):
        def forward(self, x, labels):  # labels = σ(t); s(t) = σ(t), m = 1
            return DATA.perturbed_score(x, torch.ones_like(labels), labels)

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 5
    t = torch.rand(64, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(get_score_fn(sde, ExactVENet())(x, t), DATA.score_fn(sde)(x, t))


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_edm_preconditioning_of_the_exact_denoiser_gives_the_exact_score(sde):
    # Gaussian data N(μ, σ₀²): the exact denoiser is D(x̂; σ) = μ + σ₀²/(σ₀² + σ²)·(x̂ − μ). A "network" that
    # returns F = (D − c_skip·x̂)/c_out from its inputs (c_in·x̂, label) makes the wrapper's score exact
    # only if every coefficient, the scaling x̂ = x/m and Tweedie's conversion are right.
    from score_sde.models.score_fn import edm_score_fn

    mu, std0, sigma_data = 0.3, 0.8, 0.5
    data = GaussianMixture([1.0], [[mu, mu]], [std0])
    gen = torch.Generator().manual_seed(0)
    t = 1e-3 + (1 - 1e-3) * torch.rand(64, generator=gen, dtype=torch.float64)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64) * 3

    def oracle(u, labels):
        torch.testing.assert_close(labels, noise_labels(sde, t))  # the network's own continuous label
        m, s = sde.marginal_coefficients(t)
        sigma = (s / m)[:, None]
        total = sigma**2 + sigma_data**2
        x_hat = u * total.sqrt()
        denoised = mu + std0**2 / (std0**2 + sigma**2) * (x_hat - mu)
        return (denoised - sigma_data**2 / total * x_hat) / (sigma * sigma_data / total.sqrt())

    torch.testing.assert_close(edm_score_fn(sde, oracle, sigma_data)(x, t), data.score_fn(sde)(x, t))


def test_unknown_or_discrete_edm_preconditioning_raises():
    model = torch.nn.Identity()
    with pytest.raises(ValueError, match="unknown preconditioning 'karras'"):
        get_score_fn(VPSDE(), model, preconditioning="karras")
    with pytest.raises(ValueError, match="continuous-time"):
        get_score_fn(VPSDE(), model, continuous=False, preconditioning="edm")
