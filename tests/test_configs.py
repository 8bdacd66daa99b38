"""The named configs: they load, build their networks, and equal the original's configs knob for knob."""
import functools
import json
from pathlib import Path

import pytest
import torch
from reference import fixture, requires_fixtures

import configs
from preflight import flatten
from score_sde.models import create_model
from score_sde.sampling import CORRECTORS, PREDICTORS

NAMES = [
    "vp_ddpm", "vp_ddpm_continuous", "vp_ddpmpp", "vp_ddpmpp_continuous", "vp_ddpmpp_deep_continuous",
    "subvp_ddpm_continuous", "subvp_ddpmpp_continuous", "subvp_ddpmpp_deep_continuous",
    "ve_ncsn", "ve_ncsnv2", "ve_ncsnpp", "ve_ncsnpp_continuous", "ve_ncsnpp_deep_continuous",
    "ve_celebahq_256_ncsnpp_continuous", "ve_ffhq_256_ncsnpp_continuous", "ve_ffhq_ncsnpp_continuous",
    "ve_bedroom_ncsnpp_continuous", "ve_church_ncsnpp_continuous",
    "vp_mnist_ddpmpp_continuous", "ve_mnist_ncsnpp_continuous", "vp_mnist_mlp",
    "vp_toy", "subvp_toy", "ve_toy", "vp_cifar10_edm", "vp_mnist_unet", "vp_mnist_mlp_likelihood",
]

# Our config -> the original's, as the manifest of full-size reference models holds it.
IN_MANIFEST = {
    "vp_ddpm": "vp/ddpm/cifar10",
    "vp_ddpmpp_continuous": "vp/cifar10_ddpmpp_continuous",
    "vp_ddpmpp_deep_continuous": "vp/cifar10_ddpmpp_deep_continuous",
    "subvp_ddpmpp_continuous": "subvp/cifar10_ddpmpp_continuous",
    "ve_ncsnpp_continuous": "ve/cifar10_ncsnpp_continuous",
    "ve_ncsnpp_deep_continuous": "ve/cifar10_ncsnpp_deep_continuous",
    "ve_ncsnv2": "ve/ncsnv2/cifar10",
    "ve_ncsn": "ve/ncsn/cifar10",
    "ve_celebahq_256_ncsnpp_continuous": "ve/celebahq_256_ncsnpp_continuous",
    "ve_ffhq_ncsnpp_continuous": "ve/ffhq_ncsnpp_continuous",
}
ABSENT = object()  # marks a knob that the original's file does not have
# The original's configs that the manifest lacks: the manifest config each is a variant of, and the knobs
# where the original's file differs from it (its data.tfrecords_path aside, which is dropped).
VARIANTS = {
    "vp_ddpm_continuous": ("vp/ddpm/cifar10", {"training.continuous": True,
                                               "sampling.predictor": "euler_maruyama"}),
    "subvp_ddpm_continuous": ("vp/ddpm/cifar10", {"training.sde": "subvpsde", "training.continuous": True,
                                                  "sampling.predictor": "euler_maruyama"}),
    "vp_ddpmpp": ("vp/cifar10_ddpmpp_continuous", {"training.continuous": False,
                                                   "sampling.predictor": "ancestral_sampling"}),
    "subvp_ddpmpp_deep_continuous": ("vp/cifar10_ddpmpp_deep_continuous", {"training.sde": "subvpsde"}),
    "ve_ncsnpp": ("ve/cifar10_ncsnpp_continuous", {"training.continuous": False,
                                                   "model.embedding_type": "positional",
                                                   "model.fourier_scale": ABSENT}),
    "ve_ffhq_256_ncsnpp_continuous": ("ve/celebahq_256_ncsnpp_continuous", {"data.dataset": "FFHQ"}),
    "ve_bedroom_ncsnpp_continuous": ("ve/celebahq_256_ncsnpp_continuous", {
        "data.dataset": "LSUN", "data.category": "bedroom", "model.sigma_max": 378}),
    "ve_church_ncsnpp_continuous": ("ve/celebahq_256_ncsnpp_continuous", {
        "data.dataset": "LSUN", "data.category": "church_outdoor", "model.sigma_max": 380}),
}
# Knobs of the original's configs that ours drop on purpose.
DROPPED = {
    "device": "a config holds no device; run_lib picks one",
    "data.tfrecords_path": "a file on the original authors' machines; score_sde.data reads data.root",
    "data.channels": "not in the original's files: the manifest's generator added it so that the original's "
                     "NCSN code builds; ours reads data.num_channels like every other network",
}
# Knobs ours have that the original's config lacks.
OURS = {"data.root", "data.download", "data.num_workers", "eval.bpd_num_items", "eval.bpd_num_repeats",
        "sampling.solver", "sampling.steps", "sampling.schedule", "sampling.eta", "sampling.churn",
        "sampling.order", "sampling.prediction", "sampling.lower_order_final", "sampling.damping",
        "eval.features",
        "eval.inception_weights", "eval.mnist_classifier", "eval.download", "eval.stats", "eval.stats_split",
        "eval.stats_features", "training.precision", "training.compile", "sampling.compile",
        "model.channels_last", "eval.bpd_precision", "eval.bpd_compile", "eval.wait_s", "training.t_sampling",
        "training.weighting", "training.lognormal_mean", "training.lognormal_std", "model.preconditioning",
        "model.sigma_data", "eval.enable_bound", "eval.bound_num_times",
        # --mode inpaint / colorize / superres (docs/controllable.md)
        "sampling.inputs", "sampling.num_inputs", "sampling.mask", "sampling.superres_factor",
        "sampling.sigma_y", "sampling.conditional_method", "sampling.particles", "sampling.smc_steps",
        # class-conditional generation (docs/guidance.md)
        "model.num_classes", "training.class_dropout", "sampling.class_label", "sampling.guidance",
        "sampling.classifier", "sampling.classifier_scale", "classifier.nf", "classifier.n_iters",
        "classifier.batch_size", "classifier.lr", "classifier.ema_rate"}
EXTRA = {
    # The original's FFHQ-1024 file is standalone and omits these; ours inherits them from the CelebA-HQ
    # config (the beta knobs serve VP SDEs only, the eval ones are the original's LSUN defaults).
    "ve_ffhq_ncsnpp_continuous": {"eval.enable_sampling", "eval.enable_loss", "eval.enable_bpd",
                                  "eval.bpd_dataset", "model.beta_min", "model.beta_max"},
    "ve_ncsnpp": {"model.fourier_scale"},  # inherited from the continuous config; unused by this embedding
}


@functools.cache
def manifest():
    return json.loads(fixture("full_manifest.json").read_text())["models"]


# Knobs that are ints in the original and floats in ours, so that a command-line override may be
# fractional (ml_collections keeps a knob's type: --config.model.sigma_max=20.5 fails on an int knob).
WIDENED = {"model.sigma_max", "optim.weight_decay"}


def typed(flat):
    """Values with their type, so that 50 and 50.0 differ (ml_collections keeps a knob's type), except that
    the WIDENED knobs are compared as floats."""
    return {key: ("float", float(value)) if key in WIDENED else (type(value).__name__, value)
            for key, value in flat.items()}


def as_json(config):
    """The config as plain JSON values: tuples become lists, as in the manifest."""
    return flatten(json.loads(json.dumps(config.to_dict())))


def original(name):
    """The original's config for one of ours, flat, without the knobs we drop on purpose."""
    if name in IN_MANIFEST:
        base, changes = IN_MANIFEST[name], {}
    else:
        base, changes = VARIANTS[name]
    flat = flatten(manifest()[base]["config"])
    for key, value in changes.items():
        if value is ABSENT:
            del flat[key]
        else:
            flat[key] = value
    return {key: value for key, value in flat.items() if key not in DROPPED}


@functools.cache
def meta_model(name):
    """The full-size network of a config, built without memory."""
    with torch.device("meta"):
        return create_model(configs.load_config(name))


def test_available_configs_are_the_named_experiments():
    assert configs.available_configs() == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_with_plain_values_and_known_names(name):
    config = configs.load_config(name)
    flat = flatten(config.to_dict())
    for key, value in flat.items():
        values = value if isinstance(value, (tuple, list)) else [value]
        # no device, tensor or function; None: a knob left unset (a typed placeholder)
        assert all(type(v) in (str, int, float, bool, type(None)) for v in values), (key, value)
    assert as_json(config) == {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}
    assert config.training.sde in ("vpsde", "subvpsde", "vesde")
    assert config.sampling.method in ("pc", "fast")  # fast: vp_cifar10_edm, our own experiment
    assert config.sampling.predictor in PREDICTORS and config.sampling.corrector in CORRECTORS
    assert "device" not in config
    assert all(isinstance(flat[key], float) for key in WIDENED)


@pytest.mark.parametrize("name", NAMES)
def test_full_size_model_builds(name):
    assert sum(p.numel() for p in meta_model(name).parameters()) > 0


@requires_fixtures
@pytest.mark.parametrize("name", sorted(IN_MANIFEST.keys() | VARIANTS.keys()))
def test_config_equals_the_original_on_its_knobs(name):
    expected = original(name)
    ours = as_json(configs.load_config(name))
    assert typed({key: ours.get(key, "<missing>") for key in expected}) == typed(expected)
    assert ours.keys() - expected.keys() <= OURS | EXTRA.get(name, set())


@requires_fixtures
@pytest.mark.parametrize("name", sorted(IN_MANIFEST))
def test_parameter_count_equals_the_original(name):
    count = sum(p.numel() for p in meta_model(name).parameters())
    assert count == manifest()[IN_MANIFEST[name]]["num_parameters"]


@pytest.mark.parametrize("name", ["vp_mnist_ddpmpp_continuous", "ve_mnist_ncsnpp_continuous", "vp_mnist_mlp",
                                  "vp_mnist_unet", "vp_toy", "subvp_toy", "ve_toy"])
def test_small_configs_run_on_their_data_shape(name):
    """MNIST at its own 28×28, toy points [B, dim]: the network takes and returns the data's shape."""
    torch.manual_seed(0)
    config = configs.load_config(name)
    data = config.data
    shape = (2, data.dim) if "dim" in data else (2, data.num_channels, data.image_size, data.image_size)
    labels = torch.tensor([0.5, 3.0]) if config.training.sde == "vesde" else torch.tensor([10.0, 900.0])
    with torch.no_grad():
        out = create_model(config).eval()(torch.rand(shape), labels)
    assert out.shape == shape and torch.isfinite(out).all()


def test_the_originals_config_paths_are_aliases_of_ours():
    for original, ours in configs.ORIGINAL_NAMES.items():
        assert ours in configs.available_configs()
        for spelling in (original, f"configs/{original}.py", f"./configs/{original}.py"):
            assert configs.config_file(spelling) == configs.config_file(ours)
    for ours, original in IN_MANIFEST.items():  # the manifest names the same files
        assert configs.ORIGINAL_NAMES[original] == ours
    assert set(VARIANTS) <= set(configs.ORIGINAL_NAMES.values())


def test_configs_are_the_installed_packages():
    # one source of truth: `configs` (the repository's) reads score_sde/configs' files
    import score_sde.configs
    assert configs.CONFIG_DIR == Path(score_sde.configs.__file__).parent
    assert configs.load_config("vp_toy") == score_sde.configs.load_config("vp_toy")


def test_unknown_name_raises_listing_the_choices():
    with pytest.raises(ValueError) as info:
        configs.load_config("ve_ncsnpp_continous")
    assert all(name in str(info.value) for name in NAMES)
    for not_an_experiment in ("default", "__init__", "ve/cifar10_ncsnpp_continous", "missing.py"):
        with pytest.raises(ValueError, match="expected one of"):
            configs.config_file(not_an_experiment)


def test_load_by_path(tmp_path):
    by_path = configs.load_config(configs.CONFIG_DIR / "ve_toy.py")
    assert by_path.to_dict() == configs.load_config("ve_toy").to_dict()
    own = tmp_path / "my_toy.py"
    own.write_text("from configs import ve_toy\n\n\ndef get_config():\n"
                   "    config = ve_toy.get_config()\n    config.model.nf = 64\n    return config\n")
    assert configs.config_file(str(own)) == own.resolve()
    assert configs.load_config(str(own)).model.nf == 64
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        configs.load_config(tmp_path / "empty.py")


def test_each_load_is_a_fresh_config():
    first = configs.load_config("vp_ddpmpp_deep_continuous")
    first.model.num_res_blocks = 1
    assert configs.load_config("vp_ddpmpp_deep_continuous").model.num_res_blocks == 8
    assert configs.load_config("vp_ddpmpp_continuous").model.num_res_blocks == 4


def test_unknown_override_names_the_section_knobs():
    config = configs.load_config("vp_toy")
    configs.check_override(config, "training.batch_size")
    with pytest.raises(ValueError, match=r"config.training has no 'batchsize'.*'batch_size'"):
        configs.check_override(config, "training.batchsize")
    with pytest.raises(ValueError, match=r"the config has no 'trainng'.*'training'"):
        configs.check_override(config, "trainng.batch_size")
    with pytest.raises(ValueError, match=r"config.seed has no 'x'"):
        configs.check_override(config, "seed.x")
