"""NCSN++ on LSUN bedroom 256×256 with the VE SDE, continuous training (the original's
ve/bedroom_ncsnpp_continuous): the CelebA-HQ 256 recipe with LSUN's σ_max."""
import ml_collections

from score_sde.configs import ve_celebahq_256_ncsnpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = ve_celebahq_256_ncsnpp_continuous.get_config()
    config.data.dataset = "LSUN"
    config.data.category = "bedroom"
    config.model.sigma_max = 378
    return config
