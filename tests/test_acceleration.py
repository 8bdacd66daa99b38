"""The opt-in switches through run_lib: bf16 training, a compiled network and a compiled PC step train and
sample a toy run end to end with the checkpoint keys of an eager run; bad values fail before any work."""
import shutil

import pytest
import torch

import run_lib
from configs import load_config
from score_sde import acceleration


def tiny_toy(**training):
    config = load_config("vp_toy")
    t = config.training
    t.n_iters, t.batch_size, t.snapshot_freq, t.snapshot_freq_for_preemption = 6, 32, 6, 3
    t.log_freq, t.eval_freq = 3, 3
    config.model.num_scales = 30
    config.model.nf = 16
    for key, value in training.items():
        t[key] = value
    return config


def test_bf16_compiled_training_and_compiled_sampling_run_end_to_end(tmp_path, monkeypatch,
                                                                    traced_not_generated):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = tiny_toy(precision="bf16", compile="default")
    config.sampling.compile = "reduce-overhead"
    state = run_lib.train(config, tmp_path / "fast")
    eager = run_lib.train(tiny_toy(), tmp_path / "eager")
    saved = torch.load(tmp_path / "fast" / "checkpoints" / "checkpoint_1.pth", weights_only=True)
    assert list(saved["model"]) == list(eager.model.state_dict())  # compiling in place keeps the keys
    assert state.step == 6 and (tmp_path / "fast" / "samples" / "iter_6.png").is_file()
    # bf16 changes the rounding, not the optimisation: after 6 steps the weights are close, not equal.
    difference = max((a - b).abs().max().item() for a, b in
                     zip(state.model.state_dict().values(), eager.model.state_dict().values()))
    assert 0 < difference < 1e-2


@pytest.mark.parametrize("section, knob, value, message", [
    ("training", "precision", "fp16", r"unknown precision 'fp16'; expected one of \['bf16', 'fp32', 'tf32'"),
    ("training", "compile", "fastest", r"unknown compile mode 'fastest'; expected one of"),
])
def test_bad_switches_fail_before_training(tmp_path, monkeypatch, section, knob, value, message):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = tiny_toy()
    config[section][knob] = value
    with pytest.raises(ValueError, match=message):
        run_lib.train(config, tmp_path)
    assert not (tmp_path / "checkpoints-meta").exists()


def test_sampling_compile_is_for_the_pc_sampler_only():
    config = tiny_toy()
    config.sampling.method, config.sampling.compile = "fast", "default"
    with pytest.raises(ValueError, match="sampling.compile='default' compiles the PC sampler's step"):
        run_lib.sampler_kwargs(config)


def test_autocast_names():
    assert isinstance(acceleration.autocast("cpu", "bf16"), torch.autocast)
    with acceleration.autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_channels_last_reaches_the_network():
    config = load_config("vp_mnist_ddpmpp_continuous")
    config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 8, (1, 2), 1
    plain = run_lib.build_state(config).model
    config.model.channels_last = True
    model = run_lib.build_state(config).model
    convs = [p for p in model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    x, labels = torch.randn(2, 1, 28, 28), torch.rand(2) * 999
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x, labels), plain.eval()(x, labels), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained_toy(tmp_path_factory):
    """A vp_toy run of 6 steps (its checkpoint is all the likelihood needs)."""
    workdir = tmp_path_factory.mktemp("toy")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("WANDB_MODE", "disabled")
        config = tiny_toy()
        config.training.snapshot_sampling = False
        run_lib.train(config, workdir)
    return workdir


def toy_likelihood(workdir, **knobs):
    config = tiny_toy()
    for key, value in knobs.items():
        config.eval[key] = value
    return run_lib.likelihood(config, workdir)["mean"]


def test_likelihood_precision_and_compile(trained_toy, traced_not_generated):
    """eval.bpd_precision / bpd_compile: TF32 is float32 on a CPU (the same nats); a compiled network
    gives the eager value; bf16 is close to it but not equal."""
    fp32 = toy_likelihood(trained_toy)
    assert toy_likelihood(trained_toy, bpd_precision="tf32") == fp32
    assert toy_likelihood(trained_toy, bpd_compile="default") == pytest.approx(fp32, abs=1e-5)
    bf16 = toy_likelihood(trained_toy, bpd_precision="bf16")
    assert 0 < abs(bf16 - fp32) < 0.05


def test_a_bad_likelihood_switch_fails_before_any_work(trained_toy):
    shutil.rmtree(trained_toy / "likelihood", ignore_errors=True)  # another test's results
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        toy_likelihood(trained_toy, bpd_precision="half")
    with pytest.raises(ValueError, match="unknown compile mode 'quick'"):
        toy_likelihood(trained_toy, bpd_compile="quick")
    assert not (trained_toy / "likelihood").exists()


def test_tf32_switches_the_flags_only_inside():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with acceleration.autocast("cuda", "tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
