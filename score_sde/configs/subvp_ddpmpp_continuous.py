"""DDPM++ on CIFAR-10 with the sub-VP SDE, continuous training (the original's
subvp/cifar10_ddpmpp_continuous): the VP recipe with the other SDE."""
import ml_collections

from score_sde.configs import vp_ddpmpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = vp_ddpmpp_continuous.get_config()
    config.training.sde = "subvpsde"
    return config
