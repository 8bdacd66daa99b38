"""DDPM++ (deep) on CIFAR-10 with the sub-VP SDE, continuous training (the original's
subvp/cifar10_ddpmpp_deep_continuous): the deep VP recipe with the other SDE."""
import ml_collections

from score_sde.configs import vp_ddpmpp_deep_continuous


def get_config() -> ml_collections.ConfigDict:
    config = vp_ddpmpp_deep_continuous.get_config()
    config.training.sde = "subvpsde"
    return config
