"""Loading the original's checkpoints: restricted unpickling, explicit translation, errors that name the
problem, and (at integration) the published-format fixtures reproducing the reference outputs."""
import io
import os
import pickle

import numpy as np
import pytest
import reference
import torch
from torch import nn

from score_sde.models import create_model, load_reference_checkpoint, safe_torch_load
from score_sde.models.checkpoints import PREFIX
from score_sde.train import read_checkpoint

FIXTURE_NAMES = ["ncsnpp_ve", "ncsnpp_ve_outskip", "ncsnpp_ve_discrete", "ddpmpp_vp", "ncsnpp_extra_paths",
                 "ddpm_vp", "ncsnv2_ve", "ncsnv2_128_ve", "ncsn_ve"]


# ---- safe loading ----

@pytest.mark.parametrize("suffix", [".pth", "_io.pt"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_safe_loader_reads_every_fixture(name, suffix):
    loaded = safe_torch_load(reference.fixture(f"{name}{suffix}"))
    assert ("model" in loaded) if suffix == ".pth" else ("out_model" in loaded)


def test_numpy_float64_learning_rate_survives():
    ckpt = safe_torch_load(str(reference.fixture("ncsnpp_extra_paths.pth")))
    lr = ckpt["optimizer"]["param_groups"][0]["lr"]
    assert type(lr) is np.float64 and ckpt["step"] == 1


def test_numpy_scalars_pickled_under_the_other_numpy_major_version_load(tmp_path):
    buffer = io.BytesIO()
    torch.save({"lr": np.float64(0.25), "w": torch.ones(2)}, buffer, _use_new_zipfile_serialization=False)
    raw = buffer.getvalue()
    names = [b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"]  # numpy 2.x, 1.x
    here, other = names if names[0] in raw else names[::-1]
    assert here in raw
    (tmp_path / "old.pth").write_bytes(raw.replace(here, other))
    loaded = safe_torch_load(tmp_path / "old.pth")
    assert loaded["lr"] == 0.25 and type(loaded["lr"]) is np.float64


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Payload:
    """A harmless class of this module: still not a type a checkpoint may hold."""


def test_a_pickled_function_call_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": {}, "x": Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError, match="system"):
        safe_torch_load(tmp_path / "evil.pth")
    assert not marker.exists()


def test_an_arbitrary_class_is_refused(tmp_path):
    torch.save({"payload": Payload()}, tmp_path / "class.pth")
    with pytest.raises(pickle.UnpicklingError, match="Payload"):
        safe_torch_load(tmp_path / "class.pth")


# ---- translation and its errors, on a tiny network ----

class Tiny(nn.Module):
    """A frozen parameter first (like NCSN++'s Fourier W), a float64 buffer between the layers."""

    def __init__(self, reorder=False):
        super().__init__()
        self.W = nn.Parameter(torch.randn(4), requires_grad=False)
        layers = [("first", nn.Linear(2, 4)), ("second", nn.Linear(4, 2))]
        for i, (name, layer) in enumerate(layers[::-1] if reorder else layers):
            setattr(self, name, layer)
            if i == 0:
                self.register_buffer("sigmas", torch.linspace(1, 0.1, 3, dtype=torch.float64))

    def forward(self, x):
        return self.second(self.first(x) + self.W)


def reference_checkpoint(seed=0):
    """What the original's save_checkpoint writes for a Tiny: after one Adam step, shadows = params + 1."""
    torch.manual_seed(seed)
    model = Tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(3, 2)).square().sum().backward()
    optimizer.step()
    return {
        "optimizer": optimizer.state_dict(),
        "model": {PREFIX + k: v.clone() for k, v in model.state_dict().items()},
        "ema": {"decay": 0.999, "num_updates": 1,
                "shadow_params": [p.detach() + 1 for p in model.parameters() if p.requires_grad]},
        "step": 1,
    }


@pytest.mark.parametrize("reorder", [False, True], ids=["same-order", "reordered-modules"])
def test_tiny_checkpoint_loads_weights_ema_and_optimizer_by_name(reorder, tmp_path):
    ckpt = reference_checkpoint()
    torch.save(ckpt, tmp_path / "tiny.pth")
    loaded = load_reference_checkpoint(read_checkpoint(tmp_path / "tiny.pth"), Tiny(reorder=reorder))
    weights = {k.removeprefix(PREFIX): v for k, v in ckpt["model"].items()}
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, weights[key])
    # shadows pair with the checkpoint's parameter order, whatever order our modules register in
    assert set(loaded.ema.shadow) == {"first.weight", "first.bias", "second.weight", "second.bias"}
    for key in loaded.ema.shadow:
        torch.testing.assert_close(loaded.ema.shadow[key], weights[key] + 1)
    assert (loaded.ema.decay, loaded.ema.num_updates, loaded.step) == (0.999, 1, 1)
    # the Adam moments follow their parameters into model.parameters() order
    optimizer = torch.optim.Adam(loaded.model.parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded.optimizer_state)
    saved = ckpt["optimizer"]["state"]
    names = [name for name, _ in Tiny().named_parameters()]  # the original's order; W (index 0) has no state
    moments = {name: saved[i]["exp_avg"] for i, name in enumerate(names) if i in saved}
    assert len(moments) == 4
    params = dict(loaded.model.named_parameters())
    for name, exp_avg in moments.items():
        torch.testing.assert_close(optimizer.state[params[name]]["exp_avg"], exp_avg)


def test_ema_copy_to_gives_the_shadow_weights():
    loaded = load_reference_checkpoint(reference_checkpoint(), Tiny())
    before_w = loaded.model.W.clone()
    with loaded.ema.average_parameters(loaded.model):
        torch.testing.assert_close(loaded.model.first.bias, loaded.ema.shadow["first.bias"])
        torch.testing.assert_close(loaded.model.W, before_w)  # frozen W always comes from 'model'


def broken(edit):
    ckpt = reference_checkpoint()
    edit(ckpt)
    return ckpt


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"].pop("module.first.bias"), r"missing keys \(1\): \['first.bias'\]"),
    (lambda c: c["model"].update({"module.extra": torch.ones(1)}), r"unexpected keys \(1\): \['extra'\]"),
    (lambda c: c["model"].update({"module.second.weight": torch.ones(3, 3)}),
     r"second.weight: checkpoint \(3, 3\) vs model \(2, 4\)"),
    (lambda c: c["model"].update({"first.weight": c["model"].pop("module.first.weight")}),
     r"'module\.'.*\['first.weight'\]"),
    (lambda c: c["ema"]["shadow_params"].pop(), "3 shadow parameters, but the model has 4 trainable"),
    (lambda c: c["ema"]["shadow_params"].__setitem__(0, torch.ones(5)), r"first.weight: \(5,\) vs \(4, 2\)"),
    (lambda c: c.pop("ema"), r"no \['ema'\] entry"),
], ids=["missing", "unexpected", "shape", "prefix", "ema-count", "ema-shape", "no-ema"])
def test_loader_errors_name_the_problem_and_leave_the_model_as_it_was(edit, message):
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_reference_checkpoint(broken(edit), model)
    for key, value in model.state_dict().items():  # checked before anything was copied
        assert torch.equal(value, before[key]), key


# ---- the published-format fixtures, end to end (needs every network family) ----

@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_checkpoint_loads_and_reproduces_reference_outputs(name):
    loaded = load_reference_checkpoint(read_checkpoint(reference.fixture(f"{name}.pth")),
                                       create_model(reference.config(name)))
    ckpt, data = reference.checkpoint(name), reference.io(name)
    assert loaded.step == ckpt["step"] and loaded.ema.num_updates == ckpt["ema"]["num_updates"]
    assert set(loaded.ema.shadow) == set(data["ema_param_keys"])
    for key, value in zip(data["ema_param_keys"], ckpt["ema"]["shadow_params"], strict=True):
        torch.testing.assert_close(loaded.ema.shadow[key], value, rtol=0, atol=0)
    model = loaded.model.float().eval()
    with torch.no_grad():
        out_model = model(data["x"], data["labels"])
        with loaded.ema.average_parameters(model):
            out_ema = model(data["x"], data["labels"])
        out_again = model(data["x"], data["labels"])
    assert reference.per_sample_error(out_model, data["out_model"]) <= 2e-4
    assert reference.per_sample_error(out_ema, data["out_ema"]) <= 2e-4
    torch.testing.assert_close(out_again, out_model, rtol=0, atol=0)  # restore() put the weights back
    torch.optim.Adam(model.parameters()).load_state_dict(loaded.optimizer_state)
