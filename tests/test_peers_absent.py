"""benchmarks/peers.py without k-diffusion and diffusers (as on CI): it imports, offers no sampler, says how
to install both, and its self-check only reports them skipped."""
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402


def test_without_peers_nothing_is_offered(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name.split(".")[0] in ("k_diffusion", "diffusers") else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert peers.k_diffusion_sampling() is None
    assert peers.diffusers_schedulers() is None
    assert peers.peer_samplers() == {}
    absent = peers.absent_peers()
    assert len(absent) == 2 and all("pip install -e '.[peers]'" in line for line in absent)
    lines = peers.self_check()
    assert [line for line in lines if "skipped" in line] == [f"  skipped: {line}" for line in absent]
    assert len(lines) == 3
