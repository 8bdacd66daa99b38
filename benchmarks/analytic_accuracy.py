"""Accuracy of the samplers and of the likelihood against exact answers, with no training.

The score is the exact score of a 2-D Gaussian mixture (score_sde.analytic), 0.2·N((-5, -5), I) +
0.8·N((5, 5), I), so every error measured here belongs to the sampler or the integrator, not to a network.
All in float64 on the CPU, seeded with torch.Generator.

Part 1, samplers: for VPSDE, subVPSDE and VESDE with N in (1000, 100, 30) noise levels, the PC samplers
(predictor-only and predictor + corrector at every N; corrector-only, 50 Langevin steps per level, at N = 100
only, since at N = 1000 they alone would take about 9 minutes) and the adaptive probability-flow ODE sampler
(independent of N), started from the prior or from exact samples of p_T. Reported: the weight of the (5, 5)
mode and its error vs 0.8 (binomial std 0.0057 at 5000 samples), the sliced Wasserstein-2 distance (SW2) to
independent exact data samples, next to the SW2 noise floor between exact sample sets of the same size
(mean ± std over FLOOR_DRAWS sets: SW2 here is dominated by the binomial noise of the mode weights), the
number of score evaluations (NFE) and the wall time. The ODE from the prior is expected to miss 0.8 (about
0.792 for VP and sub-VP, 0.777 for VE), because the prior is not exactly p_T.

Part 2, likelihood: for each SDE (N = 1000), log p_eps(x) of 1000 mixture points through the
probability-flow ODE (torch "rk45" and "scipy-rk45"; exact or Rademacher divergence), compared with what the
ODE should give with the SDE's prior: log p_eps(x) - log p_T(z) + prior_logp(z). Errors are in bits/dim;
the prior mismatch |log p_T(z) - prior_logp(z)| alone is reported in nats.

Run:
    .venv/bin/python benchmarks/analytic_accuracy.py            # full: 5000 samples, about 2 minutes
    .venv/bin/python benchmarks/analytic_accuracy.py --quick    # smoke run: 1000 samples, N in (100, 30)
Options: --out PATH (default benchmarks/results/analytic_accuracy.json), --seed, --threads (default 1: one
CPU thread, so that wall times are comparable between machines and robust to other load). It prints a table,
one line per run as it finishes, and writes all rows with metadata as JSON.
"""
import argparse
import datetime
import json
import math
import statistics
import time
from pathlib import Path

import torch

from score_sde.analytic import two_mode_mixture
from score_sde.analytic import upper_mode_weight as mode_weight
from score_sde.likelihood import log_likelihood
from score_sde.metrics import sliced_w2, unit_directions
from score_sde.sampling import ode_sample, pc_sample
from score_sde.sde import VESDE, VPSDE, expand_to, subVPSDE

MIX = two_mode_mixture()
TRUE_MODE_WEIGHT = 0.8
SDE_CLASSES = (VPSDE, subVPSDE, VESDE)
SAMPLING_EPS = 1e-3  # every SDE's, VE's too, as the table was first measured (VESDE's own default: 1e-5)
DTYPE = torch.float64
# (predictor, corrector, snr, n_steps): predictor-only, PC, and corrector-only (annealed Langevin) samplers.
PC_SAMPLERS = (
    ("euler_maruyama", "none", 0.16, 1),
    ("reverse_diffusion", "none", 0.16, 1),
    ("ancestral_sampling", "none", 0.16, 1),
    ("reverse_diffusion", "langevin", 0.16, 1),
    ("reverse_diffusion", "ald", 0.16, 1),
    ("none", "langevin", 0.16, 50),
    ("none", "ald", 0.3, 50),
)
# Corrector-only samplers make 50 score evaluations per level: at N = 1000 they alone would take ~9 minutes.
CORRECTOR_ONLY_LEVELS = (100,)
FLOOR_DRAWS = 8
LIKELIHOOD_POINTS = 1000
# (ODE method, divergence): the torch integrator and the original's scipy path, exact and Hutchinson.
LIKELIHOOD_RUNS = (
    ("rk45", "exact"), ("rk45", "rademacher"), ("scipy-rk45", "exact"), ("scipy-rk45", "rademacher"),
)
BITS_PER_NAT_PER_DIM = 1 / (2 * math.log(2))  # nats -> bits/dim for 2-D data


def generator(seed):
    return torch.Generator().manual_seed(seed)


def mode_weight_std(num):
    """Standard deviation of the mode weight of num exact samples: the noise on the 'error' column."""
    return math.sqrt(TRUE_MODE_WEIGHT * (1 - TRUE_MODE_WEIGHT) / num)


def timed(fn):
    start = time.perf_counter()
    x, nfe = fn()
    return x, nfe, time.perf_counter() - start


def sample_metrics(x, nfe, seconds, reference, directions):
    weight = mode_weight(x)
    return dict(status="ok", mode_weight=weight, mode_weight_error=weight - TRUE_MODE_WEIGHT,
                sw2=sliced_w2(x, reference, directions), nfe=nfe, seconds=seconds)


def run_pc(sde_cls, N, sampler, num, seed, reference, directions):
    """One PC sampler run as a JSON row; 'unsupported' where the sampler rejects the SDE."""
    predictor, corrector, snr, n_steps = sampler
    sde = sde_cls(N=N)
    row = dict(sde=sde_cls.__name__, N=N, sampler=f"pc:{predictor}+{corrector}", predictor=predictor,
               corrector=corrector, snr=snr, n_steps=n_steps, source="prior")
    try:
        x, nfe, seconds = timed(lambda: pc_sample(
            sde, MIX.score_fn(sde), (num, 2), predictor=predictor, corrector=corrector, snr=snr,
            n_steps=n_steps, denoise=True, eps=SAMPLING_EPS, generator=generator(seed), dtype=DTYPE))
    except ValueError as error:  # ancestral sampling on subVPSDE: the SDE has no discrete chain
        return {**row, "status": "unsupported", "reason": str(error)}
    return {**row, **sample_metrics(x, nfe, seconds, reference, directions)}


def exact_p_T_samples(sde, num, g):
    """z = m(T)·x0 + s(T)·noise with fresh exact data x0: exact samples of the perturbed data at T."""
    m, s = sde.marginal_coefficients(torch.ones(num, dtype=DTYPE))
    x0 = MIX.sample(num, generator=g)
    noise = torch.randn(num, 2, generator=g, dtype=DTYPE)
    return expand_to(m, x0) * x0 + expand_to(s, x0) * noise


def run_ode(sde_cls, source, num, seed, reference, directions):
    """One probability-flow ODE sampler run (adaptive RK45) from the prior or from exact p_T samples."""
    sde = sde_cls()
    g = generator(seed)
    z = exact_p_T_samples(sde, num, g) if source == "exact p_T" else None
    x, nfe, seconds = timed(lambda: ode_sample(
        sde, MIX.score_fn(sde), (num, 2), rtol=1e-5, atol=1e-5, eps=SAMPLING_EPS, z=z, generator=g,
        dtype=DTYPE))
    row = dict(sde=sde_cls.__name__, N="adaptive", sampler="ode:rk45", predictor=None, corrector=None,
               snr=None, n_steps=None, source=source)
    return {**row, **sample_metrics(x, nfe, seconds, reference, directions)}


def pc_runs(levels):
    """(N, sampler) pairs: every PC sampler at every N, the corrector-only ones at CORRECTOR_ONLY_LEVELS."""
    return [(N, sampler) for N in levels for sampler in PC_SAMPLERS
            if sampler[0] != "none" or N in CORRECTOR_ONLY_LEVELS]


def noise_floor(reference, directions, seed):
    """SW2 from reference to FLOOR_DRAWS independent exact sample sets of its size: {mean, std, draws}."""
    g = generator(seed)
    exact_sets = [MIX.sample(len(reference), generator=g) for _ in range(FLOOR_DRAWS)]
    draws = [sliced_w2(x, reference, directions) for x in exact_sets]
    return dict(mean=statistics.mean(draws), std=statistics.stdev(draws), draws=draws)


def sampler_rows(levels, num, seed):
    """Every sampler on every SDE, each row printed as it is done; and the SW2 noise floor between two
    exact sample sets of size num."""
    reference = MIX.sample(num, generator=generator(seed + 1))
    directions = unit_directions(128, 2, seed + 2)
    floor = noise_floor(reference, directions, seed + 3)
    print_sampler_header(floor, num)
    rows = []
    for sde_cls in SDE_CLASSES:
        for N, sampler in pc_runs(levels):
            rows.append(run_pc(sde_cls, N, sampler, num, seed, reference, directions))
            print(format_sampler_row(rows[-1]), flush=True)
        for source in ("prior", "exact p_T"):
            rows.append(run_ode(sde_cls, source, num, seed, reference, directions))
            print(format_sampler_row(rows[-1]), flush=True)
    return rows, floor


def likelihood_row(sde, x, method, divergence, seed):
    """log_likelihood against log p_eps(x) − log p_T(z) + prior_logp(z), the ODE's exact answer."""
    start = time.perf_counter()
    logp, z, nfe = log_likelihood(sde, MIX.score_fn(sde), x, eps=1e-5, rtol=1e-5, atol=1e-5, method=method,
                                  divergence=divergence, generator=generator(seed))
    seconds = time.perf_counter() - start
    eps_t = torch.full((x.shape[0],), 1e-5, dtype=DTYPE)
    p_T = MIX.marginal_log_prob(sde, z, torch.ones(x.shape[0], dtype=DTYPE))
    exact = MIX.marginal_log_prob(sde, x, eps_t) - p_T + sde.prior_logp(z)
    error = (logp - exact) * BITS_PER_NAT_PER_DIM
    return dict(sde=type(sde).__name__, N=sde.N, method=method, divergence=divergence,
                mean_abs_error_bpd=error.abs().mean().item(), mean_error_bpd=error.mean().item(),
                stderr_error_bpd=(error.std() / math.sqrt(error.numel())).item(),
                prior_mismatch_nats=(p_T - sde.prior_logp(z)).abs().mean().item(),
                mean_logp_nats=logp.mean().item(), nfe=nfe, seconds=seconds)


def likelihood_rows(seed):
    x = MIX.sample(LIKELIHOOD_POINTS, generator=generator(seed + 4))
    return [likelihood_row(sde_cls(N=1000), x, method, divergence, seed + 5)
            for sde_cls in SDE_CLASSES for method, divergence in LIKELIHOOD_RUNS]


def print_sampler_header(floor, num):
    print(f"Samplers: {num} samples; mode weight vs {TRUE_MODE_WEIGHT}, std {mode_weight_std(num):.4f}")
    print(f"SW2 noise floor (exact vs exact samples): {floor['mean']:.4f} ± {floor['std']:.4f} "
          f"(mean ± std of {FLOOR_DRAWS} draws)")
    print(f"{'sde':<9} {'N':>8} {'sampler':<32} {'source':<9} {'weight':>7} {'error':>8} {'SW2':>8} "
          f"{'NFE':>7} {'sec':>7}")


def format_sampler_row(r):
    head = f"{r['sde']:<9} {r['N']!s:>8} {r['sampler']:<32} {r['source']:<9}"
    if r["status"] != "ok":
        return f"{head} {r['status']}"
    return (f"{head} {r['mode_weight']:>7.4f} {r['mode_weight_error']:>+8.4f} {r['sw2']:>8.4f} "
            f"{r['nfe']:>7d} {r['seconds']:>7.2f}")


def print_likelihood(rows):
    print(f"\nLikelihood: {LIKELIHOOD_POINTS} points, eps=1e-5, rtol=atol=1e-5; errors in bits/dim vs the "
          "exact ODE answer with the SDE's prior")
    print(f"{'sde':<9} {'method':<11} {'divergence':<11} {'|err|':>9} {'err':>10} {'± se':>9} "
          f"{'prior mismatch (nats)':>22} {'NFE':>5} {'sec':>7}")
    for r in rows:
        print(f"{r['sde']:<9} {r['method']:<11} {r['divergence']:<11} {r['mean_abs_error_bpd']:>9.2e} "
              f"{r['mean_error_bpd']:>+10.2e} {r['stderr_error_bpd']:>9.2e} "
              f"{r['prior_mismatch_nats']:>22.2e} {r['nfe']:>5d} {r['seconds']:>7.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000 samples, N in (100, 30)")
    default_out = Path(__file__).parent / "results" / "analytic_accuracy.json"
    parser.add_argument("--out", type=Path, default=default_out, help=f"JSON output (default {default_out})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    # Tensors of 5000 x 2 gain little from intra-op threads, and on a shared machine they lose a lot.
    torch.set_num_threads(args.threads)
    num, levels = (1000, (100, 30)) if args.quick else (5000, (1000, 100, 30))

    samplers, floor = sampler_rows(levels, num, args.seed)
    likelihood = likelihood_rows(args.seed)
    print_likelihood(likelihood)

    metadata = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                    device="cpu", threads=args.threads, dtype="float64", num_samples=num, seed=args.seed,
                    quick=args.quick, levels=levels, corrector_only_levels=CORRECTOR_ONLY_LEVELS,
                    mode_weight_std=mode_weight_std(num), likelihood_points=LIKELIHOOD_POINTS,
                    sw2_directions=128, sw2_noise_floor=floor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = dict(metadata=metadata, samplers=samplers, likelihood=likelihood)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
