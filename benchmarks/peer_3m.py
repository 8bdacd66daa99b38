"""Our DPM-Solver++(3M) against k-diffusion's, update by update and in global error.

score_sde.sampling.solvers.DPMSolverPP3M weighs the second divided difference d2 of the last three x̂₀ by
−2φ₃, which integrates the quadratic through them exactly; k-diffusion 0.1.1.post1's sample_dpmpp_3m_sde
(eta = 0) weighs it by −φ₃. This script runs both on the same log-SNR grid from the same points, with the
exact x̂₀ of Gaussian-mixture data (score_sde.analytic), in float64 on one CPU thread:

  1. per step (VP, one Gaussian and the mixture): steps 1 and 2 agree to rounding; from step 3 on they part,
     and with k-diffusion fed our x̂₀ values the gap grows at each step by exactly −φ₃·d2 (in x/m);
  2. a variant of ours with the half weight (`second_difference_weight = 1`) against k-diffusion: the same
     formula, so the same trajectory to rounding;
  3. the mean per-sample error against the flow at 5 to 160 steps on VP and VE, and the observed order
     log2(e_N / e_2N), for N(μ, 0.5²I), N(μ, 0.02²I) ("narrow") and a 3-component mixture in 3-D. The
     flow is exact in closed form for one Gaussian ((x − m·μ)/√(m²c² + s²) is constant along it) and a
     float64 adaptive solve (rtol = atol = 1e-10) for the mixture; that solve's error on the Gaussians is
     printed beside them.

k-diffusion's grid is σ = e^{−λ} of our grid, ending at σ(eps) (no final zero, so no final `x = denoised`);
its state is x/m, its denoiser D(x/m, σ) = x̂₀(m·(x/m), t(σ)) with t(σ) the grid time of that σ.

Run: .venv/bin/python benchmarks/peer_3m.py [--samples 256] [--seed 0]   (seconds; needs the `peers` extra)
     --quick is accepted for uniformity with the other benchmarks: the full run already takes seconds.
"""
import argparse
import datetime
import math
import types

import torch
from peers import HalfWeight3M, import_k_diffusion_sampling  # benchmarks/ is on sys.path
from sampler_problems import REFERENCE_TOL, mean_error, p_T_samples, reference_flow

from score_sde.analytic import GaussianMixture
from score_sde.sampling.fast import fast_sample
from score_sde.sampling.schedules import time_grid
from score_sde.sampling.solvers import Denoiser, DPMSolverPP3M, Grid
from score_sde.sde import SDE, VESDE, VPSDE, ScoreFn

DTYPE = torch.float64
SDES = ((VPSDE, 1e-3), (VESDE, 1e-5))
STEPS = (5, 10, 20, 40, 80, 160)
TRACE_STEPS = 10
TRACED = ("gaussian", "mixture")
PROBLEMS = {
    "gaussian": GaussianMixture([1.0], [[1.0, -0.5, 0.5]], [0.5]),
    # std near σ(eps) ≈ 0.01: the h³ term of the global error does not cancel (docs/fast_sampling.md)
    "narrow": GaussianMixture([1.0], [[1.0, -0.5, 0.5]], [0.02]),
    "mixture": GaussianMixture([0.3, 0.5, 0.2], [[-4.0, 0.0, 2.0], [3.0, 3.0, -1.0], [0.0, -5.0, 0.0]],
                               [0.8, 1.2, 0.6]),
}


def gaussian_exact_flow(mixture: GaussianMixture, sde: SDE, eps: float, x_T: torch.Tensor) -> torch.Tensor:
    """The flow's image at eps of x_T for one-component data N(μ, c²I): (x − m·μ)/√(m²c² + s²) is constant."""
    mu, c = mixture.means[0], mixture.stds[0].item()
    (m_T, m_e), (s_T, s_e) = (v.tolist() for v in sde.marginal_coefficients(torch.tensor([sde.T, eps],
                                                                                          dtype=DTYPE)))
    z = (x_T - m_T * mu) / math.sqrt(m_T**2 * c**2 + s_T**2)
    return m_e * mu + math.sqrt(m_e**2 * c**2 + s_e**2) * z


def run_ours(solver: DPMSolverPP3M, sde: SDE, score_fn: ScoreFn, x_T: torch.Tensor, steps: int, eps: float
             ) -> tuple[list, list, Grid]:
    """fast_sample's loop with a given solver instance: x at every grid point and x̂₀ of every step."""
    grid = Grid.build(sde, time_grid(sde, "logsnr", steps, eps), x_T.device, x_T.dtype)
    denoiser, xs, x0s = Denoiser(score_fn), [x_T], []
    for i in range(steps):
        xs.append(solver.step(xs[-1], grid, i, denoiser))
        x0s.append(denoiser.last)
    return xs, x0s, grid


def exact_x0_fn(score_fn: ScoreFn, grid: Grid):
    """(i, x) -> x̂₀(x, t_i) from the score: the denoiser that k-diffusion calls."""
    denoiser = Denoiser(score_fn)
    return lambda i, x: denoiser.at(x, grid, i)


def run_k_diffusion(sampling: types.ModuleType, grid: Grid, x0_fn, x_T: torch.Tensor) -> list:
    """k-diffusion's sample_dpmpp_3m_sde (eta = 0) on the grid's σ; x0_fn(i, x) gives x̂₀ at grid point i.
    Returns x = m·x_kd at every grid point."""
    steps = len(grid.t) - 1
    sigmas = torch.tensor([grid.sigma(i) for i in range(steps + 1)], dtype=DTYPE)
    xs = []

    def model(x_kd, sigma):
        i = int((sigmas - sigma[0]).abs().argmin())
        return x0_fn(i, grid.m[i] * x_kd)

    def record(info):
        xs.append(grid.m[info["i"]] * info["x"])

    x_kd = sampling.sample_dpmpp_3m_sde(model, x_T / grid.m[0], sigmas, callback=record, disable=True,
                                        eta=0.0, noise_sampler=lambda sigma, sigma_next: None)
    return xs + [grid.m[steps] * x_kd]


def second_difference(grid: Grid, x0s: list, i: int) -> torch.Tensor:
    """d2 at step i: h² times the second divided difference of x̂₀ in λ at λ_i, λ_{i−1}, λ_{i−2}."""
    lam = grid.log_snr
    first = [(x0s[j] - x0s[j - 1]) / (lam[j] - lam[j - 1]) for j in (i, i - 1)]
    return grid.h(i) ** 2 * (first[0] - first[1]) / (lam[i] - lam[i - 2])


def phi3(h: float) -> float:
    return (math.expm1(-h) / h + 1) / h - 0.5


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def trace_lines(sampling: types.ModuleType, name: str, num: int, seed: int) -> list[str]:
    """Per step on VP: ours vs k-diffusion, the half-weight variant vs k-diffusion, and (k-diffusion fed
    our x̂₀) the growth of the gap minus −φ₃·d2, all relative to max |x|."""
    sde, eps = VPSDE(), 1e-3
    mixture, score_fn = PROBLEMS[name], PROBLEMS[name].score_fn(sde)
    x_T = p_T_samples(mixture, sde, num, seed)
    ours, x0s, grid = run_ours(DPMSolverPP3M(), sde, score_fn, x_T, TRACE_STEPS, eps)
    half = run_ours(HalfWeight3M(), sde, score_fn, x_T, TRACE_STEPS, eps)[0]
    theirs = run_k_diffusion(sampling, grid, exact_x0_fn(score_fn, grid), x_T)
    replay = run_k_diffusion(sampling, grid, lambda i, x: x0s[i], x_T)
    lines = [f" {name}, VP, {TRACE_STEPS} logsnr steps: after step k, max |difference| / max |x|",
             f"  {'k':>3} {'ours - kd':>11} {'half - kd':>11} {'gap growth + phi3 d2':>21}"]
    for k in range(1, TRACE_STEPS + 1):
        i, m = k - 1, grid.m[k]
        gap, gap_before = ours[k] / m - replay[k] / m, ours[i] / grid.m[i] - replay[i] / grid.m[i]
        growth = gap - (grid.sigma(k) / grid.sigma(i)) * gap_before
        expected = -phi3(grid.h(i)) * second_difference(grid, x0s, i) if i >= 2 else torch.zeros_like(gap)
        lines.append(f"  {k:>3} {relative(ours[k], theirs[k]):>11.1e} {relative(half[k], theirs[k]):>11.1e} "
                     f"{((growth - expected).abs().max() / (ours[k] / m).abs().max()).item():>21.1e}")
    return lines


def convergence_rows(sampling: types.ModuleType, num: int, seed: int) -> tuple[list, float]:
    """Mean error against the flow of ours, the half-weight variant and k-diffusion, per problem, SDE and
    steps; and the largest relative gap between the half-weight variant and k-diffusion."""
    rows, worst_half_gap = [], 0.0
    for name, mixture in PROBLEMS.items():
        for sde_cls, eps in SDES:
            sde = sde_cls()
            score_fn, x_T = mixture.score_fn(sde), p_T_samples(mixture, sde, num, seed)
            exact = gaussian_exact_flow(mixture, sde, eps, x_T) if len(mixture.weights) == 1 else None
            x_ref = reference_flow(mixture, sde, eps, x_T)[0] if exact is None else exact
            row = dict(problem=name, sde=sde_cls.__name__, errors={})
            if exact is not None:
                row["ode_error"] = mean_error(reference_flow(mixture, sde, eps, x_T)[0], exact)
            for steps in STEPS:
                ours = fast_sample(sde, score_fn, x_T.shape, solver="dpmpp_3m", steps=steps,
                                   schedule="logsnr", eps=eps, z=x_T, dtype=DTYPE)[0]
                half, _, grid = run_ours(HalfWeight3M(), sde, score_fn, x_T, steps, eps)
                theirs = run_k_diffusion(sampling, grid, exact_x0_fn(score_fn, grid), x_T)[-1]
                worst_half_gap = max(worst_half_gap, relative(half[-1], theirs))
                row["errors"][steps] = (mean_error(ours, x_ref), mean_error(theirs, x_ref))
            rows.append(row)
    return rows, worst_half_gap


def convergence_lines(rows: list) -> list[str]:
    lines = [" mean per-sample error vs the flow at eps (order = log2 of the error ratio to the previous N)",
             f"  {'problem':<9} {'sde':<6} {'N':>3} {'ours':>9} {'order':>6} {'k-diff':>9} {'order':>6} "
             f"{'kd/ours':>8}"]
    for row in rows:
        previous = None
        for steps, (ours, theirs) in row["errors"].items():
            orders = ("", "") if previous is None else (f"{math.log2(previous[0] / ours):.2f}",
                                                        f"{math.log2(previous[1] / theirs):.2f}")
            lines.append(f"  {row['problem']:<9} {row['sde']:<6} {steps:>3} {ours:>9.2e} {orders[0]:>6} "
                         f"{theirs:>9.2e} {orders[1]:>6} {theirs / ours:>8.2f}")
            previous = (ours, theirs)
        if "ode_error" in row:
            lines.append(f"  (the rtol = atol = {REFERENCE_TOL:g} ODE solve is off the exact flow by "
                         f"{row['ode_error']:.1e})")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the same run: it already takes seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sampling = import_k_diffusion_sampling()
    if sampling is None:
        print("k-diffusion is not installed (pip install -e '.[peers]'): nothing to compare")
        return
    print(f"{datetime.date.today()}: {args.samples} points from exact p_T samples, seed {args.seed}, "
          "float64, 1 thread; k-diffusion sample_dpmpp_3m_sde (eta = 0) vs score_sde dpmpp_3m, logsnr grid")
    for name in TRACED:
        print("\n".join(trace_lines(sampling, name, args.samples, args.seed)))
    rows, worst_half_gap = convergence_rows(sampling, args.samples, args.seed)
    print("\n".join(convergence_lines(rows)))
    print(f" half-weight variant vs k-diffusion, every run above: max |difference| / max |x| = "
          f"{worst_half_gap:.1e}")


if __name__ == "__main__":
    main()
