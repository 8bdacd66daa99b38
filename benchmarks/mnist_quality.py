"""Sample quality per CPU-minute on real data: MNIST trained for a fixed time, judged by MNIST-FID.

The shared MNIST folder holds the 10,000-image test split only. Its first 5,000 images are the training
set (of the diffusion model and of the MNIST classifier whose features give MNIST-FID); the other 5,000
are held out: the reference statistics, and the classifier's judge. Steps, all through main.py:

1. the MNIST classifier (score_sde/mnist_classifier.py), trained unless the workdir has it;
2. `--mode stats` of the held-out 5,000 (features kept, for KID);
3. `--mode train` of the config (default vp_mnist_mlp) for --minutes, stopped by a signal; the model is
   the last resume point (written every snapshot_freq_for_preemption steps);
4. `--mode eval` of --samples samples with each sampler: PC (N = 1000, reverse diffusion + Langevin), the
   adaptive probability-flow ODE, and the fast solvers at 10 / 20 / 50 NFE; the same for the untrained
   network (the ceiling), and the FID of as many held-out-free training images (the floor).

Reported per row: MNIST-FID and KID against the held-out 5,000, IS (10 splits), the histogram of predicted
digits, NFE per sample and wall time; a PNG grid of 64 samples per sampler under the workdir.

Run:
    .venv/bin/python benchmarks/mnist_quality.py            # 20 minutes of training, then sampling
    .venv/bin/python benchmarks/mnist_quality.py --quick    # 1 minute, 100 samples, N = 100: a smoke run
Options: --minutes, --samples, --config, --workdir (default runs/bench_mnist), --mnist (default
../shared/data/mnist), --out (default benchmarks/results/mnist_quality.json).
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import configs  # noqa: E402  (the repository root is on the path only now)
import run_lib  # noqa: E402
from score_sde import evaluation, mnist_classifier  # noqa: E402
from score_sde import train as training  # noqa: E402
from score_sde.features import MNISTFeatures  # noqa: E402

HELD_OUT = 5000


def samplers(quick):
    """(name, overrides) of every sampler to judge."""
    pc_levels = 100 if quick else 1000
    rows = [("pc_langevin", ["--config.sampling.method=pc", "--config.sampling.predictor=reverse_diffusion",
                             "--config.sampling.corrector=langevin",
                             f"--config.model.num_scales={pc_levels}"]),
            ("ode_rk45", ["--config.sampling.method=ode"])]
    for solver, steps in [("adams_pc", 10), ("adams_pc", 20), ("dpmpp_2m", 20), ("adams_pc", 50)]:
        rows.append((f"{solver}_{steps}", ["--config.sampling.method=fast",
                                            f"--config.sampling.solver={solver}",
                                            f"--config.sampling.steps={steps}"]))
    return rows


def write_idx(path, array):
    """An idx file (the MNIST format) holding a uint8 array [N, ...]."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def split_mnist(mnist_dir, folder):
    """folder with train-* = the first 5,000 test images and t10k-* = the other 5,000 (uncompressed idx)."""
    images, labels = mnist_classifier.load_mnist(mnist_dir)
    pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, part in (("train", slice(0, HELD_OUT)), ("t10k", slice(HELD_OUT, None))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", pixels[part])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels[part].numpy().astype(np.uint8))
    return pixels


def main_py(mode, config, workdir, overrides, quiet=True):
    args = [sys.executable, str(ROOT / "main.py"), f"--mode={mode}", f"--config={config}",
            f"--workdir={workdir}", *overrides]
    result = subprocess.run(args, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), capture_output=quiet,
                            text=True)
    if result.returncode:
        sys.stderr.write((result.stderr or "")[-3000:])
        result.check_returncode()
    return result


def train_for(config, workdir, overrides, minutes):
    """main.py --mode train, stopped after `minutes`; returns the resume point and the steps it holds."""
    args = [sys.executable, str(ROOT / "main.py"), "--mode=train", f"--config={config}",
            f"--workdir={workdir}", "--config.training.n_iters=100000000", *overrides]
    process = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60 * minutes
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    process.send_signal(signal.SIGKILL)  # as a pre-empted job: the resume point on disk is what counts
    process.wait()
    checkpoint = Path(workdir) / "checkpoints-meta" / "checkpoint.pth"
    if not checkpoint.is_file():
        raise RuntimeError(f"training wrote no resume point in {minutes} minutes")
    return checkpoint, torch.load(checkpoint, map_location="cpu", weights_only=True)["step"]


def evaluate(config, checkpoint, folder, common, extra):
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    main_py("eval", config, folder, [*common, *extra, f"--checkpoint={checkpoint}"])
    seconds = time.perf_counter() - start
    results = json.loads((folder / "eval" / "results.json").read_text())
    samples = next(iter(results.values()))["samples"]
    shutil.copy(next((folder / "eval").glob("ckpt_*/samples.png")), folder.parent / f"{folder.name}.png")
    return dict(samples, seconds=seconds)


def data_floor(pixels, classifier, reference, num, seed=0):
    """FID / KID / IS of `num` training images (never held out) against the held-out statistics."""
    order = np.random.default_rng(seed).permutation(HELD_OUT)[:num]
    features, probabilities = MNISTFeatures(path=classifier)(torch.from_numpy(pixels[order][:, None]))
    quality = evaluation.sample_quality(features.numpy(), probabilities.numpy(), reference)
    return dict(quality, nfe=0, seconds=0.0)


def untrained_checkpoint(config_name, path):
    """A checkpoint of the freshly initialised network (step 0), for the ceiling."""
    training.save_checkpoint(path, run_lib.build_state(configs.load_config(config_name)))
    return path


def print_row(name, row):
    digits = " ".join(f"{n:3d}" for n in row["predicted_classes"])
    print(f"{name:<22} {row['fid']:>8.2f} {row['kid']:>9.4g} {row['inception_score']:>5.2f} "
          f"{row['nfe']:>5} {row['seconds']:>7.0f}  {digits}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="vp_mnist_mlp")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_mnist")
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mnist_quality.json")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.samples = 1.0, 100
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    classifier = work / "mnist_classifier.pth"
    if classifier.is_file():
        images, labels = mnist_classifier.load_mnist(args.mnist)
        accuracy = mnist_classifier.accuracy(mnist_classifier.load_classifier(classifier), images[HELD_OUT:],
                                             labels[HELD_OUT:])
    else:
        accuracy = mnist_classifier.main(["--mnist", str(args.mnist), "--out", str(classifier)])
    pixels = split_mnist(args.mnist, work / "data")
    batch = min(500, args.samples)
    common = [f"--config.data.root={work / 'data'}", "--config.eval.features=mnist",
              f"--config.eval.mnist_classifier={classifier}", f"--config.eval.stats={work / 'heldout.npz'}",
              "--config.eval.stats_split=test", "--config.eval.stats_features=True",
              f"--config.eval.batch_size={batch}", f"--config.eval.num_samples={args.samples}",
              "--config.eval.enable_loss=False", "--config.eval.enable_sampling=True"]
    main_py("stats", args.config, work, common)
    reference = dict(np.load(work / "heldout.npz"))
    rows = {"data (floor)": data_floor(pixels, classifier, reference, args.samples)}
    print(f"{'sampler':<22} {'MNIST-FID':>8} {'KID':>9} {'IS':>5} {'NFE':>5} {'seconds':>7}  "
          "predicted digits 0-9")
    print_row("data (floor)", rows["data (floor)"])
    ceiling = untrained_checkpoint(args.config, work / "untrained.pth")
    rows["untrained (ceiling)"] = evaluate(args.config, ceiling, work / "untrained", common,
                                           samplers(args.quick)[3][1])
    print_row("untrained (ceiling)", rows["untrained (ceiling)"])
    shutil.rmtree(work / "train", ignore_errors=True)
    every = 50 if args.quick else 250  # resume points: the model is the last one before the deadline
    checkpoint, steps = train_for(args.config, work / "train",
                                  [*common, f"--config.training.snapshot_freq_for_preemption={every}",
                                   "--config.training.snapshot_sampling=False"],  # the budget is for training
                                  args.minutes)
    print(f"trained {steps} steps in {args.minutes:g} minutes", flush=True)
    for name, extra in samplers(args.quick):
        rows[name] = evaluate(args.config, checkpoint, work / name, common, extra)
        print_row(name, rows[name])
    meta = dict(date=datetime.date.today().isoformat(), config=args.config, minutes=args.minutes,
                steps=steps, samples=args.samples, classifier_accuracy=accuracy, cpus=os.cpu_count(),
                threads=torch.get_num_threads())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"-> {args.out}; sample grids in {work}/<sampler>.png")


if __name__ == "__main__":
    main()
