"""The 2-D toy run (vp_toy) with the sub-VP SDE. Ours."""
import ml_collections

from score_sde.configs import vp_toy


def get_config() -> ml_collections.ConfigDict:
    config = vp_toy.get_config()
    config.training.sde = "subvpsde"
    return config
