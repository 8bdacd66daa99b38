"""A small NCSN++ on MNIST with the VE SDE, continuous training: the CIFAR-10 recipe (ve_ncsnpp_continuous)
shrunk to MNIST like vp_mnist_ddpmpp_continuous (28×28, one channel, three resolutions; see there).
Ours: the original has no MNIST configs."""
import ml_collections

from score_sde.configs import ve_ncsnpp_continuous, vp_mnist_ddpmpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = vp_mnist_ddpmpp_continuous.use_mnist(ve_ncsnpp_continuous.get_config())
    # Technique 1 of Song & Ermon 2020: σ_max about the largest distance between two training images; it is
    # 16.1 between MNIST test images in [0, 1] (CIFAR-10's σ_max = 50 follows the same rule).
    config.model.sigma_max = 20
    return config
