"""main.py end to end, as users run it: train, get killed and resume exactly, sample, likelihood, eval, on a
toy config and on tiny image configs (synthetic images, and MNIST from ../shared/data/mnist)."""
import json
import math
import os
import time

import numpy as np
import pytest
import torch
from cli import run, start, weights
from shared import require_mnist

import configs
import run_lib

TINY_IMAGES = ["--config.model.nf=8", "--config.model.ch_mult=(1,2)", "--config.model.num_res_blocks=1",
               "--config.model.attn_resolutions=(14,)", "--config.model.num_scales=10",
               "--config.training.batch_size=4", "--config.training.snapshot_freq=3",
               "--config.training.snapshot_freq_for_preemption=3", "--config.training.log_freq=1",
               "--config.training.eval_freq=3", "--config.eval.batch_size=4", "--config.eval.bpd_num_items=4",
               "--config.data.uniform_dequantization=True"]


def assert_same_weights(path, other):
    for key, value in weights(path).items():
        torch.testing.assert_close(weights(other)[key], value, rtol=0, atol=0)


def test_killed_run_resumes_exactly_then_samples_and_measures_likelihood(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    steps = ["--config.training.n_iters=300", "--config.training.snapshot_freq=100"]
    run("train", straight, *steps)
    process = start("train", killed, *steps)
    resume_point = killed / "checkpoints-meta" / "checkpoint.pth"
    deadline = time.monotonic() + 300
    while not resume_point.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()  # SIGKILL, as a pre-empted job gets: no cleanup
    process.wait()
    interrupted_at = torch.load(resume_point, weights_only=True)["step"]
    assert 0 < interrupted_at < 300
    run("train", killed, *steps)
    assert_same_weights(straight / "checkpoints/checkpoint_3.pth", killed / "checkpoints/checkpoint_3.pth")
    assert json.loads((straight / "config.json").read_text())["training"]["n_iters"] == 300
    assert (straight / "samples" / "iter_100.png").is_file()

    run("sample", straight)
    assert (straight / "samples" / "sample.png").is_file()
    assert np.load(straight / "samples" / "samples.npz")["samples"].shape == (100, 2)
    fast = run("sample", straight, "--config.sampling.method=fast", "--config.sampling.solver=dpmpp_2m",
               "--config.sampling.steps=10")
    assert "(11 score evaluations)" in fast.stdout  # 10 steps and the final denoising
    result = run("sample", straight, "--config.sampling.method=fast", "--config.sampling.solver=rk4",
                 check=False)
    assert result.returncode == 2 and "config.sampling.solver='rk4'" in result.stderr
    run("likelihood", straight)
    summary = json.loads((straight / "likelihood" / "summary.json").read_text())
    assert summary["unit"] == "nats" and summary["count"] == 100 and summary["stderr"] > 0


def mnist_root(tmp_path):
    """A data root whose MNIST training split is the shared test split (only it is at hand)."""
    mnist = require_mnist()
    root = tmp_path / "mnist"
    root.mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        for split in ("train", "t10k"):
            os.symlink(mnist / f"t10k-{kind}-ubyte.gz", root / f"{split}-{kind}-ubyte.gz")
    return root


@pytest.mark.parametrize("dataset", ["synthetic", "MNIST"])
def test_tiny_image_run_end_to_end(tmp_path, dataset):
    data = [f"--config.data.dataset={dataset}"]
    if dataset == "MNIST":
        data.append(f"--config.data.root={mnist_root(tmp_path)}")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    config = dict(config="vp_mnist_ddpmpp_continuous", tiny=False)
    run("train", straight, *TINY_IMAGES, *data, "--config.training.n_iters=6", **config)
    run("train", resumed, *TINY_IMAGES, *data, "--config.training.n_iters=3", **config)
    run("train", resumed, *TINY_IMAGES, *data, "--config.training.n_iters=6", **config)
    assert_same_weights(straight / "checkpoints/checkpoint_2.pth", resumed / "checkpoints/checkpoint_2.pth")
    assert (straight / "samples" / "iter_6.png").is_file()

    run("sample", straight, *TINY_IMAGES, *data, **config)
    assert np.load(straight / "samples" / "samples.npz")["samples"].shape == (4, 1, 28, 28)
    # the test loss over all of MNIST's 10,000 test images would take a minute: only on synthetic's 256
    loss = f"--config.eval.enable_loss={dataset == 'synthetic'}"
    run("eval", straight, *TINY_IMAGES, *data, "--config.eval.enable_bpd=True", loss,
        "--config.eval.begin_ckpt=2", **config)
    summary = json.loads((straight / "likelihood" / "summary.json").read_text())
    assert summary["unit"] == "bits/dim" and summary["count"] == 4 and 0 < summary["mean"] < 30
    results = json.loads((straight / "eval" / "results.json").read_text())["checkpoint_2"]
    assert results["test_loss"] > 0 if dataset == "synthetic" else "test_loss" not in results


def test_unknown_config_and_knob_fail_clearly(tmp_path):
    result = run("train", tmp_path, config="vp_nonexistent", check=False)
    assert result.returncode != 0 and "unknown config 'vp_nonexistent'" in result.stderr
    assert "vp_toy" in result.stderr  # the message lists the choices
    result = run("train", tmp_path, "--config.training.no_such_knob=3", check=False)
    assert result.returncode != 0 and "no_such_knob" in result.stderr
    result = run("train", tmp_path, "--config.training.n_iters=many", check=False)
    assert result.returncode != 0 and "n_iters" in result.stderr


def test_sample_without_checkpoint_fails_clearly(tmp_path):
    result = run("sample", tmp_path, check=False)
    assert result.returncode != 0 and "no checkpoint" in result.stderr


def test_toy_of_three_dimensions_trains_samples_and_measures_likelihood(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = configs.load_config("vp_toy")
    config.data.dim = 3
    config.training.n_iters, config.training.snapshot_freq = 4, 4
    config.model.num_scales, config.eval.batch_size = 50, 50
    run_lib.train(config, tmp_path)
    assert (tmp_path / "samples" / "iter_4.png").is_file()  # the first two coordinates, plotted
    assert run_lib.sample(config, tmp_path).shape == (50, 3)
    summary = run_lib.likelihood(config, tmp_path)
    # the held-out points' exact log-density is the 3-D mixture's: about minus its entropy,
    # 3·½·log(2πe) + H(0.2, 0.8) = 4.757 nats (the 2-D one would give 3.34)
    entropy = 1.5 * math.log(2 * math.pi * math.e) - 0.2 * math.log(0.2) - 0.8 * math.log(0.8)
    assert summary["count"] == 50 and abs(summary["exact_mean"] + entropy) < 0.4


def test_eval_folder_as_the_originals_flag(tmp_path):
    run("train", tmp_path, "--config.training.n_iters=20")
    run("eval", tmp_path, "--eval_folder=eval_again", "--config.eval.begin_ckpt=1",
        "--config.eval.end_ckpt=1")
    assert "checkpoint_1" in json.loads((tmp_path / "eval_again" / "results.json").read_text())
    assert not (tmp_path / "eval").exists()
    for mode, flag in (("sample", "--eval_folder=eval_again"), ("eval", "--eval_folder=../outside")):
        result = run(mode, tmp_path, flag, check=False)
        assert result.returncode != 0 and "eval_folder" in result.stderr


def test_the_originals_config_path_runs(tmp_path):
    result = run("train", tmp_path, "--config.training.n_iters=1", "--config.model.nf=8",
                 "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=0",
                 "--config.data.dataset=nope",
                 config="configs/ve/cifar10_ncsnpp_continuous.py", tiny=False, check=False)
    # the path names our ve_ncsnpp_continuous: its knobs are checked, and the bad dataset is refused by name
    assert result.returncode == 2 and "data.dataset" in result.stderr, result.stderr
