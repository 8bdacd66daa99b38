"""The package as a library: the top-level names, the installed configs, and loading a trained model from a
plain string path."""
import os
import subprocess
import sys
from pathlib import Path

import torch

import configs
import run_lib
import score_sde


def test_top_level_names_are_the_documented_ones():
    expected = {"SDE", "VPSDE", "subVPSDE", "VESDE", "GaussianMixture", "pc_sample", "ode_sample",
                "fast_sample", "log_likelihood", "bits_per_dim", "create_model", "get_score_fn"}
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


def test_a_trained_toy_loads_from_a_string_path_and_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = configs.load_config("vp_toy")
    t = config.training
    t.n_iters, t.snapshot_freq, t.batch_size, t.snapshot_sampling = 2, 2, 16, False
    run_lib.train(config, tmp_path)
    model, path = run_lib.load_for_inference(config, str(tmp_path))
    assert path.name == "checkpoint_1.pth" and not model.training
    sde, eps = run_lib.build_sde(config)
    x, _ = score_sde.fast_sample(sde, run_lib.model_score_fn(config, sde, model), (4, 2), steps=4, eps=eps)
    assert x.shape == (4, 2) and torch.isfinite(x).all()
