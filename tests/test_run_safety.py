"""Runs you can trust (issue 14), through main.py as a user meets them: bad settings refused before the first
step, divergence stopped with the last good resume point kept, one run per workdir, results that carry what
produced them, evaluation beside training, one-line errors."""
import json
import math
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import ENV, TINY, command, run, start

import configs
import run_lib
from preflight import ConfigError

STEPS = ["--config.training.n_iters=40"]


def timed_run(*args, **kwargs):
    """run(..., check=False) and the seconds it took."""
    started = time.monotonic()
    result = run(*args, check=False, **kwargs)
    return result, time.monotonic() - started


def assert_refused(result, seconds, *phrases, status=2):
    """A one-line error, before any work: the exit status, the phrases, no traceback, within seconds."""
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in error[0], error[0]
    assert seconds < 30  # imports included; the toy's checks themselves take well under a second


def all_finite(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [*state["model"].values(), *state["ema"]["shadow_params"].values()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy run trained for 40 steps: checkpoints 1 and 2, resume point at 40."""
    workdir = tmp_path_factory.mktemp("trained")
    run("train", workdir, *STEPS)
    return workdir


# ---- bad settings: refused before the first step, nothing written ----


def toy_config(**overrides):
    """The vp_toy config with cli.TINY's sizes and `overrides` ({'section.knob': value})."""
    config = configs.load_config("vp_toy")
    for arg in TINY:
        key, value = arg[len("--config."):].split("=")
        overrides.setdefault(key, type(config[key.split(".")[0]][key.split(".")[1]])(value))
    for key, value in overrides.items():
        section, knob = key.split(".")
        config[section][knob] = value
    return config


@pytest.mark.parametrize("overrides, phrases", [
    (["--config.model.beta_min=-1"], ["config.model.beta_min=-1.0", ">= 0"]),
    (["--config.sampling.predictor=leapfrog"], ["config.sampling.predictor='leapfrog'", "reverse_diffusion"]),
    (["--config.training.log_freq=0"], ["config.training.log_freq=0", ">= 1"]),
    (["--config.training.sde=subvpsde", "--config.sampling.predictor=ancestral_sampling"],
     ["config.sampling", "ancestral sampling needs the discrete chain"]),
])
def test_bad_setting_is_refused_through_main_before_the_first_step(tmp_path, overrides, phrases):
    workdir = tmp_path / "run"
    result, seconds = timed_run("train", workdir, *STEPS, *overrides)
    assert_refused(result, seconds, *phrases)
    assert not workdir.exists()  # config.json included: nothing was written


@pytest.mark.parametrize("overrides, phrase", [
    ({"model.beta_max": 0.05}, "config.model.beta_max=0.05: must exceed"),
    ({"model.beta_max": float("nan")}, "config.model.beta_max=nan: must be a finite number"),
    ({"training.sde": "vesde", "model.sigma_min": 50.0, "model.sigma_max": 0.01},
     "config.model.sigma_min=50.0: need 0 < sigma_min < sigma_max"),
    ({"training.sde": "vesde", "model.sigma_min": 0.0}, "config.model.sigma_min=0.0"),
    ({"training.sde": "hjb"}, "config.training.sde='hjb'"),
    ({"model.num_scales": 0}, "config.model.num_scales=0"),
    ({"sampling.corrector": "hmc"}, "config.sampling.corrector='hmc'"),
    ({"sampling.predictor": "none", "sampling.corrector": "none"}, "both 'none'"),
    ({"sampling.method": "fast", "sampling.solver": "rk4"}, "config.sampling.solver='rk4'"),
    ({"sampling.method": "fast", "sampling.schedule": "cosine"}, "config.sampling.schedule='cosine'"),
    ({"sampling.method": "fast", "sampling.steps": 0}, "config.sampling.steps=0"),
    ({"sampling.method": "fast", "sampling.solver": "adams_pc", "sampling.prediction": "eps"},
     "config.sampling.prediction='eps'"),
    ({"sampling.method": "fast", "sampling.solver": "adams_pc", "sampling.order": 5},
     "config.sampling.order=5"),
    ({"sampling.method": "fast", "sampling.solver": "adams_pc", "sampling.damping": -1.0},
     "config.sampling.damping=-1.0"),
    ({"sampling.method": "fast", "sampling.solver": "ddim", "sampling.eta": 1.5}, "config.sampling.eta=1.5"),
    ({"sampling.method": "euler"}, "config.sampling.method='euler'"),
    ({"sampling.method": "ode", "sampling.compile": "default"}, "config.sampling.compile='default'"),
    ({"sampling.snr": -0.1}, "config.sampling.snr=-0.1: must be a finite number > 0"),
    ({"sampling.n_steps_each": -1}, "config.sampling.n_steps_each=-1: must be a whole number >= 0"),
    ({"training.sde": "vesde", "sampling.probability_flow": True, "sampling.predictor": "ancestral_sampling"},
     "stochastic by definition"),
    ({"model.num_scales": 10}, "beta_max / N < 1"),  # the DDPM chain of reverse diffusion needs N > 20
    ({"training.batch_size": 0}, "config.training.batch_size=0"),
    ({"training.n_iters": 0}, "config.training.n_iters=0"),
    ({"training.snapshot_freq": 0}, "config.training.snapshot_freq=0"),
    ({"training.snapshot_freq_for_preemption": 0}, "config.training.snapshot_freq_for_preemption=0"),
    ({"training.eval_freq": 0}, "config.training.eval_freq=0"),
    ({"eval.batch_size": 0}, "config.eval.batch_size=0"),
    ({"optim.lr": -1.0}, "config.optim.lr=-1.0"),
    ({"optim.lr": float("inf")}, "config.optim.lr=inf"),
    ({"optim.beta1": 1.0}, "config.optim.beta1=1.0"),
    ({"optim.optimizer": "SGD"}, "config.optim.optimizer='SGD'"),
    ({"model.ema_rate": 1.5}, "config.model.ema_rate=1.5"),
    ({"training.precision": "fp8"}, "unknown precision 'fp8'"),
    ({"training.compile": "fastest"}, "unknown compile mode 'fastest'"),
    ({"model.name": "unet9000"}, "config.model: unknown"),
    ({"data.dataset": "nosuchtoy"}, "nosuchtoy"),
])
def test_bad_setting_is_refused_before_the_first_step(tmp_path, overrides, phrase):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        run_lib.train(toy_config(**overrides), workdir)
    assert not workdir.exists()


def test_missing_dataset_is_refused_before_the_first_step_naming_the_knobs(tmp_path):
    config = configs.load_config("vp_mnist_ddpmpp_continuous")
    config.model.update(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,))
    config.data.root = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"^config\.data: MNIST .*not found.*download=True"):
        run_lib.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_image_size_the_network_cannot_take_is_refused_before_the_first_step(tmp_path):
    workdir = tmp_path / "run"
    tiny = ["--config.data.dataset=synthetic", "--config.model.nf=8", "--config.model.ch_mult=(1,2)",
            "--config.model.num_res_blocks=1", "--config.model.attn_resolutions=(14,)",
            "--config.training.batch_size=4"]
    result, seconds = timed_run("train", workdir, *tiny, "--config.data.image_size=29",
                                config="vp_mnist_ddpmpp_continuous", tiny=False)
    assert_refused(result, seconds, "config.model.name='ncsnpp' cannot take data of shape (1, 29, 29)")
    assert not workdir.exists()


@pytest.mark.parametrize("mode, overrides, phrase", [
    ("sample", {"sampling.corrector": "hmc"}, "config.sampling.corrector='hmc'"),
    ("sample", {"eval.batch_size": 0}, "config.eval.batch_size=0"),
    ("sample", {"sampling.method": "fast", "sampling.solver": "rk4"}, "config.sampling.solver='rk4'"),
    ("likelihood", {"eval.bpd_precision": "fp8"}, "unknown precision 'fp8'"),
    ("likelihood", {"eval.bpd_num_items": 0}, "config.eval.bpd_num_items=0"),
    ("likelihood", {"eval.bpd_num_repeats": 0}, "config.eval.bpd_num_repeats=0"),
    ("likelihood", {"eval.bpd_dataset": "validation"}, "config.eval.bpd_dataset='validation'"),
    ("eval", {"eval.begin_ckpt": 3, "eval.end_ckpt": 1}, "config.eval.end_ckpt=1"),
    ("eval", {"eval.wait_s": -5.0}, "config.eval.wait_s=-5.0"),
    ("eval", {"eval.enable_sampling": True, "eval.num_samples": 0}, "config.eval.num_samples=0"),
    ("eval", {"eval.enable_sampling": True, "sampling.snr": 0.0}, "config.sampling.snr=0.0"),
    ("eval", {"eval.enable_bpd": True, "eval.bpd_compile": "fastest"}, "unknown compile mode 'fastest'"),
])
def test_every_mode_checks_before_any_work(trained, mode, overrides, phrase):
    before = sorted(p.relative_to(trained) for p in trained.rglob("*"))
    mode_fn = {"sample": run_lib.sample, "likelihood": run_lib.likelihood, "eval": run_lib.evaluate}[mode]
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        mode_fn(toy_config(**overrides), trained)
    assert sorted(p.relative_to(trained) for p in trained.rglob("*")) == before


def test_a_mode_refuses_through_main_too(trained):
    result, seconds = timed_run("sample", trained, *STEPS, "--config.sampling.corrector=hmc")
    assert_refused(result, seconds, "config.sampling.corrector='hmc'")


def test_workdir_that_is_a_file_or_unwritable_is_refused_before_any_work(tmp_path, trained):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    result, seconds = timed_run("train", afile, *STEPS)
    assert_refused(result, seconds, f"workdir {afile} is a file")
    result, seconds = timed_run("train", afile / "run", *STEPS)
    assert_refused(result, seconds, "which is a file")
    # /sys is mounted read-only: sample refuses it before drawing a single sample
    result, seconds = timed_run("sample", "/sys/score_sde_test", *STEPS,
                                f"--checkpoint={trained / 'checkpoints/checkpoint_2.pth'}")
    assert_refused(result, seconds, "cannot be written")


def test_traceback_on_request(tmp_path):
    result = subprocess.run(command("train", tmp_path / "r", "--config.training.log_freq=0"),
                            cwd=run_lib_root(), env=dict(ENV, SCORE_SDE_TRACEBACK="1"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def run_lib_root():
    return Path(run_lib.__file__).resolve().parent


# ---- divergence ----


def test_divergence_stops_training_and_keeps_the_last_good_resume_point(tmp_path):
    workdir = tmp_path / "run"
    # lr 1e3 warmed up over 100 steps: the loss overflows at step 13 (1e6 overflows it at step 3)
    result = run("train", workdir, "--config.training.n_iters=300", "--config.optim.lr=1e3",
                 "--config.optim.warmup=100", "--config.training.snapshot_freq_for_preemption=5",
                 "--config.training.snapshot_freq=10", "--config.training.log_freq=1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    bad_step = int(re.search(r"not finite at step (\d+)", message).group(1))
    assert "training diverged" in message and 0 < bad_step < 300
    resume_point = workdir / "checkpoints-meta" / "checkpoint.pth"
    saved_step = torch.load(resume_point, weights_only=True)["step"]
    assert 0 < saved_step <= bad_step and f"(step {saved_step}) is kept" in message
    assert all_finite(resume_point)
    numbered = sorted((workdir / "checkpoints").glob("checkpoint_*.pth"))
    assert numbered and all(all_finite(p) for p in numbered)
    for line in (workdir / "log.jsonl").read_text().splitlines():
        assert all(math.isfinite(v) for v in json.loads(line).values())  # standard JSON, finite


def test_nan_weights_give_no_samples_no_likelihood_no_eval(tmp_path, trained):
    # A checkpoint with NaN weights (written elsewhere, or by older code): nothing non-finite is reported.
    state = torch.load(trained / "checkpoints/checkpoint_2.pth", weights_only=True)
    for name, value in state["ema"]["shadow_params"].items():
        state["ema"]["shadow_params"][name] = torch.full_like(value, float("nan"))
    broken = tmp_path / "checkpoints" / "checkpoint_1.pth"
    broken.parent.mkdir()
    torch.save(state, broken)
    result = run("sample", tmp_path, *STEPS, check=False)
    assert result.returncode == 1 and "100 of 100 samples are not finite" in result.stderr
    assert not (tmp_path / "samples" / "samples.npz").exists()
    result = run("likelihood", tmp_path, *STEPS, check=False)  # the adaptive solver stops at once
    assert result.returncode == 1 and "right-hand side is not finite" in result.stderr
    assert not (tmp_path / "likelihood" / "summary.json").exists()
    result = run("eval", tmp_path, *STEPS, "--config.eval.begin_ckpt=1", "--config.eval.enable_loss=False",
                 "--config.eval.enable_sampling=True", "--config.eval.num_samples=100", check=False)
    assert result.returncode == 1 and "of round 0 (checkpoint 1) are not finite" in result.stderr
    assert not list((tmp_path / "eval").rglob("round_*.npz"))


# ---- resume ----


def test_resume_point_is_written_before_snapshot_sampling(tmp_path, monkeypatch):
    # A run killed while it draws its snapshot samples (minutes on a GPU) resumes from that very step.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    import configs

    config = configs.load_config("vp_toy")
    config.training.n_iters, config.training.snapshot_freq = 40, 20
    config.training.snapshot_freq_for_preemption = 20
    config.model.num_scales = 50

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_lib, "draw_samples", killed)
    with pytest.raises(KeyboardInterrupt):
        run_lib.train(config, tmp_path)
    assert torch.load(tmp_path / "checkpoints-meta/checkpoint.pth", weights_only=True)["step"] == 20


def test_restart_says_where_it_resumes(tmp_path):
    run("train", tmp_path, "--config.training.n_iters=20")
    result = run("train", tmp_path, "--config.training.n_iters=30")
    assert f"resuming from step 20 ({tmp_path / 'checkpoints-meta' / 'checkpoint.pth'})" in result.stdout


# ---- one run per workdir ----


def test_second_run_on_a_workdir_exits_at_once_and_a_killed_one_does_not_block(tmp_path):
    first = start("train", tmp_path, "--config.training.n_iters=1000000")
    try:
        lock = tmp_path / "train.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        result, seconds = timed_run("train", tmp_path, *STEPS)
        assert_refused(result, seconds, "is in use by process", f"process {first.pid} ")
    finally:
        first.send_signal(signal.SIGKILL)  # a killed holder: the kernel drops its lock
        first.wait()
    run("train", tmp_path, *STEPS)


def test_changed_model_is_refused_and_config_json_kept(tmp_path):
    run("train", tmp_path, "--config.training.n_iters=20")
    saved = (tmp_path / "config.json").read_text()
    result, seconds = timed_run("train", tmp_path, "--config.training.n_iters=40", "--config.model.nf=64",
                                "--config.model.beta_max=10")
    assert_refused(result, seconds, "model.nf: 32 -> 64", "model.beta_max: 20.0 -> 10.0",
                   "--allow_config_change")
    assert (tmp_path / "config.json").read_text() == saved
    # run length, frequencies and sampling may change freely
    run("train", tmp_path, "--config.training.n_iters=30", "--config.training.log_freq=2",
        "--config.sampling.corrector=none")
    assert json.loads((tmp_path / "config.json").read_text())["training"]["n_iters"] == 30
    # an explicit flag overrides, and the config it replaces is kept
    run("train", tmp_path, "--config.training.n_iters=40", "--config.model.beta_max=10",
        "--allow_config_change")
    assert json.loads((tmp_path / "config.json").read_text())["model"]["beta_max"] == 10
    (kept,) = tmp_path.glob("config.replaced-*.json")
    assert json.loads(kept.read_text())["model"]["beta_max"] == 20


# ---- results carry what produced them ----


def test_eval_rerun_with_other_settings_recomputes(trained):
    args = ["--config.eval.begin_ckpt=2", "--config.eval.enable_loss=False",
            "--config.eval.enable_sampling=True", "--config.eval.num_samples=200"]

    def samples(*overrides):
        run("eval", trained, *STEPS, *args, *overrides)
        return json.loads((trained / "eval" / "results.json").read_text())["checkpoint_2"]["samples"]

    assert samples()["nfe"] == 100  # 50 levels of predictor and corrector
    assert samples("--config.sampling.corrector=none")["nfe"] == 50
    fast = samples("--config.sampling.method=fast", "--config.sampling.steps=5")
    assert fast["nfe"] == 6 and fast["num_samples"] == 200
    more = samples("--config.sampling.method=fast", "--config.sampling.steps=5",
                   "--config.eval.batch_size=150", "--config.eval.num_samples=300")
    assert more["num_samples"] == 300
    with np.load(trained / "eval" / "ckpt_2" / "round_1.npz") as saved:
        assert len(saved["samples"]) == 150
        assert json.loads(str(saved["produced_by"]))["checkpoint"]["step"] == 40


def test_eval_reruns_when_the_checkpoint_file_changed(tmp_path):
    run("train", tmp_path, "--config.training.n_iters=20")
    args = ["--config.eval.begin_ckpt=1", "--config.eval.enable_loss=True"]
    run("eval", tmp_path, "--config.training.n_iters=20", *args)
    first = json.loads((tmp_path / "eval" / "results.json").read_text())["checkpoint_1"]["test_loss"]
    # a new run in the same workdir writes another checkpoint_1.pth
    for path in [tmp_path / "checkpoints-meta", tmp_path / "checkpoints"]:
        for file in path.iterdir():
            file.unlink()
    run("train", tmp_path, "--config.training.n_iters=20", "--config.optim.lr=3e-4")
    run("eval", tmp_path, "--config.training.n_iters=20", *args)
    second = json.loads((tmp_path / "eval" / "results.json").read_text())["checkpoint_1"]
    assert second["test_loss"] != first  # recomputed, not read back


# ---- evaluation beside training ----


def test_eval_waits_for_checkpoints_of_a_running_training_job(tmp_path):
    args = ["--config.eval.begin_ckpt=1", "--config.eval.end_ckpt=2", "--config.eval.wait_s=120"]
    evaluator = subprocess.Popen(command("eval", tmp_path, *STEPS, *args), cwd=run_lib_root(), env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        assert evaluator.poll() is None  # still waiting: nothing to evaluate yet
        run("train", tmp_path, *STEPS)
        stdout, stderr = evaluator.communicate(timeout=300)
    finally:
        evaluator.kill()
    assert evaluator.returncode == 0, stderr[-2000:]
    assert "waiting up to 120 s" in stdout
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert sorted(results) == ["checkpoint_1", "checkpoint_2"]
    result, seconds = timed_run("eval", tmp_path, *STEPS, "--config.eval.begin_ckpt=3",
                                "--config.eval.end_ckpt=3", "--config.eval.wait_s=1")
    assert_refused(result, seconds, "checkpoint_3.pth did not appear within eval.wait_s=1 s")


def test_eval_without_waiting_fails_at_once(tmp_path):
    result, seconds = timed_run("eval", tmp_path, *STEPS, "--config.eval.begin_ckpt=1")
    assert_refused(result, seconds, "no checkpoint numbered 1..5", "eval.wait_s")


# ---- sampling from the command line keeps no graph ----


@pytest.mark.parametrize("method", ["ode", "pc", "fast"])
def test_every_sampling_method_runs_from_the_command_line(trained, method):
    result = run("sample", trained, *STEPS, f"--config.sampling.method={method}")
    assert "100 samples" in result.stdout
    assert np.isfinite(np.load(trained / "samples" / "samples.npz")["samples"]).all()
    produced_by = json.loads((trained / "samples" / "samples.json").read_text())["produced_by"]
    assert produced_by["sampler"]["method"] == method and produced_by["checkpoint"]["step"] == 40
