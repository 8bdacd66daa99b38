"""The hot loops never make a GPU wait, proven on the CPU by counting the host reads a GPU would make
(tests/syncs.py): none per PC step or training step, one per ODE solver step; and one PC step traces into a
single graph, so it can be compiled with fullgraph=True and replayed as a CUDA graph."""
import pytest
import torch
from reference import config, io, requires_fixtures
from syncs import CountHostSyncs, as_on_a_gpu

from score_sde import acceleration
from score_sde import train as training
from score_sde.likelihood import log_likelihood
from score_sde.models import ExponentialMovingAverage, create_model, get_score_fn
from score_sde.models.mlp import MLP
from score_sde.sampling import CORRECTORS, PREDICTORS, ode_sample, pc_sample
from score_sde.sampling.pc import pc_step
from score_sde.sde import VESDE, VPSDE, subVPSDE

SHAPE = (2, 1, 4, 4)  # tiny images: the network flattens them


def tiny_network(sde):
    torch.manual_seed(0)
    fourier = isinstance(sde, VESDE)
    return MLP(dim=16, hidden_dim=16, num_layers=1, embedding_type="fourier" if fourier else "positional",
               scale_by_sigma=fourier).eval()


# SDEs with few levels (beta_max below N keeps the DDPM chain defined at 3 levels).
SDE_MAKERS = {"VPSDE": lambda n: VPSDE(beta_max=2.0, N=n), "subVPSDE": lambda n: subVPSDE(beta_max=2.0, N=n),
              "VESDE": lambda n: VESDE(N=n)}


def pc_combinations():
    for name in SDE_MAKERS:
        for predictor in PREDICTORS:
            for corrector in CORRECTORS:
                if (predictor, corrector) == ("none", "none") or (
                        predictor == "ancestral_sampling" and name == "subVPSDE"):
                    continue
                yield pytest.param(name, predictor, corrector, id=f"{name}-{predictor}-{corrector}")


def count_pc_syncs(name, predictor, corrector, continuous, levels):
    sde = SDE_MAKERS[name](levels)
    score_fn = get_score_fn(sde, tiny_network(sde), continuous=continuous)
    with torch.no_grad(), CountHostSyncs() as syncs:
        pc_sample(sde, score_fn, SHAPE, predictor, corrector, n_steps=2,
                  generator=torch.Generator().manual_seed(0))
    return syncs.names + syncs.uploads


@pytest.mark.parametrize("name, predictor, corrector", list(pc_combinations()))
def test_no_host_sync_in_any_pc_step(monkeypatch, name, predictor, corrector):
    """0 host reads and no tensor made from host data per level, for every predictor and corrector, at 3
    levels and at 6, continuous and discrete: nothing in the loop waits for the device."""
    as_on_a_gpu(monkeypatch)
    for continuous in (True, False) if name != "subVPSDE" else (True,):
        for levels in (3, 6):
            assert count_pc_syncs(name, predictor, corrector, continuous, levels) == []


def test_the_counter_sees_the_cpu_range_check():
    """Without as_on_a_gpu the CPU range check of the times reads values: the counter does see host reads
    (so the zeros above are not a blind counter), and they grow with the number of levels."""
    counts = [len(count_pc_syncs("VPSDE", "euler_maruyama", "none", True, levels)) for levels in (3, 6)]
    assert 0 < counts[0] < counts[1], counts


def ode_steps(nfe):
    """Accepted and rejected dopri5 steps from its evaluation count: 2 to start, 6 a step."""
    assert (nfe - 2) % 6 == 0, nfe
    return (nfe - 2) // 6


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_one_host_read_per_ode_solver_step(monkeypatch, sde):
    """The accept/reject decision is the one host read of a dopri5 step (plus three for the first step
    size); the sampling ODE and the likelihood ODE alike."""
    as_on_a_gpu(monkeypatch)
    score_fn = get_score_fn(sde, tiny_network(sde))
    with torch.no_grad(), CountHostSyncs() as syncs:
        _, nfe = ode_sample(sde, score_fn, SHAPE, rtol=1e-3, atol=1e-3,
                            generator=torch.Generator().manual_seed(0))
    assert ode_steps(nfe) >= 3 and syncs.count == 3 + ode_steps(nfe), (syncs.names, nfe)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    with CountHostSyncs() as syncs:
        _, _, nfe = log_likelihood(sde, score_fn, x, rtol=1e-3, atol=1e-3,
                                   generator=torch.Generator().manual_seed(2))
    assert ode_steps(nfe) >= 3 and syncs.count == 3 + ode_steps(nfe), (syncs.names, nfe)


@pytest.mark.parametrize("sde, continuous", [(VPSDE(), True), (VESDE(), True), (VPSDE(), False),
                                             (VESDE(), False)], ids=["vp", "ve", "ddpm", "smld"])
def test_a_training_step_reads_nothing_back(monkeypatch, sde, continuous):
    """The loss, its backward pass, gradient clipping and the EMA update make no host read (the loss is
    read back only every log_freq steps, by the caller); Adam itself is torch's (fused on a GPU)."""
    as_on_a_gpu(monkeypatch)
    model = tiny_network(sde).train()
    if not continuous:  # the discrete losses feed integer noise-level indices
        model = MLP(dim=16, hidden_dim=16, num_layers=1).train()
    ema = ExponentialMovingAverage(model, 0.999)
    state = training.TrainState(model, ema, torch.optim.Adam(model.parameters()), 0, torch.Generator())
    loss_fn = training.make_loss(sde, continuous=continuous)
    batch = torch.randn(SHAPE)
    with CountHostSyncs() as syncs:
        loss = loss_fn(state, batch, state.generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        ema.update(model)
    assert syncs.names == [] and syncs.uploads == []


STEP_PAIRS = [("euler_maruyama", "langevin"), ("reverse_diffusion", "ald"), ("ancestral_sampling", "none"),
              ("none", "ald")]


@pytest.mark.parametrize("predictor, corrector", STEP_PAIRS)
@pytest.mark.parametrize("sde", [VPSDE(beta_max=2.0, N=4), VESDE(N=4)], ids=lambda s: type(s).__name__)
def test_one_pc_step_is_one_graph(sde, predictor, corrector):
    """torch._dynamo.explain finds one graph and no break in a PC step around a network."""
    torch._dynamo.reset()
    score_fn = get_score_fn(sde, tiny_network(sde))
    predict = PREDICTORS[predictor](sde, score_fn)
    correct = CORRECTORS[corrector](sde, score_fn, 0.16, 2)
    step = pc_step(predict, correct, predictor != "none")
    x = torch.randn(SHAPE)
    noise = [torch.randn(SHAPE) for _ in range(correct.noises + predict.noises)]
    with torch.no_grad():
        explanation = torch._dynamo.explain(step)(x, torch.full((2,), 0.5), *noise)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def compiled_pc_sampling_equals_eager():
    sde = VPSDE(beta_max=2.0, N=5)
    score_fn = get_score_fn(sde, tiny_network(sde))
    runs = []
    for mode in (None, "default"):
        with torch.no_grad():
            runs.append(pc_sample(sde, score_fn, SHAPE, "reverse_diffusion", "langevin", compile_mode=mode,
                                  generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-5)
    assert runs[0][1] == runs[1][1] == 10


def test_compiled_pc_sampling_equals_eager(traced_not_generated):
    """sampling.compile: the loop with its step compiled (fullgraph) draws the same samples as eager."""
    compiled_pc_sampling_equals_eager()


@pytest.mark.slow
def test_inductor_compiled_pc_sampling_equals_eager():
    compiled_pc_sampling_equals_eager()


def test_compile_reports_its_first_call(caplog):
    step = acceleration.Compiled(lambda x: x * 2, mode="default", name="doubling")
    assert step.first_call_s is None
    torch.testing.assert_close(step(torch.ones(3)), torch.full((3,), 2.0))
    assert step.first_call_s > 0 and "doubling: first call took" in caplog.text
    with pytest.raises(ValueError, match="unknown compile mode 'fast'; expected one of"):
        acceleration.Compiled(lambda x: x, mode="fast")


@requires_fixtures
@pytest.mark.parametrize("name", ["ncsnpp_ve", "ncsnpp_ve_outskip", "ddpmpp_vp", "ddpm_vp", "ncsnv2_ve",
                                  "ncsn_ve"])
def test_a_network_forward_neither_reads_nor_uploads(name):
    """Every family's forward pass reads nothing back and makes no tensor from Python data (NCSN++'s FIR
    taps are buffers on the network's device), so an eager forward never waits for the GPU."""
    model = create_model(config(name)).eval()
    data = io(name)
    with torch.no_grad(), CountHostSyncs() as syncs:
        model(data["x"], data["labels"])
    assert syncs.names == [] and syncs.uploads == []
