"""Class-conditional generation trained for real on the 2-D toy mixture, against the exact answers (issue 18).

The data: 0.2·N((−5, −5), I) + 0.8·N((5, 5), I) (vp_toy), whose component is the class. Three trainings
through main.py, each of --steps steps (default 20,000; --quick: 1,500; vp_toy's own 5,001 leave the null
class, trained on a tenth of the items, too rough for w = 1, which doubles its error):
- a class-conditional MLP (model.num_classes = 2, training.class_dropout = 0.1);
- the unconditional vp_toy MLP, and its noise-conditional classifier (--mode train_classifier).

Then, per class k, --samples samples with the config's sampler (PC: reverse diffusion + annealed Langevin,
N = 1,000), on one seed:
- conditional (w = 0): the fraction of the samples whose most responsible component is k (target ≥ 0.98);
- classifier-free guidance at w = 1: the per-class mean and std of the trained network's samples against
  those of the same guided sampler run on the mixture's exact conditional and unconditional scores (targets:
  mean within 0.1, std within 10 %);
- classifier guidance (scale 1) of the unconditional network by the trained classifier: the fraction in
  component k, and its mean and std against the exact component's.

Run:
    .venv/bin/python benchmarks/class_conditional.py           # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/class_conditional.py --quick   # a smoke run, 2 minutes: 1,500 steps and 500
                                                               # samples, too few for the targets
Options: --steps, --samples (default 2000), --workdir (default runs/bench_class_conditional), --out (default
benchmarks/results/class_conditional[_quick].json).
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import score_sde  # noqa: E402  (the repository root is on the path only now)
from score_sde import api, data  # noqa: E402
from score_sde.guidance import classifier_free_guidance, classifier_guidance  # noqa: E402

MEAN_TOLERANCE, STD_TOLERANCE, IN_COMPONENT = 0.1, 0.10, 0.98


def main_py(mode, workdir, overrides):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    args = [sys.executable, str(ROOT / "main.py"), f"--mode={mode}", "--config=vp_toy",
            f"--workdir={workdir}", "--config.training.snapshot_sampling=False", *overrides]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr[-3000:])
        result.check_returncode()
    return result.stdout


def draw(model, score_fn, n, seed):
    """n samples by the config's sampler (its knobs) from score_fn, on a fixed seed."""
    sampler = api.SAMPLERS[model.config.sampling.method]
    x, _ = sampler(model.sde, score_fn, (n, 2), generator=torch.Generator().manual_seed(seed),
                   **api.sampler_kwargs(model.config))
    return x.double()


def summary(x, k, mixture):
    """The fraction of x in component k, and x's mean and std per coordinate."""
    return dict(in_component=float((mixture.responsibilities(x).argmax(1) == k).double().mean()),
                mean=x.mean(0).tolist(), std=x.std(0).tolist())


def compare(row, reference):
    """Largest mean difference and largest relative std difference of row against reference."""
    mean = max(abs(a - b) for a, b in zip(row["mean"], reference["mean"]))
    std = max(abs(a / b - 1) for a, b in zip(row["std"], reference["std"]))
    return dict(mean_error=mean, std_error=std)


def cfg_summary(model, cond_score_fn, k, w, n, mixture):
    """summary of n samples of class k by classifier-free guidance of cond_score_fn at weight w."""
    return summary(draw(model, classifier_free_guidance(cond_score_fn, torch.full((n,), k), w), n, k), k,
                   mixture)


def evaluate(conditional, unconditional, classifier_fn, mixture, n):
    """Per class: the conditional, guided and classifier-guided rows and the exact references."""
    exact_cond = mixture.conditional_score_fn(conditional.sde)
    rows = {}
    for k in range(2):
        labels = torch.full((n,), k)
        row = dict(conditional=cfg_summary(conditional, conditional.score_fn, k, 0.0, n, mixture))
        guided = cfg_summary(conditional, conditional.score_fn, k, 1.0, n, mixture)
        exact_guided = cfg_summary(conditional, exact_cond, k, 1.0, n, mixture)
        row.update(guided_w1=guided, exact_guided_w1=exact_guided, w1_vs_exact=compare(guided, exact_guided))
        by_classifier = summary(draw(unconditional, classifier_guidance(unconditional.score_fn, classifier_fn,
                                                                        labels), n, k), k, mixture)
        component = dict(mean=mixture.means[k].tolist(), std=[float(mixture.stds[k])] * 2)
        row.update(classifier_guided=by_classifier, classifier_vs_component=compare(by_classifier, component))
        rows[str(k)] = row
    return rows


def verdict(rows):
    ok = all(r["conditional"]["in_component"] >= IN_COMPONENT
             and r["w1_vs_exact"]["mean_error"] <= MEAN_TOLERANCE
             and r["w1_vs_exact"]["std_error"] <= STD_TOLERANCE for r in rows.values())
    return "PASS" if ok else "FAIL"


def print_rows(rows):
    print(f"{'class':<6} {'w=0 in k':>9} {'w=1 mean err':>13} {'w=1 std err':>12} {'clf in k':>9} "
          f"{'clf mean err':>13} {'clf std err':>12}")
    for k, r in rows.items():
        print(f"{k:<6} {r['conditional']['in_component']:>9.4f} {r['w1_vs_exact']['mean_error']:>13.4f} "
              f"{r['w1_vs_exact']['std_error']:>12.4f} {r['classifier_guided']['in_component']:>9.4f} "
              f"{r['classifier_vs_component']['mean_error']:>13.4f} "
              f"{r['classifier_vs_component']['std_error']:>12.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=20000, help="training steps of each network")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_class_conditional")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = 1500 if args.quick else args.steps
    args.samples = 500 if args.quick else args.samples
    suffix = "_quick" if args.quick else ""
    out = args.out or ROOT / "benchmarks" / "results" / f"class_conditional{suffix}.json"
    shutil.rmtree(args.workdir, ignore_errors=True)
    common = [f"--config.training.n_iters={steps}", f"--config.classifier.n_iters={steps}",
              "--config.classifier.batch_size=256"]
    seconds = {}
    for name, mode, extra in (("conditional", "train", ["--config.model.num_classes=2"]),
                              ("unconditional", "train", []), ("classifier", "train_classifier", [])):
        start = time.perf_counter()
        workdir = args.workdir / ("conditional" if name == "conditional" else "unconditional")
        main_py(mode, workdir, [*common, *extra])
        seconds[name] = time.perf_counter() - start
        print(f"trained {name} ({steps} steps) in {seconds[name]:.0f} s", flush=True)
    conditional = score_sde.load(args.workdir / "conditional", device="cpu")
    unconditional = score_sde.load(args.workdir / "unconditional", device="cpu")
    _, classifier_fn = api.load_classifier(args.workdir / "unconditional", unconditional.config,
                                           torch.device("cpu"))
    mixture = data.toy_distribution("gaussian_mixture")
    rows = evaluate(conditional, unconditional, classifier_fn, mixture, args.samples)
    print_rows(rows)
    result = verdict(rows) + (" (--quick: a smoke run, too short for the targets)" if args.quick else "")
    print(f"{result}: w = 0 in component ≥ {IN_COMPONENT}; w = 1 against the exact guided sampler: mean "
          f"within {MEAN_TOLERANCE}, std within {STD_TOLERANCE:.0%}")
    meta = dict(date=datetime.date.today().isoformat(), steps=steps, samples=args.samples,
                train_seconds=seconds, cpus=os.cpu_count(), verdict=result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, classes=rows), indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
