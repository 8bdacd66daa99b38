"""DDPM++ (deep: 8 residual blocks per resolution) on CIFAR-10 with the VP SDE, continuous training
(the original's vp/cifar10_ddpmpp_deep_continuous)."""
import ml_collections

from score_sde.configs import vp_ddpmpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = vp_ddpmpp_continuous.get_config()
    config.training.n_iters = 950001
    config.model.num_res_blocks = 8
    return config
