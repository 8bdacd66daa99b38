"""--mode inpaint / colorize / superres: a tiny trained image model completes images; bad inputs are refused
before any sampling, naming the knob."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import configs
import run_lib
from preflight import ConfigError
from score_sde.observations import MASKS


def tiny_config(channels=1):
    """A 2-step tiny DDPM++ on synthetic images (grey 28 × 28, or colour 16 × 16), 10 noise levels."""
    config = configs.load_config("vp_mnist_ddpmpp_continuous")
    config.data.dataset, config.data.num_channels = "synthetic", channels
    config.data.image_size = 28 if channels == 1 else 16
    m, t = config.model, config.training
    m.nf, m.ch_mult, m.num_res_blocks, m.num_scales = 8, (1, 2), 1, 10
    m.attn_resolutions = (config.data.image_size // 2,)
    t.batch_size, t.n_iters, t.snapshot_freq, t.snapshot_freq_for_preemption = 2, 2, 2, 2
    t.snapshot_sampling = False
    s = config.sampling
    s.num_inputs, s.particles, s.smc_steps = 2, 3, 4
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(grey config, its workdir), (colour config, its workdir), each trained for 2 steps."""
    runs = []
    for channels in (1, 3):
        torch.manual_seed(0)
        config, workdir = tiny_config(channels), tmp_path_factory.mktemp(f"run{channels}")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WANDB_MODE", "disabled")
            run_lib.train(config, workdir)
        runs.append((config, workdir))
    return runs


@pytest.mark.parametrize("task, channels", [("inpaint", 1), ("colorize", 3), ("superres", 1)])
def test_a_task_writes_its_grid_samples_and_what_produced_them(trained, task, channels):
    config, workdir = trained[0 if channels == 1 else 1]
    samples = run_lib.controllable(config, workdir, task=task)
    out = workdir / task
    arrays = np.load(out / "samples.npz")
    inputs = arrays["inputs"]
    assert arrays["samples"].shape == inputs.shape == (2, channels, config.data.image_size,
                                                        config.data.image_size)
    assert np.allclose(arrays["samples"], samples.cpu().numpy())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nfe"] == 4 * 3 and summary["produced_by"]["settings"]["task"] == task
    with Image.open(out / "grid.png") as grid:  # rows: inputs, observations, samples
        assert grid.size[1] == 3 * config.data.image_size + 4 * 2
    # exact observations hold exactly in every sample (model space and back: to rounding)
    x, s = torch.from_numpy(inputs).double(), torch.from_numpy(arrays["samples"]).double()
    if task == "inpaint":
        known = MASKS["lower_half"](config.data.image_size).expand_as(x)
        assert torch.allclose(s[known], x[known], atol=1e-5)
    elif task == "colorize":
        assert torch.allclose(s.mean(1), x.mean(1), atol=1e-5)
    else:
        pool = torch.nn.functional.avg_pool2d
        assert torch.allclose(pool(s, 2), pool(x, 2), atol=1e-5)


@pytest.mark.slow  # 13 s: ten PC levels of the network at two batch shapes
def test_replacement_runs_the_config_pc_sampler(trained):
    config, workdir = trained[0]
    config = config.copy_and_resolve_references()
    config.sampling.conditional_method = "replacement"
    config.sampling.predictor, config.sampling.corrector = "euler_maruyama", "langevin"
    with pytest.raises(ConfigError, match="conditional_method 'replacement'.*beta_max / N < 1"):
        run_lib.controllable(config, workdir, task="inpaint")  # VP's Langevin step needs the DDPM chain
    config.sampling.predictor, config.sampling.corrector = "euler_maruyama", "none"
    run_lib.controllable(config, workdir, task="inpaint")
    summary = json.loads((workdir / "inpaint" / "summary.json").read_text())
    assert summary["nfe"] == 10  # 10 levels, a predictor evaluation each


@pytest.mark.parametrize("task, knob, value, phrase", [
    ("colorize", "data.num_channels", None, "colorization needs a 3-channel"),
    ("superres", "sampling.superres_factor", 3, "dividing data.image_size=28"),
    ("inpaint", "sampling.mask", "triangle", "expected a built-in mask"),
    ("inpaint", "sampling.conditional_method", "dps", "config.sampling.conditional_method='dps'"),
    ("inpaint", "sampling.particles", 0, "config.sampling.particles=0"),
    ("inpaint", "sampling.sigma_y", -0.1, "config.sampling.sigma_y=-0.1"),
    ("inpaint", "sampling.inputs", "/no/such/folder", "config.sampling.inputs='/no/such/folder'"),
    ("inpaint", "sampling.num_inputs", 5000, "fewer than num_inputs=5000"),
])
def test_bad_settings_are_refused_before_any_sampling(trained, monkeypatch, task, knob, value, phrase):
    config, workdir = trained[0]
    config = config.copy_and_resolve_references()
    if value is not None:
        section, name = knob.split(".")
        config[section][name] = value
    monkeypatch.setattr(run_lib, "conditional_sample", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ConfigError, match=phrase):
        run_lib.controllable(config, workdir, task=task)


def test_a_mask_or_input_png_of_the_wrong_size_is_refused_naming_it(trained, tmp_path, monkeypatch):
    config, workdir = trained[0]
    config = config.copy_and_resolve_references()
    Image.fromarray(np.full((20, 20), 255, dtype=np.uint8)).save(tmp_path / "mask.png")
    config.sampling.mask = str(tmp_path / "mask.png")
    monkeypatch.setattr(run_lib, "conditional_sample", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ConfigError, match=r"mask .*mask.png is 20 × 20 pixels; the images are 28 × 28"):
        run_lib.controllable(config, workdir, task="inpaint")
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(folder / f"{i}.png")
    config.sampling.mask, config.sampling.inputs = "lower_half", str(folder)
    with pytest.raises(ConfigError, match=r"input image is 20 × 20 pixels; the model takes 28 × 28"):
        run_lib.controllable(config, workdir, task="inpaint")
