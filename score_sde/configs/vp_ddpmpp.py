"""DDPM++ on CIFAR-10 with DDPM's discrete timesteps (the original's vp/cifar10_ddpmpp): trained with the
DDPM loss on integer timesteps, sampled by ancestral sampling."""
import ml_collections

from score_sde.configs import vp_ddpmpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = vp_ddpmpp_continuous.get_config()
    config.training.continuous = False
    config.sampling.predictor = "ancestral_sampling"
    return config
