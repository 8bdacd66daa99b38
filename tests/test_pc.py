"""The PC sampler with the exact score recovers the two-mode mixture, for every allowed combination."""
import math

import pytest
import torch
from exact import all_sdes, assert_matches_two_modes, mode_stats, sde_id, two_modes

from score_sde.sampling import CORRECTORS, PREDICTORS, pc_sample
from score_sde.sde import VESDE, VPSDE, subVPSDE

NUM = 5000
MIX = two_modes()


def sample(sde, predictor, corrector, num=NUM, seed=0, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    kwargs.setdefault("denoise", True)
    return pc_sample(sde, MIX.score_fn(sde), (num, 2), predictor, corrector, generator=gen,
                     dtype=torch.float64, **kwargs)


def combinations():
    """Every SDE × predictor × corrector the mathematics allows, with a predictor, at N = 1000, one step."""
    for sde in all_sdes():
        for predictor in ("euler_maruyama", "reverse_diffusion", "ancestral_sampling"):
            if predictor == "ancestral_sampling" and isinstance(sde, subVPSDE):
                continue  # no discrete chain: tested to raise below
            for corrector in CORRECTORS:
                yield pytest.param(sde, predictor, corrector, id=f"{sde_id(sde)}-{predictor}-{corrector}")


@pytest.mark.parametrize("sde, predictor, corrector", list(combinations()))
def test_predictor_corrector_recovers_mixture(sde, predictor, corrector):
    x, nfe = sample(sde, predictor, corrector, snr=0.16, n_steps=1)
    assert_matches_two_modes(x)
    assert nfe == 1000 * (1 + (corrector != "none"))


@pytest.mark.parametrize("sde", all_sdes(N=100), ids=sde_id)
def test_langevin_alone_recovers_mixture_with_enough_steps(sde):
    x, nfe = sample(sde, "none", "langevin", snr=0.16, n_steps=50)
    assert_matches_two_modes(x)
    assert nfe == 100 * 50


def test_annealed_langevin_alone_recovers_mixture_on_ve():
    x, nfe = sample(VESDE(N=100), "none", "ald", snr=0.3, n_steps=50)
    assert_matches_two_modes(x)


def test_annealing_is_what_gets_the_weights_right():
    """Langevin dynamics at the smallest noise level alone cannot cross between the modes, so from a
    start that favours neither it keeps about half the mass in each: the NCSN argument for annealing."""
    sde = VESDE(N=100)
    score_fn = MIX.score_fn(sde)
    gen = torch.Generator().manual_seed(0)
    x = 8 * torch.randn(NUM, 2, generator=gen, dtype=torch.float64)
    t = torch.full((NUM,), 1e-3, dtype=torch.float64)
    corrector = CORRECTORS["langevin"](sde, score_fn, snr=0.16, n_steps=1)
    for _ in range(5000):
        x, _ = corrector.update(x, t, (torch.randn(x.shape, generator=gen, dtype=x.dtype),))
    weight, _ = mode_stats(x)
    assert abs(weight - 0.5) < 0.05, weight
    annealed, _ = sample(sde, "none", "ald", snr=0.3, n_steps=50)
    assert abs(mode_stats(annealed)[0] - 0.8) < 0.02


@pytest.mark.parametrize("sde", all_sdes(N=50), ids=sde_id)
@pytest.mark.parametrize("shape", [(3, 2), (3, 1, 4, 4)])
def test_reproducible_any_rank_and_dtype(sde, shape):
    score_fn = MIX.score_fn(sde) if shape[1:] == (2,) else (lambda x, t: -x)
    runs = [pc_sample(sde, score_fn, shape, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
            for _ in range(2)]
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert runs[0][0].shape == shape and runs[0][0].dtype == torch.float32
    other = pc_sample(sde, score_fn, shape, generator=torch.Generator().manual_seed(4))[0]
    assert not torch.equal(other, runs[0][0])


def test_nfe_counts_real_evaluations():
    sde = VPSDE(N=40)
    calls = []

    def score_fn(x, t):
        calls.append(1)
        return -x

    for predictor, corrector, n_steps, expected in [("reverse_diffusion", "none", 1, 40),
                                                    ("none", "langevin", 3, 120),
                                                    ("euler_maruyama", "ald", 2, 120)]:
        calls.clear()
        _, nfe = pc_sample(sde, score_fn, (2, 2), predictor, corrector, n_steps=n_steps)
        assert nfe == len(calls) == expected


def test_denoise_returns_the_noise_free_mean():
    sde = VPSDE(N=50)
    gen = torch.Generator().manual_seed(0)
    noisy, _ = pc_sample(sde, MIX.score_fn(sde), (4, 2), "reverse_diffusion", "none", denoise=False,
                         generator=gen)
    gen = torch.Generator().manual_seed(0)
    clean, _ = pc_sample(sde, MIX.score_fn(sde), (4, 2), "reverse_diffusion", "none", denoise=True,
                         generator=gen)
    assert not torch.equal(noisy, clean)
    assert (noisy - clean).abs().max() < 5 * math.sqrt(0.1 / 50)  # only the last noise G_0·z, G_0 = √β_0
    runs = [pc_sample(sde, MIX.score_fn(sde), (4, 2), "none", "ald", denoise=denoise,
                      generator=torch.Generator().manual_seed(0))[0] for denoise in (False, True)]
    assert not torch.equal(*runs)  # corrector-only sampling denoises too


def test_bad_names_and_combinations_raise():
    sde = VPSDE(N=50)
    score_fn = MIX.score_fn(sde)
    with pytest.raises(ValueError, match="beta_max / N < 1"):
        pc_sample(VPSDE(N=10), score_fn, (2, 2))
    with pytest.raises(ValueError, match=r"unknown predictor 'euler'; expected one of \['ancestral"):
        pc_sample(sde, score_fn, (2, 2), predictor="euler")
    with pytest.raises(ValueError, match="unknown corrector 'hmc'"):
        pc_sample(sde, score_fn, (2, 2), corrector="hmc")
    with pytest.raises(ValueError, match="both 'none'"):
        pc_sample(sde, score_fn, (2, 2), predictor="none", corrector="none")
    with pytest.raises(ValueError, match="subVPSDE has none"):
        pc_sample(subVPSDE(N=10), score_fn, (2, 2), predictor="ancestral_sampling")
    with pytest.raises(ValueError, match="probability_flow=False"):
        pc_sample(sde, score_fn, (2, 2), predictor="ancestral_sampling", probability_flow=True)
    with pytest.raises(ValueError, match="eps"):
        pc_sample(sde, score_fn, (2, 2), eps=0.0)
    with pytest.raises(ValueError, match="snr"):
        pc_sample(sde, score_fn, (2, 2), snr=-1.0)
    assert set(PREDICTORS) == {"euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none"}
