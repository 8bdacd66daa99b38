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
digits, NFE per sample and wall time; a PNG grid of 64 samples per sampler under the workdir. Per config
also: the learning curve (MNIST-FID of adams_pc on logsnr at 20 NFE at a third, two thirds and all of
the budget) and held-out bits/dim, by the probability-flow ODE and by the DSM bound (docs/training.md),
over the first --bpd-items held-out images; with --compare, also their difference image by image (a
paired difference, with its standard error).

Run:
    .venv/bin/python benchmarks/mnist_quality.py            # 30 minutes of training, then sampling
    .venv/bin/python benchmarks/mnist_quality.py --config vp_mnist_unet --compare vp_mnist_mlp \
        --samplers adams_pc_10,adams_pc_20,dpmpp_2m_20,adams_pc_50       # issue 15's quality comparison
    .venv/bin/python benchmarks/mnist_quality.py --config vp_mnist_mlp_likelihood \
        --compare vp_mnist_mlp_likelihood --compare-set training.t_sampling=uniform --samplers=  # bits/dim
    .venv/bin/python benchmarks/mnist_quality.py --quick    # 1 minute, 100 samples, N = 100: a smoke run
    .venv/bin/python benchmarks/mnist_quality.py --config vp_mnist_unet --conditional  # issue 18's proof

With --conditional the network is class-conditional (model.num_classes = 10, training.class_dropout 0.1,
trained on the labels of the first 5,000 images), and the rows are classifier-free guidance at each weight of
--weights (default 0, 0.5, 1, 2, 4) with adams_pc on logsnr at 20 steps, the samples spread evenly over
the ten digits (sampling.class_label='all'): beside MNIST-FID, the held-out classifier's accuracy on the
samples of each digit. A PNG with one row per digit (w = 1) is written by --mode sample.
Options: --minutes, --samples, --config, --set KNOB=VALUE (repeatable), --compare, --compare-set
KNOB=VALUE, --samplers (comma-separated rows; empty: no sampling, no curve), --conditional, --weights,
--bpd-items (0: none),
--bound-times (draws of t per image for the bound, default 64), --reuse-training (evaluate what a finished
run of the same configs and budget left in --workdir: train/budget.json, instead of training again),
--workdir (default runs/bench_mnist), --mnist (default ../shared/data/mnist), --out (default
benchmarks/results/mnist_quality.json).
"""
import argparse
import ast
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


GUIDANCE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)


def guided_rows(weights):
    """(name, overrides) of the --conditional rows: classifier-free guidance at each weight, every digit."""
    return [(f"cfg_w{w:g}", ["--config.sampling.method=fast", "--config.sampling.solver=adams_pc",
                             "--config.sampling.schedule=logsnr", "--config.sampling.steps=20",
                             "--config.sampling.class_label=all",
                             f"--config.sampling.guidance={w}"]) for w in weights]


def samplers(quick):
    """(name, overrides) of every sampler to judge."""
    pc_levels = 100 if quick else 1000
    rows = [("pc_langevin", ["--config.sampling.method=pc", "--config.sampling.predictor=reverse_diffusion",
                             "--config.sampling.corrector=langevin",
                             f"--config.model.num_scales={pc_levels}"]),
            ("ode_rk45", ["--config.sampling.method=ode"])]
    # the grid is named: these rows (and the results in docs/) predate the per-SDE default grids
    for solver, steps in [("adams_pc", 10), ("adams_pc", 20), ("dpmpp_2m", 20), ("adams_pc", 50)]:
        rows.append((f"{solver}_{steps}", ["--config.sampling.method=fast",
                                            f"--config.sampling.solver={solver}",
                                            "--config.sampling.schedule=logsnr",
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


def train_for(config, workdir, overrides, minutes, marks=(1 / 3, 2 / 3)):
    """main.py --mode train, stopped after `minutes`; returns [(minutes, resume point, steps)] at each mark
    (a fraction of the budget: the resume point then, copied aside) and at the end."""
    args = [sys.executable, str(ROOT / "main.py"), "--mode=train", f"--config={config}",
            f"--workdir={workdir}", "--config.training.n_iters=100000000", *overrides]
    process = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start, resume_point, points = time.monotonic(), Path(workdir) / "checkpoints-meta" / "checkpoint.pth", []
    try:
        for fraction in (*marks, 1.0):
            while process.poll() is None and time.monotonic() < start + 60 * minutes * fraction:
                time.sleep(1)
            if not resume_point.is_file():
                raise RuntimeError(f"training wrote no resume point in {minutes * fraction:g} minutes")
            kept = resume_point.with_name(f"at_{fraction:.2f}.pth")
            shutil.copy(resume_point, kept)
            steps = torch.load(kept, map_location="cpu", weights_only=True)["step"]
            points.append((minutes * fraction, kept, steps))
    finally:  # also when the budget ends without a resume point: no training left running
        process.send_signal(signal.SIGKILL)  # as a pre-empted job: the resume point on disk is what counts
        process.wait()
    return points


def finished_training(train, budget):
    """--reuse-training: the [(minutes, checkpoint, steps)] that a finished training of this very label and
    budget left in `train` (its budget.json, written when the budget ran out); refused otherwise."""
    path = train / "budget.json"
    if not path.is_file():
        raise SystemExit(f"error: --reuse-training: no {path}: no training of this budget finished there")
    saved = json.loads(path.read_text())
    if {key: saved[key] for key in budget} != budget:
        raise SystemExit(f"error: --reuse-training: {train} holds {saved['label']!r} trained for "
                         f"{saved['minutes']:g} minutes, not {budget['label']!r} for {budget['minutes']:g}")
    return [(minutes, train / "checkpoints-meta" / name, steps) for minutes, name, steps in saved["points"]]


def evaluate(config, checkpoint, folder, common, extra):
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    main_py("eval", config, folder, [*common, *extra, f"--checkpoint={checkpoint}"])
    seconds = time.perf_counter() - start
    results = json.loads((folder / "eval" / "results.json").read_text())
    samples = next(iter(results.values()))["samples"]
    shutil.copy(next((folder / "eval").glob("ckpt_*/samples.png")), folder.parent / f"{folder.name}.png")
    return dict(samples, seconds=seconds)


def held_out_bits_per_dim(config, checkpoint, folder, common, items, bound_times):
    """Bits/dim of the first `items` held-out images by the probability-flow ODE and by the DSM bound
    (bound_times draws of t per image), each as {mean, stderr, count}, or {error} when that eval failed (an
    MLP's PF-ODE can run away where the network extrapolates badly): one failure does not lose the other."""
    settings = {"bound": ["--config.eval.enable_bound=True", f"--config.eval.bound_num_times={bound_times}"],
                "likelihood": ["--config.eval.enable_bpd=True"]}
    bits = {}
    for name, extra in settings.items():
        shutil.rmtree(folder / name, ignore_errors=True)
        try:
            main_py("eval", config, folder / name, [*common, "--config.eval.enable_sampling=False", *extra,
                                                    "--config.eval.bpd_dataset=test",
                                                    f"--config.eval.bpd_num_items={items}",
                                                    f"--checkpoint={checkpoint}"])
        except subprocess.CalledProcessError as failure:
            bits[name] = {"error": (failure.stderr or "").strip().splitlines()[-1:] or ["failed"]}
            continue
        results = next(iter(json.loads((folder / name / "eval" / "results.json").read_text()).values()))
        bits[name] = {key: results[name][key] for key in ("mean", "stderr", "count")}
        saved = folder / name / "likelihood" / "values.npz" if name == "likelihood" else next(
            (folder / name / "eval").glob("ckpt_*/bound_values.npz"))
        bits[name]["values"] = np.load(saved)["values"].tolist()  # per image, for paired differences
    return bits


def paired_difference(first, second):
    """Mean and standard error of first − second over the same held-out images, image by image: the
    image-to-image spread of bits/dim, which both share, cancels (the bound also draws the same t and noise
    per image, as both evals use the same seed)."""
    differences = np.asarray(first["values"]) - np.asarray(second["values"])
    return differences.mean(), differences.std(ddof=1) / np.sqrt(len(differences))


def describe_bits(bits):
    return ", ".join(f"{name} {v['mean']:.3f} ± {v['stderr']:.3f} ({v['count']} images)" if "error" not in v
                     else f"{name} failed: {v['error'][0]}" for name, v in bits.items())


def data_floor(pixels, classifier, reference, num, seed=0):
    """FID / KID / IS of `num` training images (never held out) against the held-out statistics."""
    order = np.random.default_rng(seed).permutation(HELD_OUT)[:num]
    features, probabilities = MNISTFeatures(path=classifier)(torch.from_numpy(pixels[order][:, None]))
    quality = evaluation.sample_quality(features.numpy(), probabilities.numpy(), reference)
    return dict(quality, nfe=0, seconds=0.0)


def knob_flags(settings):
    """`--set knob=value` settings as main.py's `--config.knob=value` flags."""
    return [f"--config.{setting}" for setting in settings]


def with_settings(config, settings):
    """config with `knob=value` settings applied (values read as Python literals, else as strings)."""
    for setting in settings:
        knob, _, text = setting.partition("=")
        *path, leaf = knob.split(".")
        node = config
        for part in path:
            node = node[part]
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        node[leaf] = value
    return config


def untrained_checkpoint(config_name, settings, path):
    """A checkpoint of the freshly initialised network (step 0), for the ceiling."""
    config = with_settings(configs.load_config(config_name), settings)
    training.save_checkpoint(path, run_lib.build_state(config))
    return path


def print_row(name, row):
    digits = " ".join(f"{n:3d}" for n in row["predicted_classes"])
    accuracy = ""
    if "per_class_accuracy" in row:
        per_class = " ".join(f"{row['per_class_accuracy'][k]:.2f}" for k in sorted(row["per_class_accuracy"]))
        accuracy = f"  class accuracy {row['class_accuracy']:.3f} (per digit {per_class})"
    print(f"{name:<22} {row['fid']:>8.2f} {row['kid']:>9.4g} {row['inception_score']:>5.2f} "
          f"{row['nfe']:>5} {row['seconds']:>7.0f}  {digits}{accuracy}", flush=True)


def benchmark_config(args, config, settings, work, common, floor):
    """Train `config` (with `settings`, knob=value) for the budget and judge it with the samplers named in
    --samplers: {'rows', 'curve', 'bits_per_dim', 'steps'}. Without samplers there is no curve; with
    --bpd-items 0 no bits/dim."""
    common = [*common, *knob_flags(settings)]
    label = " ".join([config, *settings])
    chosen = [(name, extra) for name, extra in samplers(args.quick) if name in args.samplers]
    default = samplers(args.quick)[3]  # adams_pc at 20 NFE on logsnr, the default fast solver until issue 19
    if args.conditional:
        chosen = guided_rows(args.weights)
        default = next((row for row in chosen if row[0] == "cfg_w1"), chosen[0])
    rows = {}
    if chosen:
        print(f"{'sampler':<22} {'MNIST-FID':>8} {'KID':>9} {'IS':>5} {'NFE':>5} {'seconds':>7}  "
              f"predicted digits 0-9   [{label}]")
        rows["data (floor)"] = floor
        print_row("data (floor)", floor)
        ceiling = untrained_checkpoint(config, settings, work / "untrained.pth")
        rows["untrained (ceiling)"] = evaluate(config, ceiling, work / "untrained", common, default[1])
        print_row("untrained (ceiling)", rows["untrained (ceiling)"])
    budget = dict(label=label, minutes=args.minutes)
    if args.reuse_training:
        points = finished_training(work / "train", budget)
    else:
        shutil.rmtree(work / "train", ignore_errors=True)
        every = 50 if args.quick else 250  # resume points: the model is the last one before the deadline
        points = train_for(config, work / "train",
                           [*common, f"--config.training.snapshot_freq_for_preemption={every}",
                            "--config.training.snapshot_sampling=False"],  # the budget is for training
                           args.minutes)
        (work / "train" / "budget.json").write_text(json.dumps(
            dict(budget, points=[(m, path.name, n) for m, path, n in points])))
    minutes, checkpoint, steps = points[-1]
    print(f"[{label}] {'reused the training of' if args.reuse_training else 'trained'} {steps} steps in "
          f"{minutes:g} minutes", flush=True)
    for name, extra in chosen:
        rows[name] = evaluate(config, checkpoint, work / name, common, extra)
        print_row(name, rows[name])
    curve = []
    if chosen:
        curve = [dict(minutes=m, steps=n, fid=evaluate(config, path, work / f"curve_{m:g}", common,
                                                       default[1])["fid"]) for m, path, n in points[:-1]]
        final = rows.get(default[0]) or evaluate(config, checkpoint, work / default[0], common, default[1])
        curve.append(dict(minutes=minutes, steps=steps, fid=final["fid"]))
        print("learning curve (MNIST-FID, " + default[0] + "): " + ", ".join(
            f"{c['minutes']:.1f} min {c['steps']} steps {c['fid']:.1f}" for c in curve), flush=True)
    if args.conditional:
        grid = work / "digits"
        shutil.rmtree(grid, ignore_errors=True)
        main_py("sample", config, grid, [*common, *default[1], "--config.eval.batch_size=100",
                                         f"--checkpoint={checkpoint}"])
        shutil.copy(grid / "samples" / "sample.png", work / "digits.png")  # one row per digit
    bits = {}
    if args.bpd_items:
        bits = held_out_bits_per_dim(config, checkpoint, work / "bpd", common, args.bpd_items,
                                     args.bound_times)
        print(f"[{label}] held-out bits/dim: {describe_bits(bits)}", flush=True)
    return dict(rows=rows, curve=curve, bits_per_dim=bits, steps=steps)


def print_side_by_side(results):
    """One line per sampler: each config's MNIST-FID and NFE, then the curves and the bits/dim."""
    names = list(results)
    print("\n" + f"{'sampler':<22}" + "".join(f" {n[-24:]:>24}" for n in names))
    for row in results[names[0]]["rows"]:
        cells = [results[n]["rows"][row] for n in names]
        print(f"{row:<22}" + "".join(f" {c['fid']:>16.2f} ({c['nfe']:>5})" for c in cells))
    print(f"{'training steps':<22}" + "".join(f" {results[n]['steps']:>24}" for n in names))
    for kind in ("likelihood", "bound") if results[names[0]]["bits_per_dim"] else ():
        cells = [results[n]["bits_per_dim"][kind] for n in names]
        text = [f"{'failed':>24}" if "error" in c else f"{c['mean']:>16.3f} ± {c['stderr']:.3f}"
                for c in cells]
        print(f"{'bits/dim ' + kind:<22}" + "".join(f" {cell}" for cell in text))
        if (not any("error" in c for c in cells) and all("values" in c for c in cells)
                and len(cells[0]["values"]) == len(cells[1]["values"])):
            mean, stderr = paired_difference(cells[0], cells[1])
            print(f"{'  first − second':<22} {mean:>16.3f} ± {stderr:.3f}  (paired over the same "
                  f"{len(cells[0]['values'])} images: {abs(mean) / stderr:.1f} standard errors)")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="vp_mnist_mlp")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KNOB=VALUE",
                        help="a config setting for --config, e.g. model.nf=32 (repeatable)")
    parser.add_argument("--compare", default=None, help="a second config, trained after the first")
    parser.add_argument("--compare-set", dest="compare_settings", action="append", default=[],
                        metavar="KNOB=VALUE", help="a config setting for --compare (repeatable)")
    parser.add_argument("--samplers", default=",".join(name for name, _ in samplers(False)),
                        help="the sampler rows to judge, comma-separated; empty: none (no curve either)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--bpd-items", type=int, default=500)
    parser.add_argument("--bound-times", type=int, default=64, help="draws of t per image for the bound")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--conditional", action="store_true",
                        help="a class-conditional network, judged by classifier-free guidance at --weights")
    parser.add_argument("--weights", default=",".join(f"{w:g}" for w in GUIDANCE_WEIGHTS),
                        help="--conditional: the guidance weights w, comma-separated")
    parser.add_argument("--reuse-training", action="store_true",
                        help="evaluate the models a finished run of the same configs and budget left in "
                             "--workdir instead of training again")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_mnist")
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/mnist_quality[_conditional].json")
    args = parser.parse_args()
    args.weights = [float(w) for w in args.weights.split(",") if w]
    suffix = "_conditional" if args.conditional else ""
    args.out = args.out or ROOT / "benchmarks" / "results" / f"mnist_quality{suffix}.json"
    if args.conditional:
        args.settings = ["model.num_classes=10", "training.class_dropout=0.1", *args.settings]
    args.samplers = [name for name in args.samplers.split(",") if name]
    unknown = sorted(set(args.samplers) - {name for name, _ in samplers(False)})
    if unknown:
        parser.error(f"--samplers: unknown {unknown}; choose from {[name for name, _ in samplers(False)]}")
    if args.compare_settings and not args.compare:
        parser.error("--compare-set needs --compare")
    if args.quick:
        args.minutes, args.samples, args.bpd_items, args.bound_times = 1.0, 100, 10, 4
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
    floor = data_floor(pixels, classifier, reference, args.samples)
    results = {}
    runs = [(args.config, args.settings)] + ([(args.compare, args.compare_settings)] if args.compare else [])
    for index, (config, settings) in enumerate(runs):
        label = " ".join([config, *settings])
        if label in results:
            parser.error(f"--compare: {label!r} twice; give one of them other settings")
        results[label] = benchmark_config(args, config, settings, work / f"{index}_{config}", common, floor)
    if len(results) > 1:
        print_side_by_side(results)
    rows = args.samplers if not args.conditional else [name for name, _ in guided_rows(args.weights)]
    meta = dict(date=datetime.date.today().isoformat(), configs=list(results), minutes=args.minutes,
                samplers=rows, samples=args.samples, bpd_items=args.bpd_items,
                bound_times=args.bound_times, classifier_accuracy=accuracy,
                cpus=os.cpu_count(), threads=torch.get_num_threads())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, results=results), indent=2))
    print(f"-> {args.out}; sample grids in {work}/<config>/<sampler>.png")


if __name__ == "__main__":
    main()
