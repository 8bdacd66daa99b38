"""NCSN++ on CIFAR-10 with SMLD's discrete noise levels (the original's ve/cifar10_ncsnpp): the continuous
recipe trained on the integer noise-level index, which the sinusoidal (positional) embedding takes."""
import ml_collections

from score_sde.configs import ve_ncsnpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = ve_ncsnpp_continuous.get_config()
    config.training.continuous = False
    config.model.embedding_type = "positional"
    return config
