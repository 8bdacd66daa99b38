"""Access to the reference-network fixtures in ../shared/fixtures/reference_models (see its README).

Every read goes through `fixture`, which skips the test on a bare clone (no ../shared) and fails it under
CI=true (see shared.py); `requires_fixtures` makes that check before a test does any work."""
import functools
import json

import ml_collections
import torch
from shared import REFERENCE_MODELS, require_reference_models, require_shared

FIXTURES = REFERENCE_MODELS  # the folder's path, unchecked: read its files through `fixture`


def fixture(filename):
    """The path of one fixture file, checked at test time (skip on a bare clone, fail under CI=true)."""
    return require_shared(FIXTURES / filename)


def requires_fixtures(test):
    """Decorator: check the fixtures folder when the test runs, in its body, so that under CI=true a missing
    folder is a test failure (a skipif mark could only skip, and a fixture would error at setup)."""

    @functools.wraps(test)  # keeps the signature (pytest's fixture arguments) and the parametrize marks
    def checked(*args, **kwargs):
        require_reference_models()
        return test(*args, **kwargs)

    return checked


def config(name):
    """The fixture's full config as a ConfigDict (its 'device' entry dropped: configs hold no devices)."""
    raw = json.loads(fixture(f"{name}_config.json").read_text())
    raw.pop("device", None)
    return ml_collections.ConfigDict(raw)


def checkpoint(name):
    # Trusted local test files; the loader under test has its own restricted unpickling.
    return torch.load(fixture(f"{name}.pth"), map_location="cpu", weights_only=False)


def io(name):
    return torch.load(fixture(f"{name}_io.pt"), map_location="cpu", weights_only=True)


def model_and_ema_state_dicts(name):
    """The fixture's bare 'model' state dict and its EMA counterpart (shadow params put in, in order)."""
    ckpt, data = checkpoint(name), io(name)
    model_sd = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    ema_sd = dict(model_sd)
    for key, value in zip(data["ema_param_keys"], ckpt["ema"]["shadow_params"], strict=True):
        ema_sd[key] = value
    return model_sd, ema_sd


def per_sample_error(a, b):
    """max over the batch of max|a_i − b_i| / max|b_i|: the README's error measure."""
    a, b = a.double(), b.double()
    return ((a - b).abs().flatten(1).amax(1) / b.abs().flatten(1).amax(1)).max().item()


def assert_matches_reference(model, name):
    """Load model and EMA weights into `model` and match the reference outputs in float32 and float64."""
    data = io(name)
    for weights, key in zip(model_and_ema_state_dicts(name), ("out_model", "out_ema")):
        model.load_state_dict(weights, strict=True)
        model.float().eval()
        with torch.no_grad():
            out = model(data["x"], data["labels"])
        assert per_sample_error(out, data[key]) <= 2e-4, (name, key, per_sample_error(out, data[key]))
        other = "out_ema" if key == "out_model" else "out_model"
        assert per_sample_error(out, data[other]) >= 0.05, "model and EMA weights must differ"
        model.double().load_state_dict(weights, strict=True)  # reload: .float() rounded the float64 buffers
        labels = data["labels"].double() if data["labels"].is_floating_point() else data["labels"]
        with torch.no_grad():
            out = model(data["x"].double(), labels)
        error = per_sample_error(out, data[key + "_f64"])
        assert error <= 1e-6, (name, key, error)
