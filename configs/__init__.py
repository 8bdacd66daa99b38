"""The experiment configs, as `import configs` from the repository root: this package points at
score_sde/configs, where the files live and from where they are installed with the package (one source of
truth). `configs.<name>` and `score_sde.configs.<name>` are the same file."""
from score_sde import configs as _installed
from score_sde.configs import (  # noqa: F401  (the loader's API, under the old name)
    CONFIG_DIR,
    ORIGINAL_NAMES,
    available_configs,
    check_override,
    config_file,
    load_config,
    original_name,
)

__path__ = _installed.__path__
