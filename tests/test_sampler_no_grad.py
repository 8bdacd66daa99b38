"""Samplers keep no autograd graph: they run under no_grad themselves, so a network's graph is never kept
across function evaluations (memory flat in NFE), and a score function that needs gradients opens its own."""
import pytest
import torch
from torch import nn

from score_sde.models import get_score_fn
from score_sde.models.mlp import MLP
from score_sde.sampling import ode_sample, pc_sample
from score_sde.sampling.fast import fast_sample
from score_sde.sde import VPSDE

SAMPLERS = {
    "pc": lambda sde, fn, steps: pc_sample(sde, fn, (4, 2), eps=1e-3),
    "ode": lambda sde, fn, steps: ode_sample(sde, fn, (4, 2), rtol=10.0 ** -steps, atol=10.0 ** -steps),
    "fast": lambda sde, fn, steps: fast_sample(sde, fn, (4, 2), steps=steps * 5),
}


def network_score(sde):
    torch.manual_seed(0)
    model = MLP(dim=2, hidden_dim=16)  # parameters that require grad, as a trained network's do
    assert all(p.requires_grad for p in model.parameters())
    return get_score_fn(sde, model, continuous=True, train=False)


class SavedForBackward:
    """Counts the tensors autograd saves for a backward pass while active: none means no graph is kept."""

    def __enter__(self):
        self.count = 0

        def pack(tensor):
            self.count += 1
            return tensor

        self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_samples_carry_no_graph_and_memory_stays_flat_in_nfe(method):
    sde = VPSDE(N=30)
    score_fn = network_score(sde)
    nfes = []
    for steps in (2, 4):  # more function evaluations
        with SavedForBackward() as saved:
            x, nfe = SAMPLERS[method](sde, score_fn, steps)
        assert x.grad_fn is None and not x.requires_grad
        assert saved.count == 0  # no activation is kept for a backward pass: memory cannot grow with NFE
        nfes.append(nfe)
    if method != "pc":
        assert nfes[1] > nfes[0]


def test_the_same_score_with_grad_enabled_would_keep_a_graph():
    # The control: without the samplers' no_grad, every evaluation saves activations for backward.
    sde = VPSDE(N=30)
    score_fn = network_score(sde)
    with SavedForBackward() as saved:
        out = score_fn(torch.zeros(4, 2), torch.full((4,), 0.5))
    assert saved.count > 0 and out.grad_fn is not None


def test_a_score_function_that_needs_gradients_opens_its_own():
    # Guidance-style: the score of log N(x; 0, 1) taken by autograd inside the score function.
    def autograd_score(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_p = -0.5 * x.pow(2).sum()
            (grad,) = torch.autograd.grad(log_p, x)
        return grad

    sde = VPSDE(N=30)
    for sample in (lambda: pc_sample(sde, autograd_score, (8, 2)),
                   lambda: ode_sample(sde, autograd_score, (8, 2)),
                   lambda: fast_sample(sde, autograd_score, (8, 2), steps=5)):
        x, _ = sample()
        assert x.grad_fn is None and torch.isfinite(x).all()


def test_sampling_leaves_grad_mode_as_it_was():
    sde = VPSDE(N=10)
    score_fn = network_score(sde)
    assert torch.is_grad_enabled()
    fast_sample(sde, score_fn, (2, 2), steps=3)
    assert torch.is_grad_enabled()
    nn.Linear(2, 2)(torch.zeros(1, 2)).sum().backward()  # autograd still works afterwards
