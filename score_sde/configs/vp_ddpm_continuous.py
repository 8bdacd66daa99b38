"""The DDPM U-Net on CIFAR-10 with the VP SDE, continuous training (the original's
vp/ddpm/cifar10_continuous): the network is conditioned on 999·t and sampled by Euler–Maruyama."""
import ml_collections

from score_sde.configs import vp_ddpm


def get_config() -> ml_collections.ConfigDict:
    config = vp_ddpm.get_config()
    config.training.continuous = True
    config.sampling.predictor = "euler_maruyama"
    return config
