"""NCSNv2 (Song & Ermon 2020) on CIFAR-10: SMLD with 232 noise levels from 50 to 0.01, sampled by annealed
Langevin dynamics (the original's ve/ncsnv2/cifar10)."""
import ml_collections

from score_sde.configs.default import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()
    training = config.training
    training.sde = "vesde"
    training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 5
    sampling.snr = 0.176

    model = config.model
    model.name = "ncsnv2_64"
    model.scale_by_sigma = True
    model.sigma_max = 50
    model.num_scales = 232
    model.ema_rate = 0.999
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.weight_decay = 0
    optim.optimizer = "Adam"
    optim.lr = 1e-4
    optim.beta1 = 0.9
    optim.amsgrad = False
    optim.eps = 1e-8
    optim.warmup = 0
    optim.grad_clip = -1.  # negative: no gradient clipping
    return config
