"""Score networks by name, the noise-conditioning conventions that turn them into score functions, and
loading of the original implementation's checkpoints.

`create_model(config)` is the one adapter from `config.model` / `config.data` to the networks' explicit
constructor arguments: each family has one small function below that reads the config.
"""
from score_sde.registry import lookup


def _sigmas_args(config):
    """The noise-level knobs every VE-aware network takes."""
    m = config.model
    return dict(sigma_min=m.sigma_min, sigma_max=m.sigma_max, num_scales=m.num_scales)


# ---- one adapter per family: config -> constructor call (each family's author fills its own) ----


MODELS = {}


def create_model(config):
    """Build the network named by config.model.name (in float32 on the CPU; move it with .to())."""
    return lookup(MODELS, config.model.name, "model")(config)
