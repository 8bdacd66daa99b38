"""The package as a library: the top-level names, the installed configs, and loading a trained model from a
plain string path."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import reference
import torch
from reference import requires_fixtures
from shared import REFERENCE_MODELS, require_reference_models

import configs
import run_lib
import score_sde


def test_top_level_names_are_the_documented_ones():
    expected = {"SDE", "VPSDE", "subVPSDE", "VESDE", "GaussianMixture", "pc_sample", "ode_sample",
                "fast_sample", "log_likelihood", "bits_per_dim", "create_model", "get_score_fn", "load",
                "ScoreModel", "conditional_sample", "Inpainting", "Colorization", "SuperResolution",
                "LinearObservation", "classifier_guidance", "classifier_free_guidance"}
    assert set(score_sde.__all__) == expected and all(callable(getattr(score_sde, n)) for n in expected)
    assert (Path(score_sde.__file__).parent / "py.typed").is_file()


def test_configs_import_from_outside_the_repository(tmp_path):
    # the installed package carries the configs: no repository root on the path
    code = ("from score_sde.configs import load_config, available_configs; "
            "assert 'vp_toy' in available_configs(); "
            "print(load_config('ve/cifar10_ncsnpp_continuous').model.name)")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ncsnpp", result.stderr[-2000:]


def train_toy(workdir, monkeypatch, steps=2):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = configs.load_config("vp_toy")
    t = config.training
    t.n_iters, t.snapshot_freq, t.batch_size, t.snapshot_sampling = steps, steps, 16, False
    config.model.num_scales = 100  # fewer PC levels: quicker samples
    run_lib.train(config, workdir)
    return config


def test_a_trained_toy_loads_from_a_string_path_and_samples(tmp_path, monkeypatch):
    config = train_toy(tmp_path, monkeypatch)
    model, path = run_lib.load_for_inference(config, str(tmp_path))
    assert path.name == "checkpoint_1.pth" and not model.training
    sde = run_lib.build_sde(config)
    x, _ = score_sde.fast_sample(sde, run_lib.model_score_fn(config, sde, model), (4, 2), steps=4)
    assert x.shape == (4, 2) and torch.isfinite(x).all()


def test_load_gives_the_ema_network_and_the_samples_of_the_cli(tmp_path, monkeypatch):
    config = train_toy(tmp_path, monkeypatch, steps=4)
    loaded = score_sde.load(str(tmp_path))  # the config from the workdir's config.json
    assert loaded.checkpoint.name == "checkpoint_1.pth" and loaded.step == 4 and not loaded.network.training
    network, _ = run_lib.load_for_inference(config, tmp_path)  # the CLI's path: EMA weights
    for mine, theirs in zip(loaded.network.state_dict().values(), network.state_dict().values(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    # the config's own sampler and knobs, as --mode sample draws them
    gen = torch.Generator().manual_seed(5)
    expected, _ = run_lib.draw_samples(config, run_lib.build_sde(config), network, 6, gen, progress=False)
    got = loaded.sample(6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # options override the config's knobs; another method starts from the sampler's own defaults
    assert loaded.sample(3, method="fast", steps=3).shape == (3, 2)
    assert torch.isfinite(loaded.sample(3, method="ode", rtol=1e-3, atol=1e-3)).all()


def test_load_refuses_what_it_cannot_use(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        score_sde.load(tmp_path)  # an empty workdir
    train_toy(tmp_path, monkeypatch)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        score_sde.load(tmp_path)
    with pytest.raises(ValueError, match="does not fit"):
        score_sde.load(tmp_path, config="vp_mnist_mlp")  # another network
    with pytest.raises(ValueError, match="unknown method"):
        score_sde.load(tmp_path, config="vp_toy").sample(2, method="euler")


@requires_fixtures
def test_load_reads_the_originals_checkpoint_with_its_config():
    raw = reference.config("ddpmpp_vp")
    loaded = score_sde.load(reference.fixture("ddpmpp_vp.pth"), config=raw)
    _, ema_state = reference.model_and_ema_state_dicts("ddpmpp_vp")
    for key, value in loaded.network.state_dict().items():
        if key in ema_state:  # the EMA shadow weights, not the raw ones
            torch.testing.assert_close(value, ema_state[key], rtol=0, atol=0)
    images = loaded.sample(2, method="fast", steps=2)
    assert images.shape == (2, raw.data.num_channels, raw.data.image_size, raw.data.image_size)


@pytest.mark.slow  # minutes on 2 cores: most of it the PC sampler's 1000 levels on the original's network
def test_a_notebook_script_runs_outside_the_repository(tmp_path, monkeypatch):
    """The notebook workflow of docs/api.md, as a script run from a temporary folder against the installed
    package: load a checkpoint of --mode train and one of the original's, draw 8 samples by each method,
    and bits/dim of 4 images."""
    workdir = tmp_path / "run"
    train_toy(workdir, monkeypatch)
    require_reference_models()
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(script), str(workdir), str(REFERENCE_MODELS)], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert lines["package"].startswith(str(Path(score_sde.__file__).parent.parent))  # not a copy elsewhere
    for method in ("pc", "ode", "fast"):
        assert lines[f"toy {method}"] == "(8, 2) finite"
        assert lines[f"original {method}"] == "(8, 3, 16, 16) finite"
    bits = [float(v) for v in lines["bits/dim"].split()]
    assert len(bits) == 4 and all(0 < b < 40 for b in bits)


NOTEBOOK = """
import json, sys
from pathlib import Path
import torch
import score_sde

workdir, fixtures = Path(sys.argv[1]), Path(sys.argv[2])
print("package:", Path(score_sde.__file__).parent)
toy = score_sde.load(workdir)
config = json.loads((fixtures / "ddpmpp_vp_config.json").read_text())
original = score_sde.load(fixtures / "ddpmpp_vp.pth", config=config)
options = {"pc": dict(), "ode": dict(rtol=1e-3, atol=1e-3), "fast": dict(steps=5)}
for name, model in (("toy", toy), ("original", original)):
    for method, extra in options.items():
        x = model.sample(8, method=method, generator=torch.Generator().manual_seed(0), **extra)
        print(f"{name} {method}:", tuple(x.shape), "finite" if torch.isfinite(x).all() else "NOT FINITE")
images = torch.randint(0, 256, (4, 3, 8, 8)).float() / 255  # pixels in [0, 1]
dequantized = (images * 255 + torch.rand(images.shape)) / 256
logp, _, _ = score_sde.log_likelihood(original.sde, original.score_fn, original.to_model_space(dequantized),
                                      rtol=1e-3, atol=1e-3)
bits = score_sde.bits_per_dim(logp, images.shape, centered=original.config.data.centered)
print("bits/dim:", " ".join(f"{b:.3f}" for b in bits.tolist()))
"""
