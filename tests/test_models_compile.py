"""What makes the networks fast on a GPU, proven on the CPU: every family traces into one graph under
torch.compile(fullgraph=True) with no graph break, runs in channels_last memory format with the output of the
contiguous one, and runs forward and backward under bf16 autocast close to its float32 output."""
import pytest
import torch
from reference import config, io, model_and_ema_state_dicts, per_sample_error, requires_fixtures

from score_sde.models import create_model
from score_sde.models.mlp import MLP

FAMILIES = ["ncsnpp_ve", "ncsnpp_ve_outskip", "ddpmpp_vp", "ddpm_vp", "ncsnv2_ve", "ncsn_ve"]


def tiny(name):
    torch.manual_seed(0)
    data = io(name)
    return create_model(config(name)).eval(), data["x"], data["labels"]


def trained(name):
    """The tiny fixture network with its trained weights. Freshly initialised, DDPM and NCSN++ start every
    residual branch with an almost-zero conv (init_scale 0), so a broken layer there would not show."""
    model, x, labels = tiny(name)
    model.load_state_dict(model_and_ema_state_dicts(name)[0], strict=True)
    return model.float(), x, labels


@requires_fixtures
@pytest.mark.parametrize("name", FAMILIES)
def test_compiles_without_graph_breaks(name):
    torch._dynamo.reset()
    model, x, labels = trained(name)
    # The criterion, stated directly: dynamo captures the whole forward as one graph.
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x, labels)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    # aot_eager runs dynamo and AOT autograd (where graph breaks and tensor-value branches show) without
    # generating kernels, so the check costs seconds on a CPU; fullgraph=True raises on any graph break.
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected, got = model(x, labels), compiled(x, labels)
    assert per_sample_error(got, expected) < 1e-5


@requires_fixtures
@pytest.mark.parametrize("name", FAMILIES)
def test_channels_last_gives_the_contiguous_output(name):
    # On a GPU, convolutions in channels_last (NHWC) run on tensor cores without layout transposes; every
    # layer must accept NHWC strides (reshape, never view) and compute the same thing.
    model, x, labels = trained(name)
    with torch.no_grad():
        expected = model(x, labels)
        model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last), labels)
    assert per_sample_error(got, expected) < 1e-5  # float32 rounding in another summation order


@requires_fixtures
@pytest.mark.parametrize("name", FAMILIES)
def test_bf16_autocast_forward_backward(name):
    # Trained weights: a freshly initialised NCSN v1 puts its outputs near a cancellation, where bf16's
    # relative error depends on the CPU's bf16 kernels (6.6 % on one Xeon, 1.5 % with trained weights).
    model, x, labels = trained(name)
    with torch.no_grad():
        reference = model(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, labels)
    # bf16 keeps 8 bits of mantissa: about 1 % per-sample error through a few dozen layers.
    assert per_sample_error(out.float(), reference.float()) < 0.05
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights


def test_mlp_compiles_and_autocasts():
    torch._dynamo.reset()
    model = MLP(dim=2, hidden_dim=32).eval()
    x, labels = torch.randn(8, 2), torch.rand(8) * 999
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, labels), model(x, labels))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert per_sample_error(model(x, labels).float(), compiled(x, labels)) < 0.05
