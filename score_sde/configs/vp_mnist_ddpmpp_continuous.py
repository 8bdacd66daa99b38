"""A small DDPM++ on MNIST with the VP SDE, continuous training: the CIFAR-10 recipe
(vp_ddpmpp_continuous) shrunk to MNIST. Ours: the original has no MNIST configs.

Image size: 28, MNIST's own, so the data need no resizing and samples are what the MNIST classifier of
score_sde.metrics reads. The U-Net halves the resolution len(ch_mult) − 1 times and needs an even size at
every level, so it takes 28 with three resolutions (28, 14, 7): ch_mult has three entries, not CIFAR's four.
"""
import ml_collections

from score_sde.configs import vp_ddpmpp_continuous


def use_mnist(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turn a CIFAR-10 config into its MNIST version: the data, a network of about 7 M parameters (CIFAR's
    have 62 M) and a run of 100k steps, a thirteenth of CIFAR-10's (still over 200 epochs of MNIST)."""
    training = config.training
    training.n_iters = 100001
    training.snapshot_freq = 10000
    training.snapshot_freq_for_preemption = 5000

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 10
    evaluate.batch_size = 1000
    evaluate.num_samples = 10000
    evaluate.features = "mnist"  # MNIST-FID: our classifier's features (score_sde/mnist_classifier.py)

    data = config.data
    data.dataset = "MNIST"
    data.image_size = 28
    data.num_channels = 1
    data.random_flip = False  # a flipped digit is not a digit

    model = config.model
    model.ema_rate = 0.999  # averages over ~1k steps: the run is ten times shorter than CIFAR-10's
    model.nf = 64
    model.ch_mult = (1, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (14,)
    return config


def get_config() -> ml_collections.ConfigDict:
    return use_mnist(vp_ddpmpp_continuous.get_config())
