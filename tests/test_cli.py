"""main.py end to end on a toy config: train, interrupt and resume exactly, sample, likelihood, eval."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config.training.batch_size=64", "--config.training.snapshot_freq=20",
        "--config.training.snapshot_freq_for_preemption=10", "--config.training.log_freq=5",
        "--config.training.eval_freq=10", "--config.model.num_scales=50", "--config.model.nf=32",
        "--config.eval.batch_size=100", "--config.optim.warmup=5"]


def run(mode, workdir, *overrides, config="vp_toy", check=True):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    args = [sys.executable, str(ROOT / "main.py"), f"--mode={mode}", f"--config={config}",
            f"--workdir={workdir}", *TINY, *overrides]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_train_resume_sample_likelihood(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run("train", straight, "--config.training.n_iters=40")
    run("train", resumed, "--config.training.n_iters=20")  # stops where an interrupted run resumes
    run("train", resumed, "--config.training.n_iters=40")
    final = "checkpoints/checkpoint_2.pth"
    for key, value in weights(straight / final).items():
        torch.testing.assert_close(weights(resumed / final)[key], value, rtol=0, atol=0)
    assert json.loads((straight / "config.json").read_text())["training"]["n_iters"] == 40
    assert (straight / "samples" / "iter_20.png").is_file()

    run("sample", straight)
    assert (straight / "samples" / "sample.png").is_file()
    assert (straight / "samples" / "samples.npz").is_file()
    run("likelihood", straight)
    summary = json.loads((straight / "likelihood" / "summary.json").read_text())
    assert summary["unit"] == "nats" and summary["count"] == 100 and summary["stderr"] > 0


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
