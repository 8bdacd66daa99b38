"""bf16 does not change what is learned: a small DDPM++ trained on MNIST in fp32 and in bf16, side by side.

Two runs of `train_step` from the same seed on the same device, one with precision="fp32" and one with
precision="bf16" (autocast around the loss; float32 weights, gradients and Adam state): the same initial
weights, the same batches in the same order, the same times t and noise z (the training generator) and the
same dropout masks (torch's global generator, reseeded alike). The first steps' losses therefore differ by
bf16 rounding alone (little: DDPM++'s last layer starts near zero, init_scale 0); afterwards the weights
drift apart and the losses differ as two nearby models' do.

The network is vp_mnist_ddpmpp_continuous shrunk (nf 16, one residual block per resolution, attention at
14×14), trained with the config's Adam (lr 2e-4, grad clip 1) and EMA (0.999), warm-up cut to 50 steps.
The shared MNIST folder holds the 10,000-image test split only: its first 5,000 images are the training set
and the last --heldout images the held-out set (as benchmarks/mnist_quality.py splits it).

Reported:
- over the last 100 steps, each run's mean training loss ± standard error, the step-to-step noise (the std
  of the fp32 losses) and the mean paired difference bf16 − fp32 ± its standard error;
- the held-out loss of each final model, raw weights and EMA weights, evaluated in fp32 without dropout on
  the same images with the same t and z for both models, and its paired difference ± standard error (over
  batches of 50);
- the wall time of each run's training steps (on a shared CPU, not a speed figure: see
  benchmarks/speed.py).
The runs agree when the mean paired difference is smaller than the step-to-step noise; its standard error
says whether a difference is resolved at all (pairing removes most of the batch-to-batch noise).

Run:
    .venv/bin/python benchmarks/bf16_parity.py                  # 500 steps each: 4.5 minutes on a 2-core CPU
    .venv/bin/python benchmarks/bf16_parity.py --quick          # smoke run: 100 steps, 200 held-out images
    .venv/bin/python benchmarks/bf16_parity.py --replot benchmarks/results/bf16_parity_cpu.json
                                                                # redraw the figure from saved results
Options: --quick, --replot JSON, --steps, --batch (24), --nf (16), --lr (2e-4), --device (default: the GPU
if there is one),
--heldout (1000), --mnist (default ../shared/data/mnist), --out (default
benchmarks/results/bf16_parity_<device type>.json), --png (default docs/img/bf16_parity.png: both
loss curves, moving averages over 25 steps, and their difference against the noise, on log-log axes).
"""
import argparse
import contextlib
import datetime
import itertools
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import configs  # noqa: E402  (the repository root is on the path only now)
import run_lib  # noqa: E402
from score_sde import data  # noqa: E402
from score_sde import train as training  # noqa: E402
from score_sde.models import ExponentialMovingAverage, create_model  # noqa: E402
from score_sde.plots import NO_PLOT, have_matplotlib, loglog_png, replot  # noqa: E402

PRECISIONS = ("fp32", "bf16")
TRAIN_IMAGES = 5000
TAIL = 100  # the last steps, over which the runs are compared
FIRST = 10  # the first steps, where the weights are still nearly equal
WINDOW = 25  # moving average of the plotted curves
EVAL_BATCH = 50


def small_config(args):
    """vp_mnist_ddpmpp_continuous shrunk to a network that trains 500 steps in minutes on a CPU."""
    config = configs.load_config("vp_mnist_ddpmpp_continuous")
    config.data.root = str(args.mnist)
    config.training.batch_size = args.batch
    config.model.nf = args.nf
    config.model.num_res_blocks = 1
    config.optim.lr = args.lr
    config.optim.warmup = 50  # the config's 5,000 suits its 100k steps, not 500
    return config


def load_images(config, device):
    """(training images [5000, 1, 28, 28], held-out images [N, 1, 28, 28]) in model space on device."""
    dataset = data.image_dataset(**run_lib.dataset_options(config, "test"))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    images = data.get_data_scaler(config.data.centered)(images).to(device)
    return images[:TRAIN_IMAGES], images[TRAIN_IMAGES:]


def build_state(config, device):
    """run_lib.build_state on a chosen device: seeded network, EMA, Adam and training generator."""
    torch.manual_seed(config.seed)
    model = create_model(config).to(device)
    o = config.optim
    optimizer = training.make_optimizer(model.parameters(), o.lr, o.beta1, o.eps, o.weight_decay, o.optimizer)
    generator = torch.Generator(device).manual_seed(config.seed)
    return training.TrainState(model, ExponentialMovingAverage(model, config.model.ema_rate), optimizer, 0,
                               generator)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(config, sde, images, order, precision, device):
    """(TrainState, per-step losses [steps] float64 numpy, wall seconds) of one run over `order`."""
    state = build_state(config, device)
    loss_fn = training.make_loss(sde, **run_lib.loss_kwargs(config, train=True))
    o = config.optim
    losses = []
    sync(device)
    start = time.perf_counter()
    for indices in order:
        losses.append(training.train_step(state, images[indices.to(device)], loss_fn, o.lr, o.warmup,
                                          o.grad_clip, precision))
    sync(device)
    seconds = time.perf_counter() - start
    return state, torch.stack(losses).double().cpu().numpy(), seconds


@torch.no_grad()
def held_out_losses(state, config, sde, images, seed, ema):
    """Per-batch fp32 losses [N / 50] of the raw (or EMA) weights, without dropout; t and z from `seed`."""
    loss_fn = training.make_loss(sde, **run_lib.loss_kwargs(config, train=False))
    generator = torch.Generator(images.device).manual_seed(seed)
    with state.ema.average_parameters(state.model) if ema else contextlib.nullcontext():
        losses = [loss_fn(state, batch, generator) for batch in images.split(EVAL_BATCH)]
    return torch.stack(losses).double().cpu().numpy()


def mean_se(values):
    """(mean, standard error) of a 1-D array."""
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def compare_tail(losses):
    """The last TAIL steps of both runs: means, noise and the paired difference."""
    a, b = losses["fp32"][-TAIL:], losses["bf16"][-TAIL:]
    diff = b - a
    return dict(fp32=mean_se(a), bf16=mean_se(b), noise_std=float(a.std(ddof=1)),
                paired_diff=mean_se(diff), paired_diff_std=float(diff.std(ddof=1)),
                first_max_abs_diff=float(abs(losses["bf16"][:FIRST] - losses["fp32"][:FIRST]).max()))


def compare_held_out(held):
    """For 'raw' and 'ema' weights: both models' held-out means ± SE and their paired difference ± SE."""
    rows = {}
    for weights in ("raw", "ema"):
        a, b = held[f"fp32_{weights}"], held[f"bf16_{weights}"]
        rows[weights] = dict(fp32=mean_se(a), bf16=mean_se(b), paired_diff=mean_se(b - a))
    return rows


def moving(values, window=WINDOW):
    """(moving average, moving std) over `window` consecutive values, each [len − window + 1]."""
    windows = np.lib.stride_tricks.sliding_window_view(values, window)
    return windows.mean(1), windows.std(1, ddof=1)


def plot(path, losses, every=5):
    """Both loss curves' moving averages, and |their difference| against fp32's step-to-step noise."""
    mean32, std32 = moving(losses["fp32"])
    mean16, _ = moving(losses["bf16"])
    steps = np.arange(WINDOW, len(losses["fp32"]) + 1)  # the window's last step, counted from 1
    keep = slice(None, None, every)

    def line(ys):
        return steps[keep].tolist(), ys[keep].tolist()

    panels = {f"training loss, moving average over {WINDOW} steps": {"fp32": line(mean32),
                                                                      "bf16": line(mean16)},
              "bf16 vs fp32 against the noise": {"|bf16 - fp32| of the averages": line(abs(mean16 - mean32)),
                                                 f"fp32 std over {WINDOW} steps": line(std32),
                                                 f"std / sqrt({WINDOW}): noise of an average":
                                                 line(std32 / math.sqrt(WINDOW))}}
    path.parent.mkdir(parents=True, exist_ok=True)
    loglog_png(path, panels, panel_size=(520, 380), xlabel="training step", ylabel="loss",
               xticks=[25, 50, 100, 200, 500])


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else platform.processor() or platform.machine()


def print_row(name, a, b, diff):
    """One table row: two (mean, SE) cells and the paired difference's."""
    print(f"{name:<30} {a[0]:>8.4f} ± {a[1]:.4f} {b[0]:>8.4f} ± {b[1]:.4f}   "
          f"{diff[0]:>+9.2e} ± {diff[1]:.2e}")


def print_summary(tail, held, seconds):
    """The comparison table; returns whether the runs agree within the step-to-step noise."""
    d, noise = tail["paired_diff"], tail["noise_std"]
    print(f"first {FIRST} steps (nearly equal weights; same batches, t, z): max |bf16 - fp32| = "
          f"{tail['first_max_abs_diff']:.2e}")
    print(f"{'mean ± standard error':<30} {'fp32':>17} {'bf16':>17}   {'bf16 - fp32 (paired)':>21}")
    print_row(f"training loss, last {TAIL} steps", tail["fp32"], tail["bf16"], d)
    for weights, row in held.items():
        print_row(f"held-out loss, {weights} weights", row["fp32"], row["bf16"], row["paired_diff"])
    print(f"{'wall time, s':<30} {seconds['fp32']:>17.1f} {seconds['bf16']:>17.1f}")
    print(f"step-to-step noise (std of the fp32 losses, last {TAIL} steps): {noise:.4f}; std of the paired "
          f"differences: {tail['paired_diff_std']:.2e}; |mean difference| / noise = {abs(d[0]) / noise:.2e}")
    agree = abs(d[0]) < noise
    print(f"agree within step-to-step noise: {'yes' if agree else 'NO'}")
    return agree


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 steps, 200 held-out images, written beside the full run's")
    parser.add_argument("--replot", type=Path, default=None, help="draw --png from a results JSON and stop")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--nf", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--heldout", type=int, default=1000)
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None, help="default docs/img/bf16_parity.png")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.heldout = 100, 200
    args.quick_suffix = "_quick" if args.quick else ""
    args.png = args.png or (ROOT / "benchmarks" / "results" / "bf16_parity_quick.png" if args.quick
                            else ROOT / "docs" / "img" / "bf16_parity.png")
    if args.steps < TAIL:
        parser.error(f"--steps must be at least {TAIL} (the compared tail), got {args.steps}")
    return args


def main():
    args = parse_args()
    if args.replot:
        return replot(args.replot, args.png, lambda results, png: plot(png, {
            precision: np.asarray(values) for precision, values in results["losses"].items()}))
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true fp32 rows
    config = small_config(args)
    sde = run_lib.build_sde(config)
    train_images, held_images = load_images(config, device)
    held_images = held_images[:args.heldout]
    order_gen = torch.Generator().manual_seed(config.seed)
    order = list(itertools.islice(data.index_batches(len(train_images), args.batch, order_gen, shuffle=True,
                                                     drop_last=True), args.steps))
    losses, seconds, held = {}, {}, {}
    for precision in PRECISIONS:
        state, losses[precision], seconds[precision] = train(config, sde, train_images, order, precision,
                                                             device)
        for weights in ("raw", "ema"):
            held[f"{precision}_{weights}"] = held_out_losses(state, config, sde, held_images, config.seed + 1,
                                                             ema=weights == "ema")
        print(f"{precision}: {args.steps} steps in {seconds[precision]:.1f} s", flush=True)
    tail, held_rows = compare_tail(losses), compare_held_out(held)
    agree = print_summary(tail, held_rows, seconds)
    plotted = have_matplotlib()
    if plotted:
        plot(args.png, losses)
    out = args.out or ROOT / "benchmarks" / "results" / f"bf16_parity_{device.type}{args.quick_suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(date=datetime.date.today().isoformat(), device=device_name(device), torch=torch.__version__,
                threads=torch.get_num_threads(), steps=args.steps, batch=args.batch, nf=args.nf,
                lr=args.lr, warmup=config.optim.warmup, num_res_blocks=config.model.num_res_blocks,
                ema_rate=config.model.ema_rate, dropout=config.model.dropout,
                heldout=len(held_images), eval_batch=EVAL_BATCH, tail=TAIL, seed=config.seed,
                config="vp_mnist_ddpmpp_continuous")
    result = dict(meta=meta, wall_seconds=seconds, tail=tail, held_out=held_rows, agree=agree,
                  held_out_batches={k: v.tolist() for k, v in held.items()},
                  losses={k: v.tolist() for k, v in losses.items()})
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}; {args.png if plotted else NO_PLOT}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
