"""Fast samplers (score_sde/sampling/fast.py) against exact answers, by solver, schedule and NFE.

The acceptance benchmark of the fast samplers. The score is the exact score of the 2-D Gaussian mixture
0.2·N((-5, -5), I) + 0.8·N((5, 5), I) (score_sde.analytic), so every error belongs to the sampler. All in
float64 on the CPU, seeded with torch.Generator.

For VPSDE and subVPSDE (eps = 1e-3) and VESDE (eps = 1e-5), every solver in SOLVERS on every schedule in
SCHEDULES at NFE in (5, 10, 20, 30, 50, 100) score evaluations ("heun" and "heun_churn" take NFE // 2 steps of
two evaluations, so 4 at NFE 5; every row records the NFE actually made):
  - deterministic solvers, from exact samples of p_T (exact data pushed through the kernel
    x_T = m(T)·x0 + s(T)·z): the mean per-sample Euclidean distance to a float64 reference solve of the same
    flow from the same points (adaptive RK45, rtol = atol = 1e-10, once per SDE; its own error, against
    1e-12, is printed), and the error of the (5, 5) mode weight (fraction with x1 + x2 > 0) against the
    reference's;
  - every solver (the stochastic ones only so), from the prior: the sliced Wasserstein-2 distance (SW2) to
    independent exact data samples and the mode-weight error against 0.8;
  - the wall time of each run.
Beside them, per SDE and from the prior: the PC sampler at N = 1000 (reverse diffusion, without corrector
and with the "ald" corrector at the default snr) and the adaptive ODE sampler (rtol = atol = 1e-5). SW2 at
this sample size is dominated by the binomial noise of the mode weights: its noise floor, the SW2 between
independent exact sets of the same size (mean ± std over FLOOR_DRAWS draws), is printed first. From the
prior, the flow is expected to miss 0.8 slightly (about 0.79 for VP and sub-VP, 0.77 to 0.78 for VE: the
prior is not exactly p_T), whatever the solver; so SW2 from the prior cannot rank the deterministic solvers,
and the flow error is the measure of their accuracy. For VESDE, λ(t) = −log σ(t) is linear in t: its
"uniform" and "logsnr" grids are the same.

Our solvers only: benchmarks/sampler_suite.py runs the peers' own samplers beside ours, on twelve other exact
problems split into a tune half (where the defaults were chosen) and a check half.

Run:
    .venv/bin/python benchmarks/fast_samplers.py            # full: 2000 samples, about a minute
    .venv/bin/python benchmarks/fast_samplers.py --quick    # smoke run: 500 samples, NFE in (10, 20)
    .venv/bin/python benchmarks/fast_samplers.py --replot benchmarks/results/fast_samplers.json
                                                            # redraw the figure from saved results
Options: --out PATH (default benchmarks/results/fast_samplers.json; with --quick fast_samplers_quick.json),
--png PATH (default
docs/img/fast_samplers.png: mean error against the reference flow vs NFE, logsnr schedule, deterministic
solvers, one panel per SDE), --seed, --threads (default 1: one CPU thread, so that wall times compare between
machines). It prints tables per SDE as each is done, then a summary, and writes all rows with metadata as
JSON.
"""
import argparse
import dataclasses
import datetime
import inspect
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from score_sde.analytic import two_mode_mixture
from score_sde.analytic import upper_mode_weight as mode_weight
from score_sde.metrics import sliced_w2, unit_directions
from score_sde.plots import NO_PLOT, have_matplotlib, loglog_png, replot
from score_sde.sampling import ode_sample, pc_sample
from score_sde.sampling.fast import fast_sample
from score_sde.sampling.schedules import SCHEDULES
from score_sde.sampling.solvers import SOLVERS, STOCHASTIC
from score_sde.sde import VESDE, VPSDE, expand_to, subVPSDE

MIX = two_mode_mixture()
TRUE_MODE_WEIGHT = 0.8
DTYPE = torch.float64
SDES = ((VPSDE, 1e-3), (subVPSDE, 1e-3), (VESDE, 1e-5))  # (SDE class, eps of every sampler on it)
NFE_LEVELS, QUICK_NFE_LEVELS = (5, 10, 20, 30, 50, 100), (10, 20)
BEST_AT = (10, 20)  # the NFE at which the best (solver, schedule) per SDE is printed
EVALUATIONS_PER_STEP = {"heun": 2, "heun_churn": 2}  # every other solver evaluates the score once a step
DETERMINISTIC = tuple(name for name in SOLVERS if name not in STOCHASTIC)
REFERENCE_TOL, CHECK_TOL, ODE_TOL = 1e-10, 1e-12, 1e-5
PC_LEVELS = 1000
PC_SAMPLERS = (("reverse_diffusion", "none"), ("reverse_diffusion", "ald"))
PC_SNR = inspect.signature(pc_sample).parameters["snr"].default  # recorded: the runs use the default
SW2_DIRECTIONS, FLOOR_DRAWS = 128, 8
PLOT_SCHEDULE = "logsnr"


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every run of one benchmark shares: sample count, seed, exact data and SW2 directions."""

    num: int
    seed: int
    data: torch.Tensor  # [num, 2] exact samples, the SW2 target
    directions: torch.Tensor  # [SW2_DIRECTIONS, 2] unit vectors


def generator(seed):
    return torch.Generator().manual_seed(seed)


def exact_p_T_samples(sde, num, g):
    """x_T = m(T)·x0 + s(T)·z with fresh exact data x0 [num, 2]: exact samples of the perturbed data at T."""
    m, s = sde.marginal_coefficients(torch.full((num,), sde.T, dtype=DTYPE))
    x0 = MIX.sample(num, generator=g)
    z = torch.randn(num, 2, generator=g, dtype=DTYPE)
    return expand_to(m, x0) * x0 + expand_to(s, x0) * z


def timed(sample_fn, *args, **kwargs):
    """Runs sample_fn(*args, **kwargs) -> (x, nfe); returns (x, nfe, wall seconds)."""
    start = time.perf_counter()
    x, nfe = sample_fn(*args, **kwargs)
    return x, nfe, time.perf_counter() - start


def steps_for(solver, nfe):
    """Solver steps that spend at most `nfe` score evaluations (at least one step)."""
    return max(1, nfe // EVALUATIONS_PER_STEP.get(solver, 1))


def noise_floor(setup):
    """SW2 from setup.data to FLOOR_DRAWS independent exact sets of its size: {mean, std, draws}."""
    g = generator(setup.seed + 3)
    draws = [sliced_w2(MIX.sample(setup.num, generator=g), setup.data, setup.directions)
             for _ in range(FLOOR_DRAWS)]
    return dict(mean=statistics.mean(draws), std=statistics.stdev(draws), draws=draws)


def reference_flow(sde, eps, x_T):
    """The float64 reference solve of the flow from x_T [B, 2] (rtol = atol = REFERENCE_TOL), and its own
    error: the mean distance to a solve at CHECK_TOL."""
    score_fn = MIX.score_fn(sde)
    x_ref, nfe, seconds = timed(ode_sample, sde, score_fn, x_T.shape, rtol=REFERENCE_TOL, atol=REFERENCE_TOL,
                                eps=eps, z=x_T)
    x_check, _ = ode_sample(sde, score_fn, x_T.shape, rtol=CHECK_TOL, atol=CHECK_TOL, eps=eps, z=x_T)
    info = dict(rtol=REFERENCE_TOL, atol=REFERENCE_TOL, nfe=nfe, seconds=seconds,
                mode_weight=mode_weight(x_ref), error_vs_tighter=(x_ref - x_check).norm(dim=1).mean().item())
    return x_ref, info


def flow_metrics(x, x_ref):
    """Mean per-sample Euclidean distance to the reference flow and the mode-weight error against it."""
    weight = mode_weight(x)
    return dict(mean_error=(x - x_ref).norm(dim=1).mean().item(), mode_weight=weight,
                mode_weight_error=weight - mode_weight(x_ref))


def prior_metrics(x, setup):
    """SW2 to the exact data and the mode-weight error against TRUE_MODE_WEIGHT."""
    weight = mode_weight(x)
    return dict(sw2=sliced_w2(x, setup.data, setup.directions), mode_weight=weight,
                mode_weight_error=weight - TRUE_MODE_WEIGHT)


def fast_row(sde, eps, solver, schedule, target_nfe, setup, flow=None):
    """One fast_sample run as a JSON row: from the prior, or with flow = (x_T, x_ref) from exact p_T
    samples, compared with the reference flow."""
    steps = steps_for(solver, target_nfe)
    z = None if flow is None else flow[0]
    x, nfe, seconds = timed(fast_sample, sde, MIX.score_fn(sde), (setup.num, 2), solver=solver, steps=steps,
                            schedule=schedule, eps=eps, z=z, generator=generator(setup.seed), dtype=DTYPE)
    row = dict(sde=type(sde).__name__, eps=eps, sampler=f"fast:{solver}", solver=solver, schedule=schedule,
               target_nfe=target_nfe, steps=steps, stochastic=solver in STOCHASTIC,
               source="prior" if flow is None else "exact p_T", nfe=nfe, seconds=seconds)
    return {**row, **(prior_metrics(x, setup) if flow is None else flow_metrics(x, flow[1]))}


def fast_rows(sde, eps, nfe_levels, setup, flow):
    """Every solver × schedule × NFE on one SDE: from the prior, and (deterministic solvers) on the flow."""
    rows = []
    for solver in SOLVERS:
        for schedule in SCHEDULES:
            for target_nfe in nfe_levels:
                rows.append(fast_row(sde, eps, solver, schedule, target_nfe, setup))
                if solver not in STOCHASTIC:
                    rows.append(fast_row(sde, eps, solver, schedule, target_nfe, setup, flow))
    return rows


def baseline_rows(sde_cls, eps, setup, flow):
    """The PC samplers at N = PC_LEVELS and the adaptive ODE sampler from the prior, and the ODE sampler
    also on the flow (from exact p_T, against the reference), as JSON rows."""
    sde = sde_cls(N=PC_LEVELS)
    score_fn, rows = MIX.score_fn(sde), []
    for predictor, corrector in PC_SAMPLERS:
        x, nfe, seconds = timed(pc_sample, sde, score_fn, (setup.num, 2), predictor=predictor,
                                corrector=corrector, eps=eps, denoise=True, generator=generator(setup.seed),
                                dtype=DTYPE)
        rows.append(dict(sde=sde_cls.__name__, eps=eps, sampler=f"pc:{predictor}+{corrector}", N=PC_LEVELS,
                         snr=PC_SNR, source="prior", nfe=nfe, seconds=seconds, **prior_metrics(x, setup)))
    for z in (None, flow[0]):
        x, nfe, seconds = timed(ode_sample, sde, score_fn, (setup.num, 2), rtol=ODE_TOL, atol=ODE_TOL,
                                eps=eps, z=z, generator=generator(setup.seed), dtype=DTYPE)
        metrics = prior_metrics(x, setup) if z is None else flow_metrics(x, flow[1])
        rows.append(dict(sde=sde_cls.__name__, eps=eps, sampler="ode:rk45", rtol=ODE_TOL, atol=ODE_TOL,
                         source="prior" if z is None else "exact p_T", nfe=nfe, seconds=seconds, **metrics))
    return rows


def sde_rows(sde_cls, eps, nfe_levels, setup):
    """All runs on one SDE, and the reference flow's summary."""
    sde = sde_cls()
    x_T = exact_p_T_samples(sde, setup.num, generator(setup.seed + 4))
    x_ref, reference = reference_flow(sde, eps, x_T)
    rows = fast_rows(sde, eps, nfe_levels, setup, (x_T, x_ref))
    return rows + baseline_rows(sde_cls, eps, setup, (x_T, x_ref)), reference


# ---- printing ----


def select(rows, **fields):
    """The rows whose fields have the given values."""
    return [r for r in rows if all(r.get(k) == v for k, v in fields.items())]


def fast_only(rows, source):
    """The fast_sample rows (not the baselines) from one source, "prior" or "exact p_T"."""
    return [r for r in select(rows, source=source) if "solver" in r]


def grid_table(rows, title, metric, solvers, nfe_levels, fmt="{:>9.2e}"):
    """Lines of a solver × NFE table of one metric on the PLOT_SCHEDULE schedule."""
    lines = [title, f"  {'solver':<13}" + "".join(f"{n:>9d}" for n in nfe_levels)]
    for solver in solvers:
        cells = [select(rows, solver=solver, schedule=PLOT_SCHEDULE, target_nfe=n) for n in nfe_levels]
        lines.append(f"  {solver:<13}" + "".join(fmt.format(c[0][metric]) if c else f"{'-':>9}"
                                                for c in cells))
    return lines


def schedule_table(flow, nfe):
    """Lines of a deterministic solver × schedule table of the flow error at one NFE."""
    lines = [f" mean error vs reference flow at NFE {nfe}, by schedule",
             f"  {'solver':<13}" + "".join(f"{name:>11}" for name in SCHEDULES)]
    for solver in DETERMINISTIC:
        cells = [select(flow, solver=solver, schedule=name, target_nfe=nfe)[0] for name in SCHEDULES]
        lines.append(f"  {solver:<13}" + "".join(f"{c['mean_error']:>11.2e}" for c in cells))
    return lines


def best(rows, metric, nfe):
    """The row with the smallest metric among the rows at target NFE nfe."""
    return min(select(rows, target_nfe=nfe), key=lambda r: r[metric])


def where(row):
    return f"{row['solver']}/{row['schedule']}"


def best_lines(flow, prior, nfe_levels):
    lines = []
    for nfe in [n for n in BEST_AT if n in nfe_levels]:
        f, p = best(flow, "mean_error", nfe), best(prior, "sw2", nfe)
        lines.append(f" best at NFE {nfe}: flow error {f['mean_error']:.2e} ({where(f)}); SW2 from prior "
                     f"{p['sw2']:.4f} ({where(p)}, mode-weight error {p['mode_weight_error']:+.4f})")
    return lines


def baseline_lines(rows):
    """Lines of the baselines: PC and ODE samplers from the prior, and the ODE sampler on the flow."""
    lines = [f" {'baseline, from prior':<28} {'NFE':>6} {'SW2':>8} {'w. err':>8} {'sec':>7}"]
    for r in select(rows, source="prior"):
        if "solver" not in r:
            lines.append(f" {r['sampler']:<28} {r['nfe']:>6d} {r['sw2']:>8.4f} "
                         f"{r['mode_weight_error']:>+8.4f} {r['seconds']:>7.2f}")
    ode = select(rows, source="exact p_T", sampler="ode:rk45")[0]
    lines.append(f" ode:rk45 (rtol = atol = {ODE_TOL:g}) on the flow: mean error {ode['mean_error']:.2e} "
                 f"at NFE {ode['nfe']}")
    return lines


def sde_report(name, rows, reference, nfe_levels):
    """The tables of one SDE: error and SW2 by solver and NFE on the logsnr schedule, the flow error by
    schedule at the BEST_AT NFE, the best (solver, schedule) there, and the baselines."""
    flow, prior = fast_only(rows, "exact p_T"), fast_only(rows, "prior")
    lines = [f"\n== {name}: reference flow (rtol = atol = {REFERENCE_TOL:g}) NFE {reference['nfe']}, "
             f"error vs rtol {CHECK_TOL:g} {reference['error_vs_tighter']:.1e}, mode weight "
             f"{reference['mode_weight']:.4f}"]
    lines += grid_table(flow, f" mean error vs reference flow, {PLOT_SCHEDULE}", "mean_error", DETERMINISTIC,
                        nfe_levels)
    lines += grid_table(flow, f" mode-weight error vs reference flow, {PLOT_SCHEDULE}", "mode_weight_error",
                        DETERMINISTIC, nfe_levels, fmt="{:>+9.4f}")
    lines += grid_table(prior, f" SW2 from prior, {PLOT_SCHEDULE}", "sw2", SOLVERS, nfe_levels,
                        fmt="{:>9.4f}")
    lines += grid_table(prior, f" mode-weight error from prior (vs {TRUE_MODE_WEIGHT}), {PLOT_SCHEDULE}",
                        "mode_weight_error", SOLVERS, nfe_levels, fmt="{:>+9.4f}")
    for nfe in [n for n in BEST_AT if n in nfe_levels]:
        lines += schedule_table(flow, nfe)
    return lines + best_lines(flow, prior, nfe_levels) + baseline_lines(rows)


def summary_line(rows, nfe):
    """One SDE at one NFE: the best flow error and SW2 with their (solver/schedule), adams_pc's on logsnr
    (order 2: the default before the per-SDE defaults of issue 19), and the baselines' SW2."""
    flow, prior = fast_only(rows, "exact p_T"), fast_only(rows, "prior")
    f, p = best(flow, "mean_error", nfe), best(prior, "sw2", nfe)
    default = select(flow, solver="adams_pc", schedule="logsnr", target_nfe=nfe)[0]
    base = {r["sampler"]: r["sw2"] for r in select(rows, source="prior") if "solver" not in r}
    return (f"{rows[0]['sde']:<9} {nfe:>3}  {f['mean_error']:>8.2e} {where(f):<22} {p['sw2']:.4f} "
            f"{where(p):<25} {default['mean_error']:>9.2e}  {base['pc:reverse_diffusion+none']:>7.4f} "
            f"{base['pc:reverse_diffusion+ald']:>7.4f} {base['ode:rk45']:>7.4f}")


def summary_lines(rows, floor, nfe_levels):
    lines = [f"\nSummary: flow = mean error vs the reference flow from exact p_T; SW2 from the prior (noise "
             f"floor {floor['mean']:.4f} ± {floor['std']:.4f}); baselines' SW2 at their own NFE",
             f"{'sde':<9} {'NFE':>3}  {'best flow error':<31} {'best SW2':<32} {'adams_pc':>9}  "
             f"{'PC':>7} {'PC+ald':>7} {'ODE':>7}"]
    for sde_cls, _ in SDES:
        for nfe in [n for n in BEST_AT if n in nfe_levels]:
            lines.append(summary_line(select(rows, sde=sde_cls.__name__), nfe))
    return lines


# ---- the plot and the run ----


def write_png(rows, path):
    """Mean error vs the reference flow against the NFE made, logsnr schedule, deterministic solvers: one
    panel per SDE, one line per solver."""
    panels = {}
    for sde_cls, eps in SDES:
        lines = {}
        for solver in DETERMINISTIC:
            runs = select(fast_only(rows, "exact p_T"), sde=sde_cls.__name__, solver=solver,
                          schedule=PLOT_SCHEDULE)
            lines[solver] = ([r["nfe"] for r in runs], [r["mean_error"] for r in runs])
        panels[f"{sde_cls.__name__} (eps {eps:g}), {PLOT_SCHEDULE} schedule"] = lines
    path.parent.mkdir(parents=True, exist_ok=True)
    nfe = sorted({r["target_nfe"] for r in rows if "target_nfe" in r})
    loglog_png(path, panels, xlabel="score evaluations (NFE)", ylabel="mean error vs reference flow",
               xticks=nfe)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 samples, NFE in (10, 20)")
    here = Path(__file__).parent
    default_out = here / "results" / "fast_samplers.json"
    default_png = here.parent / "docs" / "img" / "fast_samplers.png"
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON output (default {default_out}; with --quick fast_samplers_quick.json)")
    parser.add_argument("--png", type=Path, default=None,
                        help=f"plot (default {default_png}; with --quick, beside --out)")
    parser.add_argument("--replot", type=Path, default=None, help="draw --png from a results JSON and stop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    # a smoke run's results must not replace the full run's JSON, nor its plot the docs' figure
    args.out = args.out or (default_out.with_name("fast_samplers_quick.json") if args.quick else default_out)
    args.png = args.png or (args.out.with_suffix(".png") if args.quick else default_png)
    return args


def main():
    args = parse_args()
    if args.replot:
        return replot(args.replot, args.png, lambda results, png: write_png(results["rows"], png))
    # Tensors of 2000 x 2 gain little from intra-op threads, and on a shared machine they lose a lot.
    torch.set_num_threads(args.threads)
    num, nfe_levels = (500, QUICK_NFE_LEVELS) if args.quick else (2000, NFE_LEVELS)
    start = time.perf_counter()
    setup = Setup(num, args.seed, MIX.sample(num, generator=generator(args.seed + 1)),
                  unit_directions(SW2_DIRECTIONS, 2, args.seed + 2))
    floor = noise_floor(setup)
    print(f"{num} samples, float64, {args.threads} thread(s); SW2 noise floor (exact vs exact): "
          f"{floor['mean']:.4f} ± {floor['std']:.4f} (mean ± std of {FLOOR_DRAWS} draws); mode weight std "
          f"{math.sqrt(TRUE_MODE_WEIGHT * (1 - TRUE_MODE_WEIGHT) / num):.4f}", flush=True)
    rows, references = [], {}
    for sde_cls, eps in SDES:
        sde_start = time.perf_counter()
        new_rows, references[sde_cls.__name__] = sde_rows(sde_cls, eps, nfe_levels, setup)
        rows += new_rows
        report = sde_report(sde_cls.__name__, new_rows, references[sde_cls.__name__], nfe_levels)
        print("\n".join(report) + f"\n ({time.perf_counter() - sde_start:.0f} s)", flush=True)
    print("\n".join(summary_lines(rows, floor, nfe_levels)))
    seconds = time.perf_counter() - start

    metadata = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), machine=platform.node(),
                    processor=platform.processor() or platform.machine(), python=platform.python_version(),
                    torch=torch.__version__, device="cpu", threads=args.threads, dtype="float64",
                    num_samples=num, seed=args.seed, quick=args.quick, nfe_levels=nfe_levels,
                    sdes={cls.__name__: dict(eps=eps) for cls, eps in SDES}, schedules=list(SCHEDULES),
                    solvers=list(SOLVERS), stochastic=sorted(STOCHASTIC), pc_levels=PC_LEVELS, pc_snr=PC_SNR,
                    ode_tol=ODE_TOL, references=references, sw2_directions=SW2_DIRECTIONS,
                    sw2_noise_floor=floor, true_mode_weight=TRUE_MODE_WEIGHT, total_seconds=seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(metadata=metadata, rows=rows), indent=2) + "\n")
    if have_matplotlib():
        write_png(rows, args.png)
        print(f"\nwrote {args.out} and {args.png} in {seconds:.0f} s")
    else:
        print(f"\nwrote {args.out} in {seconds:.0f} s; {NO_PLOT}")


if __name__ == "__main__":
    main()
