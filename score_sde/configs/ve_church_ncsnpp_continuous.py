"""NCSN++ on LSUN church_outdoor 256×256 with the VE SDE, continuous training (the original's
ve/church_ncsnpp_continuous)."""
import ml_collections

from score_sde.configs import ve_bedroom_ncsnpp_continuous


def get_config() -> ml_collections.ConfigDict:
    config = ve_bedroom_ncsnpp_continuous.get_config()
    config.data.category = "church_outdoor"
    config.model.sigma_max = 380
    return config
