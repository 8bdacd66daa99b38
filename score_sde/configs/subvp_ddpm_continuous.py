"""The DDPM U-Net on CIFAR-10 with the sub-VP SDE, continuous training (the original's
subvp/cifar10_ddpm_continuous)."""
import ml_collections

from score_sde.configs import vp_ddpm_continuous


def get_config() -> ml_collections.ConfigDict:
    config = vp_ddpm_continuous.get_config()
    config.training.sde = "subvpsde"
    return config
