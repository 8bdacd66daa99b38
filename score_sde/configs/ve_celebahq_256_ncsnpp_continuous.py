"""NCSN++ on CelebA-HQ 256×256 with the VE SDE, continuous training (the original's
ve/celebahq_256_ncsnpp_continuous). The original builds it on its LSUN defaults
(configs/default_lsun_configs.py); their differences from the CIFAR-10 defaults are set here, and the other
high-resolution NCSN++ configs derive from this one."""
import ml_collections

from score_sde.configs import ve_ncsnpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = ve_ncsnpp_continuous.get_config()
    training = config.training
    training.batch_size = 64
    training.n_iters = 2400001
    training.snapshot_freq_for_preemption = 5000

    config.sampling.snr = 0.075

    evaluate = config.eval
    evaluate.begin_ckpt = 50
    evaluate.end_ckpt = 96
    evaluate.batch_size = 512
    evaluate.enable_sampling = True

    data = config.data
    data.dataset = "CelebAHQ"
    data.image_size = 256

    model = config.model
    model.sigma_max = 348
    model.num_scales = 2000
    model.dropout = 0.
    model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    model.num_res_blocks = 2
    model.progressive = "output_skip"
    model.progressive_input = "input_skip"
    return config
