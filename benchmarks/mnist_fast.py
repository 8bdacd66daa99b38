"""MNIST-FID at 10 and 20 NFE: our fast solvers against k-diffusion's, from the same starting noise.

The model is the unconditional VP network that benchmarks/mnist_quality.py trained (--config vp_mnist_unet:
the last resume point in <workdir>/0_vp_mnist_unet/train/checkpoints-meta), judged as mnist_quality.py
judges it: MNIST-FID from our MNIST classifier's features (<workdir>/mnist_classifier.pth) against the
held-out 5,000 (<workdir>/heldout.npz). Nothing is trained here.

The starting noise z ~ p_T is drawn once (seeded, float32); every configuration starts from that same z at
each NFE of --nfe (default 10 and 20), in batches on the CPU:

  ours (--ours): fast_sample with `solver:schedule[:key=value...]` (e.g. adams_pc:logsnr:order=3), steps =
      NFE (NFE // 2 for the two-evaluation solvers heun and heun_churn); `default` is fast_sample with no
      solver or schedule given ("auto"; what that resolved to at each NFE is recorded, from
      fast.recommended_settings);
  k-diffusion (--peers): `name:schedule[:zero]` through benchmarks/peers.py on our grid time_grid(sde,
      schedule, steps, eps); with `zero` k-diffusion appends σ = 0 and its last step returns x̂₀, which
      costs an evaluation, so such rows take one step fewer for the same NFE.

Per configuration and NFE: MNIST-FID (with KID and the predicted digits in the JSON), the NFE actually
made, wall seconds, and the mean per-sample L2 distance (over the 784 pixels, in the model's [-1, 1]
space) to a reference solve from the same z: our adaptive probability-flow ODE (rk45, rtol = atol =
--reference-tol, default 1e-6, float32: about 650 evaluations a sample) on the first --reference-samples
(default 50) only. At 1e-5 (about 270 evaluations) the reference is itself off by about 0.3, half the
distance of the 20-NFE solvers; at 1e-6 the 200-step solvers come within 0.03 of it. Rows that end at
σ = 0 are measured against the reference's x̂₀ at eps (the same final denoising applied to the
reference), the others against its x at eps. For scale, the data floor: MNIST-FID of --samples and of all
5,000 training images (never held out).

Run (about 30 minutes on one thread; the full run's printed table is benchmarks/results/mnist_fast.log):
    .venv/bin/python benchmarks/mnist_fast.py
    .venv/bin/python benchmarks/mnist_fast.py --quick   # 100 samples, 10 NFE, two rows: a smoke run
Options: --ours, --peers, --nfe, --samples, --reference-samples, --batch, --seed, --threads, --config,
--workdir (default runs/bench_mnist), --mnist (default ../shared/data/mnist), --out (default
benchmarks/results/mnist_fast.json; with --quick mnist_fast_quick.json).
"""
import argparse
import ast
import datetime
import hashlib
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import peers  # noqa: E402  (benchmarks/peers.py, beside this script)
from mnist_quality import HELD_OUT, data_floor  # noqa: E402

from score_sde import api, evaluation, mnist_classifier  # noqa: E402
from score_sde.features import MNISTFeatures, data_to_uint8  # noqa: E402
from score_sde.sampling import fast, ode_sample  # noqa: E402
from score_sde.sampling.schedules import SCHEDULES, time_grid  # noqa: E402
from score_sde.sampling.solvers import SOLVERS, Denoiser, Grid  # noqa: E402

OURS = "default,adams_pc:logsnr,dpmpp_3m:logsnr,dpmpp_2m:logsnr"
PEERS = ("kdiff:dpmpp_2m:logsnr,kdiff:dpmpp_2m:karras,kdiff:dpmpp_3m:logsnr,kdiff:dpmpp_3m:karras,"
         "kdiff:dpmpp_2m:karras:zero,kdiff:dpmpp_3m:karras:zero")
FULL = dict(ours=OURS, peers=PEERS, nfe="10,20", samples=1000, reference_samples=50)
QUICK = dict(ours="default", peers="kdiff:dpmpp_2m:logsnr", nfe="10", samples=100, reference_samples=20)
TWO_EVALUATIONS = ("heun", "heun_churn")  # our solvers that evaluate the score twice a step


def parse_ours(item):
    """`default` or `solver:schedule[:key=value...]` -> a row spec; ValueError naming the choices."""
    if item == "default":
        return dict(label="default", family="ours", solver=None, schedule=None, options={})
    solver, schedule, *pairs = item.split(":")
    if solver not in SOLVERS or schedule not in SCHEDULES:
        raise ValueError(f"--ours item {item!r}: expected solver:schedule with a solver in {sorted(SOLVERS)} "
                         f"and a schedule in {sorted(SCHEDULES)}, or 'default'")
    options = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if not text:
            raise ValueError(f"--ours item {item!r}: solver options are key=value, got {pair!r}")
        options[key] = ast.literal_eval(text)
    try:  # the solver refuses bad options when built: here, before any sampling
        SOLVERS[solver](**options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--ours item {item!r}: {error}") from None
    return dict(label=item, family="ours", solver=solver, schedule=schedule, options=options)


def parse_peer(item, available):
    """`name:schedule[:zero]` (name as in peers.peer_samplers(), e.g. kdiff:dpmpp_2m) -> a row spec."""
    parts = item.split(":")
    zero = parts[-1] == "zero"
    parts = parts[:-1] if zero else parts
    name, schedule = ":".join(parts[:-1]), parts[-1]
    if name not in available or schedule not in SCHEDULES:
        raise ValueError(f"--peers item {item!r}: expected name:schedule[:zero] with a name in "
                         f"{sorted(available)} and a schedule in {sorted(SCHEDULES)}")
    if zero and not available[name].final_zero_works:
        raise ValueError(f"--peers item {item!r}: {name} cannot end at sigma = 0; drop ':zero'")
    return dict(label=item, family=available[name].library, peer=name, schedule=schedule, final_zero=zero)


def resolved_default(sde, nfes):
    """What fast_sample's defaults ("auto") resolve to for this SDE at each NFE."""
    return {str(nfe): dict(zip(("solver", "schedule", "options"), fast.recommended_settings(sde, nfe)))
            for nfe in nfes}


def sampler_fn(spec, sde, score_fn, nfe, available):
    """(z [B, ...] -> (x [B, ...], nfe), steps) for a row spec at a target NFE."""
    eps = sde.sampling_eps
    if spec["family"] == "ours" and spec["solver"] is None:
        return (lambda z: fast.fast_sample(sde, score_fn, z.shape, steps=nfe, z=z)), nfe
    if spec["family"] == "ours":
        steps = nfe // 2 if spec["solver"] in TWO_EVALUATIONS else nfe
        return (lambda z: fast.fast_sample(sde, score_fn, z.shape, solver=spec["solver"], steps=steps,
                                           schedule=spec["schedule"], eps=eps, z=z, **spec["options"])), steps
    peer = available[spec["peer"]]
    # a final σ = 0 adds a step (one evaluation: x̂₀ at eps), so the σ > 0 grid has one step fewer
    steps = nfe // peer.evaluations_per_step - (1 if spec["final_zero"] else 0)
    times = time_grid(sde, spec["schedule"], steps, eps)
    return (lambda z: peer.sample(sde, score_fn, z, times, final_zero=spec["final_zero"])), steps


def run_batches(sample_fn, z, batch):
    """sample_fn over z in batches: (x [N, ...] float32 on the CPU, NFE a sample, seconds)."""
    pieces, nfes, start = [], set(), time.perf_counter()
    for first in range(0, len(z), batch):
        x, nfe = sample_fn(z[first:first + batch])
        pieces.append(x.float().cpu())
        nfes.add(int(nfe))
    seconds = time.perf_counter() - start
    return torch.cat(pieces), (nfes.pop() if len(nfes) == 1 else sorted(nfes)), seconds


def reference_solve(model, z, batch, tol):
    """The adaptive probability-flow ODE from z: x at eps and x̂₀ there, NFE per batch, seconds."""
    sde, pieces, nfes = model.sde, [], []
    start = time.perf_counter()
    for first in range(0, len(z), batch):
        x, nfe = ode_sample(sde, model.score_fn, z[first:first + batch].shape, rtol=tol, atol=tol,
                            z=z[first:first + batch])
        pieces.append(x)
        nfes.append(int(nfe))
    seconds = time.perf_counter() - start
    x = torch.cat(pieces)
    grid = Grid.build(sde, torch.tensor([sde.sampling_eps], dtype=torch.float64), x.device, x.dtype)
    with torch.no_grad():
        denoised = torch.cat([Denoiser(model.score_fn).at(x[f:f + batch], grid, 0)
                              for f in range(0, len(x), batch)])
    return dict(x=x, x0=denoised, nfe_per_batch=nfes, seconds=seconds)


def quality(model, x, features, reference):
    """MNIST-FID (and KID, IS, predicted digits) of samples x [N, ...] in the model's space."""
    feats, probabilities = features(data_to_uint8(model.to_data_space(x)))
    return evaluation.sample_quality(feats.numpy(), probabilities.numpy(), reference)


def distance(x, reference):
    """Mean and standard error of the per-sample L2 distance over the reference's first samples."""
    d = (x[:len(reference)] - reference).flatten(1).norm(dim=1).double()
    return d.mean().item(), (d.std() / len(d) ** 0.5).item()


def inputs(args):
    """The checkpoint, classifier and reference statistics, or SystemExit saying how to make them."""
    checkpoint = args.workdir / f"0_{args.config}" / "train" / "checkpoints-meta" / "checkpoint.pth"
    classifier, stats = args.workdir / "mnist_classifier.pth", args.workdir / "heldout.npz"
    for path in (checkpoint, classifier, stats):
        if not path.is_file():
            raise SystemExit(f"error: no {path}: run `benchmarks/mnist_quality.py --config {args.config}` "
                             f"first (with --workdir {args.workdir})")
    return checkpoint, classifier, stats


def floors(pixels, classifier, reference, samples):
    """MNIST-FID of `samples` and of all 5,000 training images against the held-out statistics."""
    rows = {}
    for num in sorted({min(samples, HELD_OUT), HELD_OUT}):
        floor = data_floor(pixels, classifier, reference, num)
        rows[str(num)] = {key: floor[key] for key in ("fid", "kid", "num_samples")}
    return rows


def row_line(row):
    return (f"{row['label']:<30} {row['nfe_target']:>4} {str(row['nfe']):>4} {row['fid']:>8.2f} "
            f"{row['distance']:>9.3f} {row['seconds']:>8.1f}")


HEADER = f"{'configuration':<30} {'NFE':>4} {'made':>4} {'MNIST-FID':>8} {'distance':>9} {'seconds':>8}"


def summary_lines(rows, floor):
    """The table by NFE, best k-diffusion configuration (lowest FID) marked, our `default` against it."""
    lines = ["", HEADER + "   (* best k-diffusion at this NFE)"]
    for nfe in sorted({row["nfe_target"] for row in rows}):
        here = [row for row in rows if row["nfe_target"] == nfe]
        peer_rows = [row for row in here if row["family"] == "k-diffusion"]
        best = min(peer_rows, key=lambda row: row["fid"]) if peer_rows else None
        lines += [row_line(row) + (" *" if row is best else "") for row in here]
        default = next((row for row in here if row["label"] == "default"), None)
        if best and default:
            lines.append(f"  {nfe} NFE: our default {default['fid']:.2f} vs best k-diffusion "
                         f"({best['label']}) {best['fid']:.2f}: {default['fid'] - best['fid']:+.2f} FID, "
                         f"distance {default['distance']:.3f} vs {best['distance']:.3f}")
    lines += [f"data floor: MNIST-FID {v['fid']:.2f} of {n} training images" for n, v in floor.items()]
    return lines


def arguments():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", default=None,
                        help=f"comma list of solver:schedule[:key=value] or default (default {OURS!r})")
    parser.add_argument("--peers", default=None,
                        help=f"comma list of name:schedule[:zero] (default {PEERS!r})")
    parser.add_argument("--nfe", default=None, help="comma list of target NFE (default 10,20)")
    parser.add_argument("--samples", type=int, default=None, help="default 1000 (--quick: 100)")
    parser.add_argument("--reference-samples", type=int, default=None, help="default 50 (--quick: 20)")
    parser.add_argument("--reference-tol", type=float, default=1e-6, help="rk45 rtol = atol (default 1e-6)")
    parser.add_argument("--batch", type=int, default=100,
                        help="default 100: on one thread 10-15%% faster a sample than 250")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run in about 2 minutes")
    parser.add_argument("--config", default="vp_mnist_unet")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_mnist")
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    name = "mnist_fast_quick.json" if args.quick else "mnist_fast.json"
    args.out = args.out or ROOT / "benchmarks" / "results" / name
    args.nfe = [int(n) for n in args.nfe.split(",") if n]
    args.reference_samples = min(args.reference_samples, args.samples)
    return parser, args


def row_specs(parser, args):
    """The rows' specs, ours then k-diffusion's, and the installed peers; the missing ones are printed."""
    available = peers.peer_samplers()
    try:
        specs = [parse_ours(item) for item in args.ours.split(",") if item]
        wanted = [item for item in args.peers.split(",") if item]
        if wanted and not available:
            print("k-diffusion rows skipped, no peer is installed: " + "; ".join(peers.absent_peers()))
            wanted = []
        specs += [parse_peer(item, available) for item in wanted]
    except (ValueError, SyntaxError) as error:
        parser.error(str(error))
    return specs, available


def metadata(args, model, checkpoint):
    try:
        k_diffusion = importlib.metadata.version("k-diffusion")
    except importlib.metadata.PackageNotFoundError:
        k_diffusion = None
    return dict(date=datetime.datetime.now().isoformat(timespec="seconds"), machine=platform.node(),
                processor=platform.processor() or platform.machine(), torch=torch.__version__,
                threads=torch.get_num_threads(), samples=args.samples, batch=args.batch, seed=args.seed,
                nfe=args.nfe, workdir=str(args.workdir), config=args.config, checkpoint=str(checkpoint),
                checkpoint_step=model.step, sde=type(model.sde).__name__, eps=model.sde.sampling_eps,
                default=resolved_default(model.sde, args.nfe), k_diffusion=k_diffusion,
                peers_module=peers.__file__,
                peers_sha256=hashlib.sha256(Path(peers.__file__).read_bytes()).hexdigest(),
                absent_peers=peers.absent_peers(), quick=args.quick)


def judged_rows(specs, available, model, z, solve, judge, batch, nfes):
    """Every spec at every NFE from the same z: the row dicts, each printed as it is done."""
    print(HEADER, flush=True)
    rows = []
    for nfe in nfes:
        for spec in specs:
            sample_fn, steps = sampler_fn(spec, model.sde, model.score_fn, nfe, available)
            x, made, seconds = run_batches(sample_fn, z, batch)
            mean, stderr = distance(x, solve["x0"] if spec.get("final_zero") else solve["x"])
            rows.append(dict(spec, nfe_target=nfe, steps=steps, nfe=made, seconds=seconds, distance=mean,
                             distance_stderr=stderr, **judge(x)))
            print(row_line(rows[-1]), flush=True)
    return rows


def main():
    parser, args = arguments()
    torch.set_num_threads(args.threads)
    specs, available = row_specs(parser, args)
    checkpoint, classifier, stats = inputs(args)
    model, reference = api.load(checkpoint, device="cpu"), dict(np.load(stats))
    features = MNISTFeatures(path=classifier)
    pixels = (mnist_classifier.load_mnist(args.mnist)[0][:, 0] * 255).round().to(torch.uint8).numpy()
    floor = floors(pixels, classifier, reference, args.samples)
    meta = metadata(args, model, checkpoint)
    print(f"{meta['date']}: {args.config} step {model.step}, {args.samples} samples from one z (seed "
          f"{args.seed}), float32, batch {args.batch}, {meta['threads']} thread(s); default: "
          f"{meta['default']}; k-diffusion {meta['k_diffusion']}", flush=True)
    z = model.sde.prior_sampling(model.kind.shape(args.samples),
                                 generator=torch.Generator().manual_seed(args.seed))
    solve = reference_solve(model, z[:args.reference_samples], args.batch, args.reference_tol)
    meta["reference"] = dict(method="rk45", rtol=args.reference_tol, atol=args.reference_tol,
                             samples=args.reference_samples, nfe_per_batch=solve["nfe_per_batch"],
                             seconds=solve["seconds"])
    print(f"reference: probability-flow ODE rk45, rtol = atol = {args.reference_tol:g}, on the first "
          f"{args.reference_samples} samples: NFE {solve['nfe_per_batch']} (per batch), "
          f"{solve['seconds']:.0f} s", flush=True)
    rows = judged_rows(specs, available, model, z, solve, lambda x: quality(model, x, features, reference),
                       args.batch, args.nfe)
    print("\n".join(summary_lines(rows, floor)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, floor=floor, rows=rows), indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
