"""vp_mnist_mlp trained for likelihood: the likelihood weighting g(t)² with t drawn from the importance
density ∝ g²/s² (Song et al. 2021, "Maximum likelihood training of score-based diffusion models"), which
removes the 1/t spike that the weighting has under uniform t. Ours. benchmarks/mnist_quality.py compares
it with `--compare-set training.t_sampling=uniform` (docs/training.md, §6)."""
import ml_collections

from score_sde.configs.vp_mnist_mlp import get_config as get_mlp_config


def get_config() -> ml_collections.ConfigDict:
    config = get_mlp_config()
    config.training.weighting = "likelihood"
    config.training.t_sampling = "importance"
    return config
