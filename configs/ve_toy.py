"""The 2-D toy run (vp_toy) with the VE SDE. Ours."""
from configs import vp_toy


def get_config():
    config = vp_toy.get_config()
    config.training.sde = "vesde"
    # σ_max about the largest distance between two data points (Technique 1 of Song & Ermon 2020): the toy
    # data lie within about ±5 per coordinate.
    config.model.sigma_min = 0.01
    config.model.sigma_max = 15
    config.model.embedding_type = "fourier"  # of log σ(t), as NCSN++ does
    return config
