"""Score networks by name, the noise-conditioning conventions that turn them into score functions, and
loading of the original implementation's checkpoints.

`create_model(config)` is the one adapter from `config.model` / `config.data` to the networks' explicit
constructor arguments: each family has one small function below that reads the config.
"""
import ml_collections
from torch import nn

from score_sde.configs import num_channels
from score_sde.models.checkpoints import ReferenceCheckpoint as ReferenceCheckpoint
from score_sde.models.checkpoints import load_reference_checkpoint as load_reference_checkpoint
from score_sde.models.checkpoints import safe_torch_load as safe_torch_load
from score_sde.models.classifier import noise_classifier as noise_classifier
from score_sde.models.ddpm import DDPM
from score_sde.models.ema import ExponentialMovingAverage as ExponentialMovingAverage
from score_sde.models.mlp import MLP
from score_sde.models.ncsn import NCSN, NCSNv2, NCSNv2Deeper, NCSNv2Deepest
from score_sde.models.ncsnpp import NCSNpp
from score_sde.models.score_fn import get_model_fn as get_model_fn
from score_sde.models.score_fn import get_score_fn as get_score_fn
from score_sde.registry import lookup


def _sigmas_args(config):
    """The noise-level knobs every VE-aware network takes."""
    m = config.model
    return dict(sigma_min=m.sigma_min, sigma_max=m.sigma_max, num_scales=m.num_scales)


def _num_classes(config):
    """model.num_classes: 0 (the default) for an unconditional network, else the number of classes."""
    return config.model.get("num_classes", 0)


def _check_unconditional(config):
    """NCSN and NCSNv2 have no time embedding to which a class embedding could be added."""
    if _num_classes(config) > 0:
        raise ValueError(f"model.num_classes={_num_classes(config)} for {config.model.name!r}: NCSN/NCSNv2 "
                         "are unconditional networks; the class-conditional ones are ddpm, ncsnpp and mlp")


# One adapter per family: config -> constructor call.


def _ncsnpp(config):
    """NCSN++ / DDPM++ U-Net (models/ncsnpp.py) from config.model / config.data."""
    m, d = config.model, config.data
    return NCSNpp(image_size=d.image_size, num_channels=d.num_channels, centered=d.centered, nf=m.nf,
                  ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                  attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                  resamp_with_conv=m.resamp_with_conv, conditional=m.conditional, fir=m.fir,
                  fir_kernel=tuple(m.fir_kernel), skip_rescale=m.skip_rescale, resblock_type=m.resblock_type,
                  progressive=m.progressive, progressive_input=m.progressive_input,
                  progressive_combine=m.progressive_combine, embedding_type=m.embedding_type,
                  fourier_scale=m.get("fourier_scale", 16.0), init_scale=m.init_scale,
                  scale_by_sigma=m.scale_by_sigma, nonlinearity=m.nonlinearity,
                  conv_size=m.get("conv_size", 3), num_classes=_num_classes(config), **_sigmas_args(config))


def _mlp(config):
    """Residual MLP for points [B, config.data.dim] (models/mlp.py): width model.nf, optional
    model.num_layers (3), model.embedding_type ('positional'), model.fourier_scale (16),
    model.scale_by_sigma (False)."""
    m, d = config.model, config.data
    dim = d.get("dim") or num_channels(d) * d.image_size**2  # toys have a dim, images C·H·W
    return MLP(dim=dim, hidden_dim=m.nf, num_layers=m.get("num_layers", 3),
               embedding_type=m.get("embedding_type", "positional"),
               fourier_scale=m.get("fourier_scale", 16.0), scale_by_sigma=m.get("scale_by_sigma", False),
               input_skip=m.get("input_skip", False), num_classes=_num_classes(config))


def _ddpm(config):
    """DDPM U-Net (models/ddpm.py) from config.model / config.data."""
    m, d = config.model, config.data
    return DDPM(image_size=d.image_size, num_channels=d.num_channels, nf=m.nf, ch_mult=tuple(m.ch_mult),
                num_res_blocks=m.num_res_blocks, attn_resolutions=tuple(m.attn_resolutions),
                dropout=m.dropout, resamp_with_conv=m.resamp_with_conv, conditional=m.conditional,
                centered=d.centered, scale_by_sigma=m.scale_by_sigma, nonlinearity=m.nonlinearity,
                num_classes=_num_classes(config), **_sigmas_args(config))


def _check_instance_norm_plus(config):
    """NCSN and NCSNv2 are built with InstanceNorm++, the only normalization their configs use."""
    if config.model.normalization != "InstanceNorm++":
        raise ValueError(f"unsupported model.normalization {config.model.normalization!r} for "
                         f"{config.model.name!r}; expected 'InstanceNorm++'")


def _ncsn(config):
    """NCSN v1 (models/ncsn.py): the conditional norms have one row per noise level, model.num_scales."""
    _check_instance_norm_plus(config)
    _check_unconditional(config)
    m = config.model
    return NCSN(channels=num_channels(config.data), nf=m.nf, num_scales=m.num_scales,
                centered=config.data.centered, nonlinearity=m.nonlinearity)


def _ncsnv2(config):
    """NCSNv2 (models/ncsn.py) for the names ncsnv2_64, ncsnv2_128 and ncsnv2_256."""
    _check_instance_norm_plus(config)
    _check_unconditional(config)
    m = config.model
    network = {"ncsnv2_64": NCSNv2, "ncsnv2_128": NCSNv2Deeper, "ncsnv2_256": NCSNv2Deepest}[m.name]
    return network(channels=num_channels(config.data), nf=m.nf, centered=config.data.centered,
                   nonlinearity=m.nonlinearity, **_sigmas_args(config))


def _noise_classifier(config):
    """The noise-conditional classifier of classifier guidance (models/classifier.py): width model.nf,
    model.num_classes outputs, for config.data's points or images (api.classifier_config sets these)."""
    d = config.data
    shape = (d.dim,) if d.get("dim") else (num_channels(d), d.image_size, d.image_size)
    return noise_classifier(shape, _num_classes(config), nf=config.model.nf)


MODELS = {
    "ncsn": _ncsn,
    "ncsnv2_64": _ncsnv2,
    "ncsnv2_128": _ncsnv2,
    "ncsnv2_256": _ncsnv2,
    "ddpm": _ddpm,
    "ncsnpp": _ncsnpp,
    "mlp": _mlp,
    "noise_classifier": _noise_classifier,
}


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Build the network named by config.model.name (in float32 on the CPU; move it with .to())."""
    return lookup(MODELS, config.model.name, "model")(config)
