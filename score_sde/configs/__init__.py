"""Named experiment configs: one file per experiment in this folder, each with get_config().

They are installed with the package as `score_sde.configs`; the repository's `configs/` points here, so
`import configs` from the repository root reads the same files. A config is found by its name (the file
stem, e.g. 've_ncsnpp_continuous'), by the original score_sde's path for it ('ve/cifar10_ncsnpp_continuous',
optionally as 'configs/ve/cifar10_ncsnpp_continuous.py'; ORIGINAL_NAMES), or by the path of any .py file
that defines get_config(); `default.py` holds the defaults the experiments share and is not one of them.
"""
import importlib
import importlib.util
from pathlib import Path

import ml_collections

from score_sde.configs.default import get_default_configs

CONFIG_DIR = Path(__file__).resolve().parent
_NOT_EXPERIMENTS = {"default"}  # modules here that are not experiments (besides private "_*" ones)
# The original score_sde's config paths (under its configs/, without .py) -> ours.
ORIGINAL_NAMES = {
    "vp/ddpm/cifar10": "vp_ddpm",
    "vp/ddpm/cifar10_continuous": "vp_ddpm_continuous",
    "vp/cifar10_ddpmpp": "vp_ddpmpp",
    "vp/cifar10_ddpmpp_continuous": "vp_ddpmpp_continuous",
    "vp/cifar10_ddpmpp_deep_continuous": "vp_ddpmpp_deep_continuous",
    "subvp/cifar10_ddpm_continuous": "subvp_ddpm_continuous",
    "subvp/cifar10_ddpmpp_continuous": "subvp_ddpmpp_continuous",
    "subvp/cifar10_ddpmpp_deep_continuous": "subvp_ddpmpp_deep_continuous",
    "ve/ncsn/cifar10": "ve_ncsn",
    "ve/ncsnv2/cifar10": "ve_ncsnv2",
    "ve/cifar10_ncsnpp": "ve_ncsnpp",
    "ve/cifar10_ncsnpp_continuous": "ve_ncsnpp_continuous",
    "ve/cifar10_ncsnpp_deep_continuous": "ve_ncsnpp_deep_continuous",
    "ve/celebahq_256_ncsnpp_continuous": "ve_celebahq_256_ncsnpp_continuous",
    "ve/ffhq_256_ncsnpp_continuous": "ve_ffhq_256_ncsnpp_continuous",
    "ve/ffhq_ncsnpp_continuous": "ve_ffhq_ncsnpp_continuous",
    "ve/bedroom_ncsnpp_continuous": "ve_bedroom_ncsnpp_continuous",
    "ve/church_ncsnpp_continuous": "ve_church_ncsnpp_continuous",
}


def available_configs() -> list[str]:
    """The names of the experiment configs in CONFIG_DIR, sorted."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.py")
                  if not path.stem.startswith("_") and path.stem not in _NOT_EXPERIMENTS)


def original_name(text: str) -> str | None:
    """Ours for one of the original's config paths ('ve/cifar10_ncsnpp_continuous', or the same with
    'configs/' before it and '.py' after it); None for anything else."""
    key = text.removeprefix("./").removeprefix("configs/").removesuffix(".py")
    return ORIGINAL_NAMES.get(key)


def config_file(name_or_path: str | Path) -> Path:
    """The file of a config: a name from available_configs(), one of the original's config paths
    (ORIGINAL_NAMES), or a path to a .py file.

    Raises:
        ValueError: for an unknown name or a path that is not an existing .py file; the message lists the
            available names.
    """
    text = str(name_or_path)
    if text in available_configs():
        return CONFIG_DIR / f"{text}.py"
    path = Path(name_or_path).expanduser()
    if original_name(text) and not path.is_file():
        return CONFIG_DIR / f"{original_name(text)}.py"
    path = Path(name_or_path).expanduser()
    if path.suffix == ".py" and path.is_file():
        return path.resolve()
    raise ValueError(f"unknown config {text!r}: neither a config name nor a .py file; "
                     f"expected one of {available_configs()} or a path to a .py file")


def load_config(name_or_path: str | Path) -> ml_collections.ConfigDict:
    """A fresh ConfigDict from the get_config() of a named config or a config file.

    Files in CONFIG_DIR are imported as configs.<name>, so configs that derive from each other share one
    module each; any other file is imported on its own from its path.
    """
    path = config_file(name_or_path)
    if path.parent == CONFIG_DIR:
        module = importlib.import_module(f"{__name__}.{path.stem}")
    else:
        spec = importlib.util.spec_from_file_location(f"_score_sde_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config file {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"get_config() of {path} returned a {type(config).__name__}, not a ConfigDict")
    return config


# Our objective knobs and their defaults (default.py): a config written for the original lacks them.
OBJECTIVE_DEFAULTS = {"training.t_sampling": "uniform", "training.weighting": None,
                      "training.lognormal_mean": -1.2, "training.lognormal_std": 1.2,
                      "model.preconditioning": "none", "model.sigma_data": 0.5}


def objective_knobs(config: ml_collections.ConfigDict) -> dict:
    """{knob name: value} of OBJECTIVE_DEFAULTS's knobs, the defaults where the config lacks them."""
    return {key.split(".")[1]: config[key.split(".")[0]].get(key.split(".")[1], default)
            for key, default in OBJECTIVE_DEFAULTS.items()}


def with_defaults(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
    """config over default.py's knobs: a config written for the original (a checkpoint's config, say) gains
    the knobs it lacks at their defaults; its values win, and its 'device' entry, a run's, is dropped."""
    def merged(base: dict, over: dict) -> dict:
        return {**base, **{key: merged(base[key], value) if isinstance(value, dict) and
                           isinstance(base.get(key), dict) else value for key, value in over.items()}}

    over = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    over.pop("device", None)
    return ml_collections.ConfigDict(merged(get_default_configs().to_dict(), over))


def num_channels(data: ml_collections.ConfigDict) -> int:
    """The original's configs name the channel count data.num_channels; some only carry data.channels."""
    return data.num_channels if "num_channels" in data else data.channels


def check_override(config: ml_collections.ConfigDict, dotted_key: str) -> None:
    """ValueError unless dotted_key ('training.batch_size') names a knob of config; the message lists the
    knobs of the deepest section that exists."""
    section, path = config, []
    for part in dotted_key.split("."):
        if not isinstance(section, ml_collections.ConfigDict) or part not in section:
            where = f"config.{'.'.join(path)}" if path else "the config"
            choices = sorted(section.keys()) if isinstance(section, ml_collections.ConfigDict) else []
            raise ValueError(f"unknown knob config.{dotted_key}: {where} has no {part!r}; "
                             f"expected one of {choices}")
        section, path = section[part], [*path, part]
