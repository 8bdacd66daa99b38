"""Fixtures shared by several test files."""
import pytest
import shared
import torch


@pytest.fixture
def traced_not_generated(monkeypatch):
    """torch.compile with the aot_eager backend whatever the mode asked: dynamo and AOT autograd trace
    exactly what inductor would compile (graph breaks would show), in seconds instead of minutes of C++
    compilation on a CPU."""
    compile_fn = torch.compile

    def aot_eager(fn, *, fullgraph=False, mode=None, **kwargs):
        return compile_fn(fn, fullgraph=fullgraph, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", aot_eager)


# The ../shared folders as fixtures, for tests that would rather take them as arguments than call
# shared.require_* in their body. Checked at setup: a bare clone skips such a test; under CI=true it errors
# at setup (a call in the body fails instead); neither ever passes silently.


@pytest.fixture
def mnist_dir():
    """../shared/data/mnist, holding MNIST's gzipped test split."""
    return shared.require_mnist()


@pytest.fixture
def reference_fixtures():
    """../shared/fixtures/reference_models, the reference networks' checkpoints, configs and outputs."""
    return shared.require_reference_models()
