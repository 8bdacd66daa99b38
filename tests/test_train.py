"""Training steps (warm-up, clipping, EMA, the original's losses) and exact resumption from checkpoints."""
import copy

import pytest
import torch
from exact import all_sdes, sde_id
from torch import nn

from score_sde.analytic import GaussianMixture
from score_sde.losses import dsm_losses, get_loss_fn
from score_sde.models import ExponentialMovingAverage, get_model_fn, get_score_fn
from score_sde.models.mlp import MLP
from score_sde.sde import VESDE, VPSDE, subVPSDE
from score_sde.train import (
    TrainState,
    eval_step,
    learning_rate,
    make_loss,
    make_optimizer,
    restore_checkpoint,
    save_checkpoint,
    train_step,
)

LR, WARMUP, GRAD_CLIP = 1e-2, 5, 1.0


def mixture():
    return GaussianMixture(weights=[0.3, 0.7], means=[[-2.0, 0.0], [1.0, 1.0]], stds=[0.5, 0.3])


def batches(n, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [mixture().sample(size, generator=gen, dtype=torch.float32) for _ in range(n)]


class DropoutMLP(nn.Module):
    """The toy MLP with dropout on its output: its masks come from torch's global generator."""

    def __init__(self, **kwargs):
        super().__init__()
        self.net = MLP(dim=2, hidden_dim=32, **kwargs)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x, labels):
        return self.dropout(self.net(x, labels))


def build(seed, network=MLP, **kwargs):
    """A fresh TrainState; seed sets the initial weights and the training generator."""
    torch.manual_seed(seed)
    model = network(**{"dim": 2, "hidden_dim": 32, **kwargs}) if network is MLP else network(**kwargs)
    return TrainState(model=model, ema=ExponentialMovingAverage(model, decay=0.999),
                      optimizer=make_optimizer(model.parameters(), lr=LR), step=0,
                      generator=torch.Generator().manual_seed(seed))


def run(state, data, loss_fn):
    return [train_step(state, x, loss_fn, lr=LR, warmup=WARMUP, grad_clip=GRAD_CLIP) for x in data]


def assert_same(a, b, where="state"):
    """Nested dicts / lists / tensors / numbers, equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def snapshot(state):
    return copy.deepcopy(state.state_dict())


def grads(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


# ---- optimizer, learning rate, clipping, EMA ----

def test_make_optimizer_is_the_originals_adam():
    model = MLP(dim=2, hidden_dim=8)
    opt = make_optimizer(model.parameters(), lr=2e-4, beta1=0.8, eps=1e-6, weight_decay=0.1)
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    settings = (group["lr"], group["betas"], group["eps"], group["weight_decay"])
    assert settings == (2e-4, (0.8, 0.999), 1e-6, 0.1)
    assert len(group["params"]) == len(list(model.parameters()))


def test_unknown_optimizer_lists_choices():
    with pytest.raises(ValueError, match=r"unknown optimizer 'SGD'.*\['Adam'\]"):
        make_optimizer(MLP(dim=2, hidden_dim=8).parameters(), lr=1e-3, optimizer="SGD")


def test_learning_rate_warms_up_linearly():
    assert [learning_rate(s, 2.0, 4) for s in (0, 1, 2, 4, 5, 1000)] == [0.0, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert learning_rate(0, 2.0, 0) == learning_rate(7, 2.0, -1) == 2.0


def test_train_step_sets_the_warmed_up_rate_of_its_step():
    state, loss_fn = build(0), make_loss(VPSDE())
    data = batches(3)
    before = snapshot(state)["model"]
    train_step(state, data[0], loss_fn, lr=LR, warmup=4)
    assert state.optimizer.param_groups[0]["lr"] == 0.0  # step 0: the original's first step moves nothing
    assert_same(state.model.state_dict(), before)
    train_step(state, data[1], loss_fn, lr=LR, warmup=4)
    assert state.optimizer.param_groups[0]["lr"] == LR / 4
    assert state.step == 2
    train_step(state, data[2], loss_fn, lr=LR, warmup=0)
    assert state.optimizer.param_groups[0]["lr"] == LR


@pytest.mark.parametrize("grad_clip", [1e-3, 1e6, -1.0])
def test_clipping_bounds_the_global_gradient_norm(grad_clip):
    batch, loss_fn = batches(1)[0], make_loss(VPSDE())
    reference = build(0)
    loss_fn(reference, batch, reference.generator).backward()
    raw = grads(reference.model)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw]))
    assert norm > 1e-2
    state = build(0)
    train_step(state, batch, loss_fn, lr=LR, warmup=0, grad_clip=grad_clip)
    scale = 1.0 if grad_clip < 0 else min(1.0, grad_clip / (norm.item() + 1e-6))  # clip_grad_norm_'s rule
    for got, want in zip(grads(state.model), raw):
        torch.testing.assert_close(got, want * scale)


def test_ema_is_updated_after_each_step():
    state = build(0)
    shadow = {k: v.clone() for k, v in state.ema.shadow.items()}
    train_step(state, batches(1)[0], make_loss(VPSDE()), lr=LR, warmup=0)
    decay = 2 / 11  # the first update's warmed-up decay min(0.999, (1 + 1) / (10 + 1))
    params = dict(state.model.named_parameters())
    assert state.ema.num_updates == 1
    for name, s in state.ema.shadow.items():
        torch.testing.assert_close(s, shadow[name] - (1 - decay) * (shadow[name] - params[name].detach()))
        assert not torch.equal(s, shadow[name])


def test_eval_step_uses_the_ema_weights_without_gradients():
    state, data = build(0), batches(4)
    run(state, data, make_loss(VPSDE()))
    params = snapshot(state)["model"]
    loss_fn = make_loss(VPSDE(), train=False)
    loss = eval_step(state, data[0], loss_fn, torch.Generator().manual_seed(5))
    assert not loss.requires_grad
    assert_same(state.model.state_dict(), params)
    averaged = copy.deepcopy(state)
    state.ema.copy_to(averaged.model)
    want = loss_fn(averaged, data[0], torch.Generator().manual_seed(5))
    assert torch.equal(loss, want)
    assert not torch.equal(want, loss_fn(state, data[0], torch.Generator().manual_seed(5)))


# ---- losses: the original's get_step_fn wiring ----

@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
def test_continuous_loss_is_dsm_of_the_score_fn(sde):
    state, batch = build(0), batches(1)[0]
    got = make_loss(sde, reduce_mean=True)(state, batch, torch.Generator().manual_seed(1))
    score_fn = get_score_fn(sde, state.model, continuous=True, train=True)
    want = get_loss_fn(sde, reduce_mean=True)(score_fn, batch, torch.Generator().manual_seed(1))
    assert torch.equal(got, want)


@pytest.mark.parametrize("sde", [VPSDE(N=100), VESDE(N=100)], ids=["VP-DDPM", "VE-SMLD"])
def test_discrete_loss_feeds_integer_labels_to_the_network_and_trains(sde):
    state, data = build(0), batches(5)
    loss_fn = make_loss(sde, continuous=False)
    got = loss_fn(state, data[0], torch.Generator().manual_seed(1))
    want = get_loss_fn(sde, continuous=False)(get_model_fn(state.model, train=True), data[0],
                                               torch.Generator().manual_seed(1))
    assert torch.equal(got, want)
    before = snapshot(state)["model"]
    losses = run(state, data, loss_fn)
    assert all(torch.isfinite(v) for v in losses)
    assert not torch.equal(state.model.input.weight, before["input.weight"])


def test_discrete_training_of_a_sub_vp_sde_is_refused():
    with pytest.raises(ValueError, match="subVPSDE"):
        make_loss(subVPSDE(), continuous=False)


def test_make_loss_sets_train_or_eval_mode():
    state, batch = build(0, DropoutMLP), batches(1)[0]
    make_loss(VPSDE(), train=False)(state, batch)
    assert not state.model.training
    make_loss(VPSDE())(state, batch)
    assert state.model.training


def test_training_approaches_the_exact_score_loss():
    sde, state, eval_batch = VPSDE(), build(0), batches(1, size=2048, seed=1)[0]
    loss_fn = make_loss(sde)
    t = 0.05 + 0.95 * torch.rand(2048, generator=torch.Generator().manual_seed(2))
    z = torch.randn(2048, 2, generator=torch.Generator().manual_seed(3))
    floor = dsm_losses(sde, mixture().score_fn(sde), eval_batch, t, z).mean()

    def gap():
        score_fn = get_score_fn(sde, state.model, continuous=True, train=False)
        with torch.no_grad():
            return dsm_losses(sde, score_fn, eval_batch, t, z).mean() - floor

    initial = gap()
    for x in batches(300, size=256, seed=4):
        train_step(state, x, loss_fn, lr=3e-3, warmup=10, grad_clip=1.0)
    assert gap() < 0.3 * initial


# ---- checkpoints ----

@pytest.mark.parametrize("network", [MLP, DropoutMLP], ids=["mlp", "mlp-dropout"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, network):
    data, loss_fn = batches(20), make_loss(VPSDE())
    straight = build(0, network)
    losses = run(straight, data, loss_fn)

    first = build(0, network)
    losses_first = run(first, data[:10], loss_fn)
    path = save_checkpoint(tmp_path / "checkpoints-meta" / "checkpoint.pth", first)
    torch.manual_seed(123)  # what a new process would have
    resumed = restore_checkpoint(path, build(1, network))
    assert resumed.step == 10
    losses_resumed = run(resumed, data[10:], loss_fn)

    assert torch.equal(torch.stack(losses), torch.stack(losses_first + losses_resumed))
    assert_same(straight.state_dict(), resumed.state_dict())  # weights, EMA, Adam moments, step, RNG
    assert straight.step == resumed.step == 20


def test_checkpoint_reads_with_weights_only(tmp_path):
    state = build(0)
    run(state, batches(2), make_loss(VPSDE()))
    path = save_checkpoint(tmp_path / "a" / "b" / "c.pth", state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pth"]
    assert_same(torch.load(path, weights_only=True), snapshot(state))


def test_save_is_atomic(tmp_path, monkeypatch):
    state, loss_fn = build(0), make_loss(VPSDE())
    run(state, batches(1), loss_fn)
    path = save_checkpoint(tmp_path / "checkpoint.pth", state)
    old = path.read_bytes()
    run(state, batches(1, seed=1), loss_fn)

    def interrupted_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, state)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]
    monkeypatch.undo()
    assert restore_checkpoint(path, build(1)).step == 1


def test_save_ignores_a_stale_tmp_file(tmp_path):
    # A killed process's temp file is neither reused nor in the way: each save has its own temp name.
    (tmp_path / ".checkpoint.pth.x.tmp").write_bytes(b"left by a killed process")
    path = save_checkpoint(tmp_path / "checkpoint.pth", build(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.pth.x.tmp", "checkpoint.pth"]
    assert restore_checkpoint(path, build(1)).step == 0


def test_missing_checkpoint(tmp_path):
    state = build(0)
    before = snapshot(state)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        restore_checkpoint(tmp_path / "nothing.pth", state)
    assert restore_checkpoint(tmp_path / "nothing.pth", state, missing_ok=True) is state
    assert_same(state.state_dict(), before)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "checkpoint.pth", build(0))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10,
                      "empty": b""}[damage])
    state = build(1)
    before = snapshot(state)
    with pytest.raises(ValueError, match="cannot read checkpoint .*checkpoint.pth"):
        restore_checkpoint(path, state)
    assert_same(state.state_dict(), before)


@pytest.mark.parametrize("other, match", [
    (dict(num_layers=2), r"unexpected keys.*blocks\.2\.weight"),  # in the file, not in the network
    (dict(num_layers=4), r"missing keys.*blocks\.3\.weight"),
    (dict(hidden_dim=16), r"shape mismatches.*input\.weight"),
])
def test_checkpoint_of_another_network_is_refused_untouched(tmp_path, other, match):
    saved = build(0)
    run(saved, batches(2), make_loss(VPSDE()))
    path = save_checkpoint(tmp_path / "checkpoint.pth", saved)
    state = build(1, **other)
    before = snapshot(state)
    with pytest.raises(ValueError, match="checkpoint .*checkpoint.pth does not fit") as info:
        restore_checkpoint(path, state)
    assert info.match(match)
    assert_same(state.state_dict(), before)


def test_checkpoint_without_training_generator_is_refused(tmp_path):
    saved = build(0)
    saved.generator = None
    path = save_checkpoint(tmp_path / "checkpoint.pth", saved)
    state = build(1)
    before = snapshot(state)
    with pytest.raises(ValueError, match="'rng' generator: the checkpoint has no state"):
        restore_checkpoint(path, state)
    assert_same(state.state_dict(), before)


@pytest.mark.parametrize("edit, match", [
    (lambda ema: ema["shadow_params"].popitem(), "'ema': EMA names differ: missing"),
    (lambda ema: ema.update(decay=2.0), r"'ema': EMA decay must lie in \[0, 1\]"),
    (lambda ema: ema.pop("num_updates"), r"'ema': an EMA state has the keys"),
])
def test_checkpoint_whose_ema_does_not_fit_is_refused_untouched(tmp_path, edit, match):
    """The model part fits and comes first: the EMA is checked before the model's weights are changed."""
    saved = build(0)
    run(saved, batches(2), make_loss(VPSDE()))
    checkpoint = saved.state_dict()
    edit(checkpoint["ema"])
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    state = build(1)
    before, ema = snapshot(state), state.ema
    with pytest.raises(ValueError, match=match):
        restore_checkpoint(tmp_path / "checkpoint.pth", state)
    assert_same(state.state_dict(), before)
    assert state.ema is ema


def test_foreign_dict_names_its_keys(tmp_path):
    path = tmp_path / "original.pth"
    state = build(0)
    torch.save({"model": state.model.state_dict(), "ema": {}, "optimizer": {}, "step": 3}, path)
    with pytest.raises(ValueError, match=r"missing keys \['rng'\].*load_reference_checkpoint"):
        restore_checkpoint(path, state)


def test_optimizer_implementation_flags_stay_those_of_this_process(tmp_path):
    saved = build(0)
    saved.optimizer = torch.optim.Adam(saved.model.parameters(), lr=LR, foreach=True)
    run(saved, batches(2), make_loss(VPSDE()))
    path = save_checkpoint(tmp_path / "checkpoint.pth", saved)
    state = build(1)
    state.optimizer = torch.optim.Adam(state.model.parameters(), lr=LR, foreach=False)
    restore_checkpoint(path, state)
    assert state.optimizer.param_groups[0]["foreach"] is False
    assert_same(state.optimizer.state_dict()["state"], saved.optimizer.state_dict()["state"])


def test_checkpoint_from_another_kind_of_device_loads_for_inference_only(tmp_path):
    """A CUDA generator's state (16 bytes) does not fit a CPU generator: resuming training refuses it, and
    loading the weights to sample or evaluate (with_rng=False) takes them."""
    saved = build(0)
    run(saved, batches(2), make_loss(VPSDE()))
    state_dict = saved.state_dict()
    state_dict["rng"]["generator"] = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator saves
    path = tmp_path / "gpu.pth"
    torch.save(state_dict, path)
    with pytest.raises(ValueError, match="another kind of device"):
        restore_checkpoint(path, build(1))
    state = restore_checkpoint(path, build(1), with_rng=False)
    assert_same(state.model.state_dict(), saved.model.state_dict())
    assert state.step == saved.step


def test_foreach_and_per_parameter_adam_and_ema_take_the_same_steps():
    """The multi-tensor (foreach) Adam and EMA paths that run on GPUs equal the plain per-parameter loop."""
    states = []
    for foreach in (True, False):
        state = build(0)
        state.optimizer = torch.optim.Adam(state.model.parameters(), lr=LR, foreach=foreach)
        run(state, batches(4), make_loss(VPSDE()))
        states.append(state)
    fast, plain = (dict(s.model.named_parameters()) for s in states)
    for name, value in plain.items():
        torch.testing.assert_close(fast[name], value, rtol=1e-6, atol=1e-7)
    shadow = states[0].ema.state_dict()["shadow_params"]
    decay = states[0].ema.decay
    reference = build(0)  # the EMA by hand: shadow ← decay·shadow + (1 − decay)·param after every step
    reference.optimizer = torch.optim.Adam(reference.model.parameters(), lr=LR, foreach=False)
    expected = {n: p.detach().clone() for n, p in reference.model.named_parameters()}
    for x in batches(4):
        train_step(reference, x, make_loss(VPSDE()), lr=LR, warmup=WARMUP, grad_clip=GRAD_CLIP)
        num = reference.step
        rate = min(decay, (1 + num) / (10 + num)) if states[0].ema.num_updates is not None else decay
        for n, p in reference.model.named_parameters():
            expected[n] = rate * expected[n] + (1 - rate) * p.detach()
    for name, value in expected.items():
        torch.testing.assert_close(shadow[name], value, rtol=1e-6, atol=1e-7)


def test_divergence_monitor_watches_every_step_without_reading_any_back():
    # issue 14: a device-side flag, read only where the caller checks it (log steps, checkpoint writes)
    from syncs import CountHostSyncs

    from score_sde.train import DivergenceMonitor, TrainingDiverged

    losses = [torch.tensor(value) for value in (3.0, 2.5, float("nan"), 1.0, float("inf"))]
    monitor = DivergenceMonitor(step=100, device="cpu")
    with CountHostSyncs() as counter:
        for loss in losses:
            monitor.observe(loss)
    assert counter.count == 0 and counter.uploads == []
    with pytest.raises(TrainingDiverged, match=r"not finite at step 103 \(last finite loss 2.5 at step 102"):
        monitor.check()  # a finite loss after the NaN (step 104) does not hide it


def test_divergence_monitor_checks_what_a_checkpoint_would_hold():
    from score_sde.train import DivergenceMonitor, TrainingDiverged

    state = build(0)
    monitor = DivergenceMonitor(step=0, device="cpu")
    monitor.observe(torch.tensor(1.0))
    monitor.check(state)  # all finite: no error
    with torch.no_grad():
        next(state.model.parameters())[0] = float("inf")
    with pytest.raises(TrainingDiverged, match="weights are not finite"):
        monitor.check(state)
