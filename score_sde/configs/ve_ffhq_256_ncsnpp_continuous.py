"""NCSN++ on FFHQ 256×256 with the VE SDE, continuous training (the original's
ve/ffhq_256_ncsnpp_continuous): the CelebA-HQ 256 recipe on FFHQ."""
import ml_collections

from score_sde.configs import ve_celebahq_256_ncsnpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = ve_celebahq_256_ncsnpp_continuous.get_config()
    config.data.dataset = "FFHQ"
    return config
