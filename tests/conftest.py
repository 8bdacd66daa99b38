"""Fixtures shared by several test files."""
import pytest
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
