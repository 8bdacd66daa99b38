"""score_sde: score-based generative modeling through stochastic differential equations, in PyTorch.

The names a notebook needs, from one import (docs/api.md):

    from score_sde import VPSDE, GaussianMixture, fast_sample
    sde = VPSDE()
    data = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5])
    x, nfe = fast_sample(sde, data.score_fn(sde), (8, 2))

    model = load("runs/x")  # a workdir of --mode train, or a checkpoint file (ours or the original's)
    images = model.sample(8, method="fast", steps=20)
"""
from score_sde.analytic import GaussianMixture
from score_sde.api import ScoreModel, load
from score_sde.controllable import conditional_sample
from score_sde.guidance import classifier_free_guidance, classifier_guidance
from score_sde.likelihood import bits_per_dim, log_likelihood
from score_sde.models import create_model, get_score_fn
from score_sde.observations import Colorization, Inpainting, LinearObservation, SuperResolution
from score_sde.sampling import fast_sample, ode_sample, pc_sample
from score_sde.sde import SDE, VESDE, VPSDE, subVPSDE

__all__ = ["SDE", "VESDE", "VPSDE", "subVPSDE", "GaussianMixture", "pc_sample", "ode_sample", "fast_sample",
           "log_likelihood", "bits_per_dim", "create_model", "get_score_fn", "load", "ScoreModel",
           "conditional_sample", "Inpainting", "Colorization", "SuperResolution", "LinearObservation",
           "classifier_free_guidance", "classifier_guidance"]
