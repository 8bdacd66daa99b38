"""Several processes: sharding draws what one process draws, and torchrun (gloo, 2 CPU processes) trains,
samples and measures likelihood as one process does."""
import json

import numpy as np
import pytest
import torch
from cli import run, weights

from score_sde import distributed
from score_sde.analytic import GaussianMixture
from score_sde.distributed import Shard
from score_sde.losses import get_loss_fn
from score_sde.sde import VESDE, VPSDE

IMAGE = ["--config.data.dataset=synthetic", "--config.data.image_size=8", "--config.data.num_channels=1",
         "--config.data.random_flip=True", "--config.data.uniform_dequantization=True",
         "--config.model.nf=8", "--config.model.ch_mult=(1,2)", "--config.model.num_res_blocks=1",
         "--config.model.attn_resolutions=(4,)", "--config.model.dropout=0.0", "--config.model.num_scales=10",
         "--config.training.batch_size=8", "--config.training.snapshot_freq=4",
         "--config.training.snapshot_freq_for_preemption=2", "--config.training.log_freq=2",
         "--config.training.eval_freq=2", "--config.training.snapshot_sampling=False",
         "--config.eval.batch_size=8", "--config.optim.warmup=2"]


def test_shard_and_interleave_are_inverse_for_uneven_splits():
    x = torch.arange(11.0)[:, None].expand(11, 3)
    parts = [Shard(r, 3).of(x) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3]
    assert torch.equal(distributed.interleave(parts), x)
    with pytest.raises(ValueError, match="rank 2"):
        Shard(2, 2)


@pytest.mark.parametrize("sde,continuous", [(VPSDE(N=20), True), (VESDE(N=20), False), (VPSDE(N=20), False)],
                         ids=["continuous", "smld", "ddpm"])
def test_ranks_losses_average_to_the_one_process_loss(sde, continuous):
    """Times, labels and noise are drawn for the global batch and sharded: the mean of the ranks' losses is
    the one-process loss of the global batch, to rounding."""
    mix = GaussianMixture(weights=[0.5, 0.5], means=[[-1.0, 0.0], [1.0, 1.0]], stds=[0.5, 0.7])
    score_fn = mix.score_fn(sde)
    fn = score_fn if continuous else (lambda x, labels: x * 0.3 - labels[:, None] * 0.01)
    loss_fn = get_loss_fn(sde, continuous=continuous)
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    single = loss_fn(fn, x, torch.Generator().manual_seed(1))
    shards = [Shard(r, 3) for r in range(3)]
    per_rank = [loss_fn(fn, s.of(x), torch.Generator().manual_seed(1), s) for s in shards]
    torch.testing.assert_close(torch.stack(per_rank).mean(), single)


def checkpoint(workdir, number):
    return workdir / "checkpoints" / f"checkpoint_{number}.pth"


TOY = ["--config.training.snapshot_sampling=False", "--config.training.snapshot_freq=4",
       "--config.training.snapshot_freq_for_preemption=2"]


@pytest.mark.parametrize("config,overrides", [("vp_toy", TOY),
                                              ("vp_mnist_ddpmpp_continuous", IMAGE)], ids=["toy", "images"])
def test_two_processes_train_as_one_with_the_global_batch(tmp_path, config, overrides):
    """torchrun with gloo: the parameters after 8 steps (resumed halfway) equal a one-process run's."""
    one, two = tmp_path / "one", tmp_path / "two"
    run("train", one, *overrides, "--config.training.n_iters=8", config=config)
    run("train", two, *overrides, "--config.training.n_iters=4", config=config, processes=2)
    run("train", two, *overrides, "--config.training.n_iters=8", config=config, processes=2)
    for key, value in weights(checkpoint(one, 2)).items():
        torch.testing.assert_close(weights(checkpoint(two, 2))[key], value, rtol=1e-5, atol=1e-6)
    halfway, final = weights(checkpoint(two, 1)), weights(checkpoint(two, 2))
    assert any(not torch.equal(halfway[key], final[key]) for key in final)  # it trained
    logs = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    single_logs = [json.loads(line) for line in (one / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logs] == [entry["step"] for entry in single_logs]  # rank 0 logs once


def test_two_processes_split_sampling_and_likelihood(tmp_path):
    run("train", tmp_path, "--config.training.n_iters=10", "--config.training.snapshot_sampling=False")
    run("likelihood", tmp_path)
    single = json.loads((tmp_path / "likelihood" / "summary.json").read_text())
    run("eval", tmp_path, "--config.eval.enable_bpd=True", "--config.eval.enable_sampling=True",
        "--config.eval.begin_ckpt=0", "--config.eval.num_samples=200", processes=2)
    split = json.loads((tmp_path / "likelihood" / "summary.json").read_text())
    # the same held-out points (drawn for the global batch), each evaluated once
    assert split["count"] == single["count"] == 100
    assert split["exact_mean"] == pytest.approx(single["exact_mean"], abs=1e-12)
    assert abs(split["mean"] - single["mean"]) < 4 * single["stderr"]  # only the Hutchinson noise differs
    rounds = [torch.from_numpy(np.load(tmp_path / "eval" / "ckpt_0" / f"round_{r}.npz")["samples"])
              for r in (0, 1)]  # two rounds of eval.batch_size = 100, each gathered from both ranks
    samples = torch.cat(rounds)
    assert samples.shape == (200, 2) and len(torch.unique(samples, dim=0)) == 200  # the ranks' own draws
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["checkpoint_0"]
    assert results["samples"]["num_samples"] == 200 and results["test_loss"] > 0
