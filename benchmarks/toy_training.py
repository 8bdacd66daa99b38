"""The toy configs trained for real through main.py, and how close they get to the known data distribution.

For each of vp_toy, subvp_toy and ve_toy (a residual MLP on 0.2·N((−5, −5), I) + 0.8·N((5, 5), I)):
`main.py --mode train` from scratch (wall time measured, one CPU thread, snapshot sampling included), then
`--mode sample` (2,000 points with the config's sampler) and `--mode likelihood` (1,000 fresh held-out points
through the probability-flow ODE). Reported, in nats:
- the exact mean log-density of the samples under the mixture, next to that of as many data points;
- the model's mean log-likelihood of the held-out points ± its standard error, next to their exact mean
  log-density.
The acceptance criteria (issue 4): training ≤ 120 s, and both differences within 0.1 nats.

Run:
    .venv/bin/python benchmarks/toy_training.py                       # all three, about 3 minutes
    .venv/bin/python benchmarks/toy_training.py --quick               # vp_toy alone, about a minute
    .venv/bin/python benchmarks/toy_training.py --configs ve_toy -- --config.sampling.corrector=langevin
Arguments after `--` are passed to every main.py call (config overrides). Options: --workdir (default
runs/bench_toys; each config trains afresh in its own folder), --out (default
benchmarks/results/toy_training.json).
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("vp_toy", "subvp_toy", "ve_toy")
TOLERANCE = 0.1  # nats
TIME_LIMIT = 120.0  # seconds of training


def main_py(mode, config, workdir, overrides):
    """Run main.py; its stdout. Raises CalledProcessError (with the output shown) if it fails."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    args = [sys.executable, str(ROOT / "main.py"), f"--mode={mode}", f"--config={config}",
            f"--workdir={workdir}", *overrides]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr[-3000:])
        result.check_returncode()
    return result.stdout


def measure(config, workdir, overrides):
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    main_py("train", config, workdir, overrides)
    train_seconds = time.perf_counter() - start
    main_py("sample", config, workdir, ["--config.eval.batch_size=2000", *overrides])
    quality = json.loads((workdir / "samples" / "samples.json").read_text())
    main_py("likelihood", config, workdir, ["--config.eval.batch_size=1000", *overrides])
    likelihood = json.loads((workdir / "likelihood" / "summary.json").read_text())
    row = dict(config=config, train_seconds=train_seconds, samples_nats=quality["samples_nats"],
               data_nats=quality["data_nats"], heldout_model_nats=likelihood["mean"],
               heldout_model_stderr=likelihood["stderr"], heldout_exact_nats=likelihood["exact_mean"])
    row["samples_gap"] = row["samples_nats"] - row["data_nats"]
    row["likelihood_gap"] = row["heldout_model_nats"] - row["heldout_exact_nats"]
    row["passes"] = (train_seconds <= TIME_LIMIT and abs(row["samples_gap"]) <= TOLERANCE
                     and abs(row["likelihood_gap"]) <= TOLERANCE)
    return row


def print_row(r):
    print(f"{r['config']:<10} {r['train_seconds']:>7.1f}  {r['samples_nats']:>8.3f} {r['data_nats']:>8.3f} "
          f"{r['samples_gap']:>+7.3f}  {r['heldout_model_nats']:>8.3f} ± {r['heldout_model_stderr']:.3f} "
          f"{r['heldout_exact_nats']:>8.3f} {r['likelihood_gap']:>+7.3f}  {'yes' if r['passes'] else 'NO'}",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=None, help=f"default all of {list(CONFIGS)}")
    parser.add_argument("--quick", action="store_true", help="vp_toy alone, into a separate --out")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_toys")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "toy_training.json")
    parser.add_argument("overrides", nargs="*", help="config overrides for every main.py call (after --)")
    args = parser.parse_args()
    args.configs = args.configs or (["vp_toy"] if args.quick else list(CONFIGS))
    if args.quick and args.out == parser.get_default("out"):  # a smoke run keeps the full run's results
        args.out = args.out.with_name("toy_training_quick.json")
    print(f"{'config':<10} {'train s':>7}  {'samples':>8} {'data':>8} {'gap':>7}  {'model held-out':>16} "
          f"{'exact':>8} {'gap':>7}  within 0.1 nats, ≤ 120 s")
    rows = []
    for config in args.configs:
        rows.append(measure(config, args.workdir / config, args.overrides))
        print_row(rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(date=datetime.date.today().isoformat(), machine=platform.processor() or platform.machine(),
                cpus=os.cpu_count(), threads=1, overrides=args.overrides, quick=args.quick)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"-> {args.out}")
    return 0 if all(row["passes"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
