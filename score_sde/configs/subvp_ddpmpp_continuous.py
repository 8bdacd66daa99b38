"""DDPM++ on CIFAR-10 with the sub-VP SDE, continuous training (the original's
subvp/cifar10_ddpmpp_continuous): the VP recipe with the other SDE."""
from score_sde.configs import vp_ddpmpp_continuous


def get_config():
    config = vp_ddpmpp_continuous.get_config()
    config.training.sde = "subvpsde"
    return config
