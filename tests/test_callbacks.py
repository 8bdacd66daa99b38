"""Samplers' per-step callback(step, x, x0_hat): called once per step, free (same samples, same NFE), and
x0_hat is the data prediction of the step's last score evaluation."""
import pytest
import torch

from score_sde import VESDE, VPSDE, GaussianMixture, fast_sample, ode_sample, pc_sample

MEAN = [0.3, -0.7]


def narrow_data():
    # x̂₀ = E[x₀ | x_t] of data this narrow is its mean at every t, whatever x_t is
    return GaussianMixture([1.0], [MEAN], [1e-3])


def run(sampler, sde, callback, **options):
    score_fn = narrow_data().score_fn(sde)
    return sampler(sde, score_fn, (16, 2), generator=torch.Generator().manual_seed(0), callback=callback,
                   **options)


SAMPLERS = [(pc_sample, dict(predictor="reverse_diffusion", corrector="langevin"), "N"),
            (ode_sample, dict(rtol=1e-3, atol=1e-3), None),
            (fast_sample, dict(solver="adams_pc", steps=10), 10),
            (fast_sample, dict(solver="heun", steps=5), 5)]


@pytest.mark.parametrize("sde", [VPSDE(N=50), VESDE(N=50)], ids=["VP", "VE"])
@pytest.mark.parametrize("sampler, options, steps", SAMPLERS, ids=["pc", "ode", "adams_pc", "heun"])
def test_callback_is_called_per_step_for_free_with_the_data_prediction(sampler, options, steps, sde):
    seen = []
    x, nfe = run(sampler, sde, lambda i, x, x0: seen.append((i, x.clone(), x0.clone())), **options)
    x_plain, nfe_plain = run(sampler, sde, None, **options)
    assert torch.equal(x, x_plain) and nfe == nfe_plain
    expected = sde.N if steps == "N" else steps
    if expected is not None:
        assert len(seen) == expected
    assert [i for i, _, _ in seen] == list(range(len(seen))) and len(seen) > 3
    for _, _, x0 in seen:
        assert torch.allclose(x0, torch.tensor(MEAN).expand_as(x0), atol=1e-2)


def test_pc_callback_refuses_a_compiled_step():
    with pytest.raises(ValueError, match="compile_mode"):
        run(pc_sample, VPSDE(N=5), lambda *a: None, compile_mode="default")


def test_scipy_ode_refuses_a_callback():
    with pytest.raises(ValueError, match="scipy-rk45"):
        run(ode_sample, VPSDE(), lambda *a: None, method="scipy-rk45")
