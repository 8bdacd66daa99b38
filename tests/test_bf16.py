"""train_step(precision="bf16"): the loss under bf16 autocast, close to but not equal to the fp32 loss; fp32
master weights, gradients and Adam state; an unknown precision refused before any work."""
import re

import pytest
import torch
from torch import nn

from score_sde.acceleration import PRECISIONS
from score_sde.models import ExponentialMovingAverage
from score_sde.models.mlp import MLP
from score_sde.models.ncsnpp import NCSNpp
from score_sde.sde import VPSDE
from score_sde.train import TrainState, make_loss, make_optimizer, train_step

# bf16 keeps 8 bits of mantissa (unit roundoff 2^-9 ≈ 0.2 %): a tiny network's mean loss moves by about
# 0.1 % (at most 0.16 % over seeds on these networks); 1 % leaves room and still catches a loss computed
# in a coarser format.
RTOL = 1e-2


def tiny_mlp():
    return MLP(dim=2, hidden_dim=32)


def tiny_ncsnpp():
    # init_scale=1: with the default 0 the last layer starts at ~1e-10 and the loss is mean(z²) in any
    # precision, so bf16 could not show.
    return NCSNpp(image_size=8, num_channels=1, centered=True, nf=8, ch_mult=(1, 2), num_res_blocks=1,
                  attn_resolutions=(4,), dropout=0.0, fir=False, progressive_input="none",
                  embedding_type="positional", scale_by_sigma=False, init_scale=1.0)


NETWORKS = {"points": (tiny_mlp, (64, 2)), "images": (tiny_ncsnpp, (16, 1, 8, 8))}


def build(network_fn, seed=0):
    """A fresh TrainState: weights and training generator from seed, so two builds are the same state."""
    torch.manual_seed(seed)
    model = network_fn()
    return TrainState(model=model, ema=ExponentialMovingAverage(model, decay=0.999),
                      optimizer=make_optimizer(model.parameters(), lr=1e-3), step=0,
                      generator=torch.Generator().manual_seed(seed))


def step_recording_dtypes(state, x, precision):
    """(loss, the dtypes of every Linear / Conv2d output during the step)."""
    dtypes = []
    layers = [m for m in state.model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype)) for m in layers]
    try:
        loss = train_step(state, x, make_loss(VPSDE(), reduce_mean=True), lr=1e-3, precision=precision)
    finally:
        for hook in hooks:
            hook.remove()
    return loss, set(dtypes)


@pytest.mark.parametrize("network", NETWORKS)
def test_bf16_loss_is_close_to_fp32_but_not_equal(network):
    network_fn, shape = NETWORKS[network]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    fp32, bf16 = build(network_fn), build(network_fn)  # same weights, same generator state: same t and z
    loss32, dtypes32 = step_recording_dtypes(fp32, x, "fp32")
    loss16, dtypes16 = step_recording_dtypes(bf16, x, "bf16")
    assert dtypes32 == {torch.float32}
    assert dtypes16 == {torch.bfloat16}  # autocast was on, and in bf16 (not fp16)
    assert loss16.dtype == loss32.dtype == torch.float32 and loss16.ndim == 0
    difference = (loss16 - loss32).abs().item()
    assert 0 < difference < RTOL * loss32.abs().item()
    assert fp32.generator.get_state().equal(bf16.generator.get_state())  # both drew the same randomness


@pytest.mark.parametrize("network", NETWORKS)
def test_bf16_step_keeps_float32_weights_gradients_and_adam_state(network):
    network_fn, shape = NETWORKS[network]
    state = build(network_fn)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    step_recording_dtypes(state, x, "bf16")
    params = list(state.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params if p.requires_grad)
    trainable = [p for p in params if p.requires_grad]
    assert len(state.optimizer.state) == len(trainable)  # Adam stepped every trainable parameter
    for entry in state.optimizer.state.values():
        assert {"exp_avg", "exp_avg_sq"} <= entry.keys()
        floats = [v for v in entry.values() if torch.is_tensor(v) and v.is_floating_point()]
        assert all(v.dtype == torch.float32 for v in floats)
    assert all(s.dtype == torch.float32 for s in state.ema.shadow.values())


def test_unknown_precision_raises_before_any_work():
    state = build(tiny_mlp)
    before = [p.detach().clone() for p in state.model.parameters()]
    generator_state = state.generator.get_state()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    assert {"fp32", "bf16"} <= PRECISIONS.keys()
    expected = f"unknown precision 'float16'; expected one of {sorted(PRECISIONS)}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        train_step(state, x, make_loss(VPSDE()), lr=1e-3, precision="float16")
    assert state.step == 0 and state.generator.get_state().equal(generator_state)
    assert all(torch.equal(p, b) for p, b in zip(state.model.parameters(), before))
