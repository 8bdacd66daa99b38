"""Inverse problems with an unconditional score: the particle filter (method "smc") against exact posteriors,
the paper's replacement method's bias, and inpainting MNIST digits with a trained model.

Part 1, exact (float64, CPU, the exact score of a Gaussian mixture, so that every error is the sampler's):
`analytic.three_component_mixture()` (3-D, 3 correlated components), coordinate 0 observed at
y ∈ {−3, −1.5, 0} (−1.5: two components share the posterior mass), σ_y ∈ {0, 0.05, 0.5}, VP and VE,
500 steps, P ∈ {64, 256} particles per filter, B filters. Per row, against `GaussianMixture.condition`:
- weights: the posterior component weights from every particle and its normalised weight, each particle
  scored by its responsibilities P(k | x); the largest error over k;
- mean: the largest error of the conditional mean of the unobserved coordinates;
- draws z: one particle drawn per filter by its final weight; the largest |draws' mean responsibility −
  exact weight| over k, in standard errors of the B draws (within 3: they are posterior draws);
- NFE per sample (steps · P; no VJPs).
Acceptance (issue 17): weights ≤ 0.02 at 64 particles and ≤ 0.01 at 256; mean within 0.25 and 0.15; z ≤ 3.
Then the replacement method (the PC sampler with reverse-diffusion and Langevin steps, 500 levels, σ_y = 0,
2,000 samples): its weight and mean errors on the same mixture, and on a correlated Gaussian.
Then two more exact checks of the filter: a 16-D mixture with half of its coordinates observed
(inpainting), and a colour-like 3-D mixture observed through the colorization transform (the channel mean).

Part 2, MNIST (needs a finished `benchmarks/mnist_quality.py` run: its vp_mnist_unet model, held-out digits
and classifier): the lower half of held-out digits inpainted by replacement and by SMC with 16 and 64
particles; how often the classifier's label of the completed digit is the true label; a PNG grid of inputs,
observations and outputs.

Run:
    .venv/bin/python benchmarks/controllable.py            # everything (about an hour on 2 CPU cores)
    .venv/bin/python benchmarks/controllable.py --quick    # smoke run, under 3 minutes
Options: --part exact|mnist|all, --mnist-workdir (default runs/bench_mnist), --mnist (default
../shared/data/mnist), --digits, --mnist-steps, --particles,
--out (default benchmarks/results/controllable.json; with --quick controllable_quick.json), --seed.
"""
import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import score_sde  # noqa: E402
from score_sde import mnist_classifier  # noqa: E402
from score_sde.analytic import GaussianMixture, three_component_mixture  # noqa: E402
from score_sde.controllable import conditional_sample  # noqa: E402
from score_sde.observations import MASKS, Colorization, Inpainting  # noqa: E402
from score_sde.plots import image_grid_png  # noqa: E402
from score_sde.sde import VESDE, VPSDE  # noqa: E402

SDES = {"VP": VPSDE, "VE": VESDE}
OBSERVED_VALUES = (-3.0, -1.5, 0.0)
SIGMAS = (0.0, 0.05, 0.5)
TARGETS = {64: (0.02, 0.25), 256: (0.01, 0.15)}  # particles: (weight error, mean error)


def exact_row(mix, observation, A, y, sigma_y, sde, particles, filters, steps, seed):
    """One filter run against mix.condition(A, y, sigma_y); the errors and the run's cost."""
    posterior = mix.condition(A, y, sigma_y)
    start = time.perf_counter()
    draws, nfe, info = conditional_sample(sde, mix.score_fn(sde), (filters, *mix.event_shape), observation,
                                          particles=particles, steps=steps, dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(seed), return_info=True)
    seconds = time.perf_counter() - start
    weights, x = info["log_weights"].exp(), info["particles"].flatten(2)
    resp = mix.responsibilities(x.flatten(0, 1).reshape(-1, *mix.event_shape)).reshape(*weights.shape, -1)
    weight_est = (weights[..., None] * resp).sum(1).mean(0)
    free = (A.abs().sum(0) == 0) if A.shape[0] < A.shape[1] else torch.zeros(x.shape[2], dtype=torch.bool)
    exact_mean = (posterior.weights[:, None] * posterior.means.flatten(1)).sum(0)
    mean_est = (weights[..., None] * x).sum(1).mean(0)
    mean_error = ((mean_est - exact_mean)[free].abs().max().item() if free.any()
                  else (mean_est - exact_mean).abs().max().item())
    draw_resp = mix.responsibilities(draws)
    # the standard error B posterior draws would have: the spread of P(k | x) over exact posterior samples
    exact_draws = posterior.sample(20000, generator=torch.Generator().manual_seed(seed + 1))
    # (floored at 0.01 per draw: a component holding ~0 mass would otherwise make any rounding a large z)
    se = mix.responsibilities(exact_draws).std(0).clamp(min=0.01) / math.sqrt(filters)
    z = ((draw_resp.mean(0) - posterior.weights).abs() / se.clamp(min=1e-12)).max().item()
    return dict(weight_error=(weight_est - posterior.weights).abs().max().item(), mean_error=mean_error,
                draws_z=z, nfe=nfe, seconds=seconds, exact_weights=posterior.weights.tolist(),
                min_ess=info["ess"].min().item(), resampled=info["resampled"].double().mean().item())


def first_coordinate_observed(y, sigma_y):
    """Coordinate 0 of a 3-D point observed: the observation and its A."""
    mask = torch.tensor([[True, False, False]])
    return Inpainting(mask, torch.tensor([[y, 0.0, 0.0]], dtype=torch.float64), sigma_y), \
        torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)


def mixture_table(quick, seed):
    """Part 1's main table: rows per SDE, y, σ_y and particle count."""
    mix, rows = three_component_mixture(), []
    steps = 200 if quick else 500
    grid = ([("VP", y, 0.0, 64) for y in OBSERVED_VALUES] if quick else
            [(s, y, sig, p) for s in SDES for y in OBSERVED_VALUES for sig in SIGMAS for p in TARGETS])
    print(f"{'SDE':<4} {'y':>5} {'σ_y':>5} {'P':>4} {'B':>4}  {'weights err':>11} {'mean err':>9} "
          f"{'draws z':>7} {'NFE':>7} {'s':>6}  target", flush=True)
    for name, y, sigma_y, particles in grid:
        filters = (100 if quick else 200) if particles == 64 else 100
        observation, A = first_coordinate_observed(y, sigma_y)
        row = exact_row(mix, observation, A, torch.tensor([y], dtype=torch.float64), sigma_y,
                        SDES[name](N=steps), particles, filters, steps, seed)
        weight_target, mean_target = TARGETS[particles]
        row.update(sde=name, y=y, sigma_y=sigma_y, particles=particles, filters=filters, steps=steps,
                   passes=bool(row["weight_error"] <= weight_target and row["mean_error"] <= mean_target
                               and row["draws_z"] <= 3))
        rows.append(row)
        print(f"{name:<4} {y:>5.1f} {sigma_y:>5.2f} {particles:>4} {filters:>4}  "
              f"{row['weight_error']:>11.4f} {row['mean_error']:>9.4f} {row['draws_z']:>7.2f} "
              f"{row['nfe']:>7} {row['seconds']:>6.1f}  "
              f"≤ {weight_target} / {mean_target} / 3: {'yes' if row['passes'] else 'NO'}", flush=True)
    return rows


def replacement_rows(quick, seed):
    """The paper's method on the mixture (σ_y = 0) and on a correlated Gaussian: its errors."""
    steps, num = (200, 1000) if quick else (500, 2000)
    mix, rows = three_component_mixture(), []
    gaussian = GaussianMixture([1.0], [[0.0, 0.0, 0.0]],
                               covs=[[[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    problems = [("mixture", mix, y) for y in OBSERVED_VALUES] + [("correlated Gaussian", gaussian, 1.5)]
    print(f"\nreplacement (PC: reverse diffusion + Langevin, {steps} levels, {num} samples, σ_y = 0)")
    print(f"{'data':<20} {'SDE':<4} {'y':>5}  {'weights err':>11} {'mean err':>9}  exact weights")
    for label, data, y in problems:
        for name in ("VP",) if quick else SDES:
            sde = SDES[name](N=steps)
            observation, A = first_coordinate_observed(y, 0.0)
            x, nfe = conditional_sample(sde, data.score_fn(sde), (num, 3), observation, method="replacement",
                                        dtype=torch.float64, generator=torch.Generator().manual_seed(seed),
                                        predictor="reverse_diffusion", corrector="langevin", denoise=True)
            posterior = data.condition(A, torch.tensor([y], dtype=torch.float64), 0.0)
            weights = data.responsibilities(x).mean(0)
            exact_mean = (posterior.weights[:, None] * posterior.means).sum(0)
            row = dict(data=label, sde=name, y=y, steps=steps, samples=num, nfe=nfe,
                       weight_error=(weights - posterior.weights).abs().max().item(),
                       mean_error=(x.mean(0) - exact_mean)[1:].abs().max().item(),
                       exact_weights=posterior.weights.tolist(), weights=weights.tolist())
            rows.append(row)
            exact, got = ([round(w, 3) for w in row[key]] for key in ("exact_weights", "weights"))
            print(f"{label:<20} {name:<4} {y:>5.1f}  {row['weight_error']:>11.4f} {row['mean_error']:>9.4f}  "
                  f"{exact} (got {got})", flush=True)
    return rows


def random_mixture(dim, components, seed):
    """A mixture of `components` correlated Gaussians in `dim` dimensions, spread so that they overlap."""
    gen = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(components, dim, generator=gen, dtype=torch.float64)
    factors = torch.randn(components, dim, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
    covs = factors @ factors.mT + 0.3 * torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(torch.full((components,), 1.0 / components), means, covs=covs)


def more_exact_rows(quick, seed):
    """The filter on a 16-D mixture, half observed, and through the colorization transform."""
    steps, particles, filters = (200, 64, 50) if quick else (500, 256, 50)
    rows = []
    mix16 = random_mixture(16, 3, seed + 11)
    # observed: the first 8 coordinates halfway between components 0 and 1, where they share the posterior
    truth = torch.zeros(1, 16, dtype=torch.float64)
    truth[0, :8] = mix16.means[:2, :8].mean(0)
    mask = torch.arange(16)[None] < 8
    A16 = torch.eye(16, dtype=torch.float64)[:8]
    colour = random_mixture(3, 3, seed + 13)
    colour = GaussianMixture(colour.weights, colour.means.reshape(3, 3, 1, 1), covs=colour.covariances)
    gray_truth = colour.sample(1, generator=torch.Generator().manual_seed(seed + 14)).mean(1, keepdim=True)
    A3 = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    problems = [("16-D, half observed", mix16, Inpainting(mask, truth, 0.0), A16, truth[0, :8]),
                ("colour 3-D, gray observed", colour, Colorization(gray_truth, 0.0), A3,
                 gray_truth.flatten())]
    print(f"\nthe filter on more problems (VP, {steps} steps, {particles} particles, {filters} filters)")
    for label, mix, observation, A, y in problems:
        row = exact_row(mix, observation, A, y, 0.0, VPSDE(N=steps), particles, filters, steps, seed)
        row.update(problem=label, steps=steps, particles=particles, filters=filters)
        rows.append(row)
        exact = [round(w, 3) for w in row["exact_weights"]]
        print(f"{label:<28} weights err {row['weight_error']:.4f}, mean err {row['mean_error']:.4f}, draws z "
              f"{row['draws_z']:.2f}, exact weights {exact}", flush=True)
    return rows


# ---- part 2: MNIST ----

HELD_OUT = 5000  # benchmarks/mnist_quality.py: the first 5,000 test images train, the rest are held out


@torch.no_grad()
def predict(classifier, images):
    return torch.cat([classifier(batch).argmax(1) for batch in images.split(500)])


def mnist_rows(args):
    """Inpaint the lower half of held-out digits; the classifier's agreement with the true labels."""
    work = args.mnist_workdir
    model_dir, classifier_path = work / "0_vp_mnist_unet" / "train", work / "mnist_classifier.pth"
    if not (model_dir / "config.json").is_file() or not classifier_path.is_file():
        print(f"\nMNIST part skipped: no finished benchmarks/mnist_quality.py run in {work} (train one with "
              f"`.venv/bin/python benchmarks/mnist_quality.py --workdir {work}`)")
        return None
    model = score_sde.load(model_dir, device="cpu")
    images, labels = mnist_classifier.load_mnist(args.mnist)
    held_out = slice(HELD_OUT, HELD_OUT + args.digits)  # mnist_quality.py trained on the first 5,000
    images, labels = images[held_out], labels[held_out]
    classifier = mnist_classifier.load_classifier(classifier_path)
    known = MASKS["lower_half"](28)[None, None].expand_as(images)
    observation = Inpainting(known, model.to_model_space(images))
    sde = type(model.sde)(beta_min=model.sde.beta_min, beta_max=model.sde.beta_max, N=args.mnist_steps)
    methods = [("replacement", {})] + [("smc", dict(particles=p)) for p in args.particles]
    rows, pictures = [], [images, model.to_data_space(observation.pseudo_inverse())]
    print(f"\nMNIST: the lower half of {args.digits} held-out digits inpainted ({args.mnist_steps} steps)")
    for method, options in methods:
        start = time.perf_counter()
        extra = dict(predictor="euler_maruyama", corrector="none", denoise=True) if method == "replacement" \
            else dict(steps=args.mnist_steps)
        x, nfe = conditional_sample(sde, model.score_fn, images.shape, observation, method=method,
                                    generator=torch.Generator().manual_seed(args.seed), progress=True,
                                    **options, **extra)
        completed = model.to_data_space(x).clamp(0, 1)
        predicted = predict(classifier, completed)
        agree = (predicted == labels).double()
        label = method + (f" {options['particles']}" if options else "")
        rows.append(dict(method=label, digits=args.digits, steps=args.mnist_steps, nfe=nfe,
                         agreement=agree.mean().item(), stderr=agree.std().item() / math.sqrt(len(agree)),
                         seconds=time.perf_counter() - start))
        pictures.append(completed)
        print(f"{label:<16} label agreement {rows[-1]['agreement']:.3f} ± {rows[-1]['stderr']:.3f}  "
              f"({nfe} NFE per digit, {rows[-1]['seconds']:.0f} s)", flush=True)
    originals = predict(classifier, images)
    print(f"{'the originals':<16} label agreement {(originals == labels).double().mean().item():.3f} "
          "(the classifier's own accuracy on these digits)")
    grid = args.out.with_name(args.out.stem + "_grid.png")
    image_grid_png(grid, torch.cat(pictures), nrow=args.digits)
    print(f"grid (rows: inputs, observations, then each method) -> {grid}")
    return rows


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer rows, steps and digits")
    parser.add_argument("--part", choices=("exact", "mnist", "all"), default="all")
    parser.add_argument("--mnist-workdir", type=Path, default=ROOT / "runs" / "bench_mnist")
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--digits", type=int, default=None, help="MNIST digits (default 20; --quick 4)")
    parser.add_argument("--mnist-steps", type=int, default=None, help="default 50; --quick 20")
    parser.add_argument("--particles", type=int, nargs="+", default=None,
                        help="SMC's particle counts on MNIST (default 16 64; --quick 16)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.digits = args.digits or (4 if args.quick else 20)
    args.mnist_steps = args.mnist_steps or (20 if args.quick else 50)
    args.particles = args.particles or ([16] if args.quick else [16, 64])
    name = "controllable_quick.json" if args.quick else "controllable.json"
    args.out = args.out or ROOT / "benchmarks" / "results" / name
    return args


def main():
    args = parse_args()
    start, result, threads = time.perf_counter(), {}, torch.get_num_threads()
    if args.part in ("exact", "all"):
        torch.set_num_threads(1)  # float64 tensors of a few thousand points: threads only contend
        result["mixture"] = mixture_table(args.quick, args.seed)
        result["replacement"] = replacement_rows(args.quick, args.seed)
        result["more"] = more_exact_rows(args.quick, args.seed)
    if args.part in ("mnist", "all"):
        torch.set_num_threads(threads)
        result["mnist"] = mnist_rows(args)
    result["meta"] = dict(date=datetime.date.today().isoformat(), machine=platform.processor() or
                          platform.machine(), torch=torch.__version__, threads=torch.get_num_threads(),
                          quick=args.quick, seed=args.seed, seconds=time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"\n-> {args.out} ({result['meta']['seconds']:.0f} s)")
    passes = [row["passes"] for row in result.get("mixture", [])]
    return 0 if all(passes) else 1


if __name__ == "__main__":
    sys.exit(main())
