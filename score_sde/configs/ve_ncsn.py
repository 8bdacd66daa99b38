"""NCSN v1 (Song & Ermon 2019) on CIFAR-10: 10 noise levels from 1 to 0.01, annealed Langevin dynamics with
100 steps per level, no EMA (the original's ve/ncsn/cifar10). NCSNv2's recipe with v1's network."""
import ml_collections

from score_sde.configs import ve_ncsnv2


def get_config() -> ml_collections.ConfigDict:
    config = ve_ncsnv2.get_config()
    config.sampling.n_steps_each = 100
    config.sampling.snr = 0.316

    model = config.model
    model.name = "ncsn"
    model.scale_by_sigma = False
    model.sigma_max = 1
    model.num_scales = 10
    model.ema_rate = 0.  # v1 keeps no moving average: the EMA weights are the weights

    config.optim.lr = 1e-3
    return config
