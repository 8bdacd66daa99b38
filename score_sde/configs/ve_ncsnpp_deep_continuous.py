"""NCSN++ (deep: 8 residual blocks per resolution) on CIFAR-10 with the VE SDE, continuous training
(the original's ve/cifar10_ncsnpp_deep_continuous)."""
import ml_collections

from score_sde.configs import ve_ncsnpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = ve_ncsnpp_continuous.get_config()
    config.training.n_iters = 950001
    config.model.num_res_blocks = 8
    return config
