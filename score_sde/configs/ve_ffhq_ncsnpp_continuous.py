"""NCSN++ on FFHQ 1024×1024 with the VE SDE, continuous training (the original's ve/ffhq_ncsnpp_continuous):
a narrow (nf 16) network with eight resolutions, batch size 8."""
import ml_collections

from score_sde.configs import ve_celebahq_256_ncsnpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = ve_celebahq_256_ncsnpp_continuous.get_config()
    training = config.training
    training.batch_size = 8
    training.reduce_mean = True

    config.sampling.snr = 0.15

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.batch_size = 1024

    data = config.data
    data.dataset = "FFHQ"
    data.image_size = 1024

    model = config.model
    model.sigma_max = 1348
    model.ema_rate = 0.9999
    model.nf = 16
    model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
    model.num_res_blocks = 1

    config.optim.amsgrad = False
    return config
