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


def pytest_configure(config):
    """One torch thread for the whole suite: the tests' tensors are small, and on a 2-core machine that is
    also running other work, intra-op threads spend their time contending (one PC test took 157 s, the
    particle filter's tests 20–50× longer than on one thread). Subprocesses (the CLI tests) keep their own
    setting."""
    torch.set_num_threads(1)
