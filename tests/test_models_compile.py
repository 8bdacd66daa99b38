"""What makes the networks fast on a GPU, proven on the CPU: every family traces into one graph under
torch.compile(fullgraph=True) with no graph break, and runs forward and backward under bf16 autocast close to
its float32 output."""
import pytest
import torch
from reference import config, io, per_sample_error, requires_fixtures

from score_sde.models import create_model
from score_sde.models.mlp import MLP

FAMILIES = ["ncsnpp_ve", "ncsnpp_ve_outskip", "ddpmpp_vp", "ddpm_vp", "ncsnv2_ve", "ncsn_ve"]


def tiny(name):
    torch.manual_seed(0)
    data = io(name)
    return create_model(config(name)).eval(), data["x"], data["labels"]


@requires_fixtures
@pytest.mark.parametrize("name", FAMILIES)
def test_compiles_without_graph_breaks(name):
    torch._dynamo.reset()
    model, x, labels = tiny(name)
    # aot_eager runs dynamo and AOT autograd (where graph breaks and tensor-value branches show) without
    # generating kernels, so the check costs seconds on a CPU; fullgraph=True raises on any graph break.
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected, got = model(x, labels), compiled(x, labels)
    assert per_sample_error(got, expected) < 1e-5


@requires_fixtures
@pytest.mark.parametrize("name", FAMILIES)
def test_bf16_autocast_forward_backward(name):
    model, x, labels = tiny(name)
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
