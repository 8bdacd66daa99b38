"""The toy MLP score network, and the EMA of trainable parameters (the original's update rule, by name)."""
import ml_collections
import pytest
import torch
from exact import all_sdes, sde_id
from torch import nn

from score_sde.analytic import GaussianMixture
from score_sde.losses import get_loss_fn
from score_sde.models import ExponentialMovingAverage, create_model, get_score_fn
from score_sde.models.mlp import MLP
from score_sde.sde import VPSDE


class Frozen(nn.Module):
    """Two trainable tensors, a frozen one (like NCSN++'s Fourier W) and a buffer."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(3), requires_grad=False)
        self.linear = nn.Linear(3, 2)
        self.register_buffer("sigmas", torch.arange(4.0))


def set_params(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


# ---- EMA ----

def test_ema_averages_trainable_parameters_only():
    model = Frozen()
    ema = ExponentialMovingAverage(model, decay=0.9)
    assert list(ema.shadow) == ["linear.weight", "linear.bias"]
    assert list(ema.state_dict()["shadow_params"]) == ["linear.weight", "linear.bias"]


@pytest.mark.parametrize("use_num_updates", [True, False])
def test_ema_update_matches_hand_computation(use_num_updates):
    torch.manual_seed(0)
    model = Frozen()
    start = model.linear.weight.detach().clone()
    ema = ExponentialMovingAverage(model, decay=0.999, use_num_updates=use_num_updates)
    expected = start.clone()
    for n, value in enumerate([1.0, -2.0, 0.5], start=1):
        set_params(model, value)
        # The n-th update (n counted from 1) uses decay min(0.999, (1 + n) / (10 + n)): 2/11, 3/12, 4/13.
        decay = (1 + n) / (10 + n) if use_num_updates else 0.999
        assert ema.current_decay() == pytest.approx(decay)
        expected = expected - (1 - decay) * (expected - value)
        ema.update(model)
        torch.testing.assert_close(ema.shadow["linear.weight"], expected)
    assert ema.num_updates == (3 if use_num_updates else None)


def test_ema_decay_below_the_warmup_is_used_as_is():
    model = Frozen()
    set_params(model, 0.0)
    ema = ExponentialMovingAverage(model, decay=0.1)
    set_params(model, 1.0)
    ema.update(model)  # min(0.1, 2/11) = 0.1: the shadow moves 90 % of the way
    torch.testing.assert_close(ema.shadow["linear.bias"], torch.full((2,), 0.9))


def test_ema_copy_to_store_restore_round_trip():
    model = Frozen()
    set_params(model, 1.0)
    ema = ExponentialMovingAverage(model, decay=0.5, use_num_updates=False)
    set_params(model, 3.0)
    ema.update(model)  # shadows 2.0; the frozen W stays with the model
    ema.store(model)
    ema.copy_to(model)
    assert torch.all(model.linear.weight == 2.0) and torch.all(model.W == 3.0)
    ema.restore(model)
    assert torch.all(model.linear.weight == 3.0)
    with ema.average_parameters(model):
        assert torch.all(model.linear.bias == 2.0)
    assert torch.all(model.linear.bias == 3.0)
    with pytest.raises(ValueError, match="store"):
        ema.restore(model)


def test_ema_state_dict_round_trip_by_name():
    model = Frozen()
    ema = ExponentialMovingAverage(model, decay=0.99)
    set_params(model, 5.0)
    ema.update(model)
    state = ema.state_dict()
    other = ExponentialMovingAverage(Frozen(), decay=0.5)
    other.load_state_dict(state)
    assert other.decay == 0.99 and other.num_updates == 1
    for name in ema.shadow:
        torch.testing.assert_close(other.shadow[name], ema.shadow[name])


def test_ema_refuses_positional_lists_and_other_models():
    model = Frozen()
    ema = ExponentialMovingAverage(model, decay=0.99)
    with pytest.raises(ValueError, match="load_reference_checkpoint"):
        ema.load_state_dict({"decay": 0.9, "num_updates": 0, "shadow_params": list(ema.shadow.values())})
    with pytest.raises(ValueError, match="linear.weight"):
        ema.update(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(model, decay=1.5)


# ---- MLP ----

@pytest.mark.parametrize("embedding_type", ["positional", "fourier"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_forward_backward_shape_and_dtype(embedding_type, dtype):
    torch.manual_seed(0)
    model = MLP(dim=3, hidden_dim=16, num_layers=2, embedding_type=embedding_type).to(dtype)
    x = torch.randn(5, 3, dtype=dtype, requires_grad=True)
    labels = torch.rand(5, dtype=dtype) * 10 + 0.01
    out = model(x, labels)
    assert out.shape == x.shape and out.dtype == dtype
    out.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())
    if embedding_type == "fourier":  # fixed frequencies: saved, not trained
        assert "fourier_W" in model.state_dict() and "fourier_W" not in dict(model.named_parameters())


@pytest.mark.parametrize("sde", all_sdes(), ids=sde_id)
@pytest.mark.parametrize("continuous", [True, False])
def test_mlp_works_as_a_score_function_for_every_sde(sde, continuous):
    model = MLP(dim=2, hidden_dim=16)
    x = torch.randn(6, 2)
    score = get_score_fn(sde, model, continuous=continuous)(x, torch.linspace(0.01, 1.0, 6))
    assert score.shape == x.shape and torch.isfinite(score).all()


def test_mlp_flattens_images_and_rejects_other_sizes_and_unknown_embeddings():
    x = torch.randn(2, 1, 4, 4)
    model = MLP(dim=16, hidden_dim=8)
    out = model(x, torch.ones(2))
    assert out.shape == x.shape
    torch.testing.assert_close(out.flatten(1), model(x.flatten(1), torch.ones(2)))
    with pytest.raises(ValueError, match="MLP of dim 2"):
        MLP(dim=2)(x, torch.ones(2))
    with pytest.raises(ValueError, match="embedding_type"):
        MLP(dim=2, embedding_type="learned")


def test_mlp_scale_by_sigma_divides_the_output_by_the_labels():
    torch.manual_seed(0)
    plain = MLP(dim=2, hidden_dim=16, embedding_type="fourier")
    scaled = MLP(dim=2, hidden_dim=16, embedding_type="fourier", scale_by_sigma=True)
    scaled.load_state_dict(plain.state_dict())
    x, sigma = torch.randn(5, 2), torch.tensor([0.01, 0.1, 1.0, 10.0, 50.0])
    torch.testing.assert_close(scaled(x, sigma), plain(x, sigma) / sigma[:, None])
    with pytest.raises(ValueError, match="scale_by_sigma.*'fourier'"):
        MLP(dim=2, embedding_type="positional", scale_by_sigma=True)


def test_mlp_input_skip_adds_a_label_dependent_multiple_of_the_input():
    torch.manual_seed(0)
    model = MLP(dim=6, hidden_dim=16, input_skip=True)
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
    x, labels = torch.randn(3, 6), torch.tensor([1.0, 500.0, 999.0])
    out = model(x, labels)
    gain = out / x  # with the residual path silenced, each sample's output is g(label)·x
    torch.testing.assert_close(gain, gain[:, :1].expand_as(gain))
    assert not torch.allclose(gain[0, 0], gain[2, 0])


def test_create_model_builds_the_mlp_from_the_config():
    config = ml_collections.ConfigDict({"model": {"name": "mlp", "nf": 32, "num_layers": 2},
                                        "data": {"dim": 2}})
    model = create_model(config)
    assert isinstance(model, MLP) and len(model.blocks) == 2 and model.input.in_features == 2
    assert model.input.out_features == 32


def test_mlp_learns_a_gaussian_with_dsm():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    data = GaussianMixture(weights=[1.0], means=[[1.0, -2.0]], stds=[0.5])
    sde = VPSDE()
    loss_fn = get_loss_fn(sde, continuous=True)
    model = MLP(dim=2, hidden_dim=64, num_layers=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    eval_batch = data.sample(4096, generator=torch.Generator().manual_seed(1), dtype=torch.float32)

    def eval_loss():
        with torch.no_grad():
            return loss_fn(get_score_fn(sde, model), eval_batch, torch.Generator().manual_seed(2)).item()

    before = eval_loss()
    train_score_fn = get_score_fn(sde, model, train=True)
    for _ in range(200):
        loss = loss_fn(train_score_fn, data.sample(256, generator=gen, dtype=torch.float32), gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    with torch.no_grad():
        optimum = loss_fn(data.score_fn(sde), eval_batch.double(), torch.Generator().manual_seed(2)).item()
    # Measured: 1.25 before, 0.189 after, 0.172 at the exact score.
    assert after < 0.5 * before, (before, after)
    assert after < 1.25 * optimum, (after, optimum)
