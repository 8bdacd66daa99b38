"""Running main.py as users do, in a subprocess (optionally under torchrun), for the end-to-end tests."""
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


ENV = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")


def command(mode, workdir, *overrides, config="vp_toy", processes=1, tiny=True):
    """The command line of main.py --mode=mode on config with the TINY overrides (if tiny) and then
    `overrides`; with processes > 1 under torchrun (gloo on the CPU)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [*launcher, str(ROOT / "main.py"), f"--mode={mode}", f"--config={config}", f"--workdir={workdir}",
            *(TINY if tiny else []), *overrides]


def start(*args, **kwargs):
    """command(...) started in the background: a Popen."""
    return subprocess.Popen(command(*args, **kwargs), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run(*args, check=True, **kwargs):
    """command(...) run to its end; AssertionError with the stderr's end if check and it fails. Returns the
    CompletedProcess."""
    args = command(*args, **kwargs)
    result = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def weights(path):
    """The network weights of one of our checkpoints."""
    return torch.load(path, map_location="cpu", weights_only=True)["model"]
