"""DDPM++ on CIFAR-10 with the VP SDE trained on EDM's objective (docs/training.md): the network as the F
of EDM's preconditioned denoiser, log-normal training noise levels (P_mean −1.2, P_std 1.2) and EDM's loss
weight, sampled with our default few-step solver. Everything else (network, optimizer, EMA, data) is
vp_ddpmpp_continuous's, the original's settings; none of it has been tuned for this objective here yet."""
import ml_collections

from score_sde.configs.vp_ddpmpp_continuous import get_config as get_ddpmpp_config


def get_config() -> ml_collections.ConfigDict:
    config = get_ddpmpp_config()
    training = config.training
    training.t_sampling = "lognormal"
    training.weighting = "edm"
    config.model.preconditioning = "edm"
    config.model.sigma_data = 0.5  # centred data in [−1, 1], as EDM's CIFAR-10
    sampling = config.sampling
    sampling.method = "fast"
    sampling.steps = 20
    sampling.noise_removal = True
    return config
