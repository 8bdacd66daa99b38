"""The peers' own few-step samplers (k-diffusion, diffusers) run on our SDEs, from our time grids.

Every SDE here has x_t = m(t)·x₀ + s(t)·z. With σ = s/m = e^{−λ}, k-diffusion's state is y = x/m and its
denoiser D(y, σ) = x̂₀(m·y, t(σ)); diffusers' schedulers hold the variance-preserving state
x_vp = α·y with α = 1/√(1 + σ²) (their `_sigma_to_alpha_sigma_t`), and with prediction_type="sample" the
model returns x̂₀. So a grid of ours, times [steps + 1] from T to eps, is the σ grid σ_i = s_i/m_i, and each
peer call of the model becomes one call of our `Denoiser` (one score evaluation, counted) at the grid point
of that σ, or, for σ off the grid (dpm_2's midpoints, dpm_fast, the adaptive solver), at t = t(λ = −log σ).

How each peer is driven, and what that costs in fidelity (measured by `self_check`, docs/fast_sampling.md):

- k-diffusion 0.1.1.post1: its `sample_*` functions take the σ grid itself (in x's dtype), σ = 0 appended
  when final_zero. `sample_dpm_fast` takes only σ_min, σ_max and its NFE: "kdiff:dpm_fast" uses times[0]
  and times[-1] and NFE = steps, and ignores the grid between them. It and `sample_dpm_adaptive` build
  their λ grid with the default dtype, so they run under float64 as default when x is float64.
- diffusers 0.42.1: `set_timesteps(n)` resets the scheduler's state, then its `sigmas` are replaced by ours
  (float64) and its `timesteps` by our times, which the loop hands the model and the model maps back to the
  grid. `DPMSolverMultistepScheduler.step` casts the state to float32 before the update (`sample =
  sample.to(torch.float32)`), so in float64 it agrees with the same formula of ours only to float32
  rounding; with that cast bypassed it agrees to 1e-15. Its `lower_order_final` (default on) drops to
  first order on the last step and to second on the one before only when there are fewer than 15 steps,
  but with final_sigmas_type="zero" the last step is always first order. UniPC's `lower_order_final`
  lowers the order of its last solver_order − 1 steps at any number of steps; its last step has no
  corrector (the corrector of step k uses the evaluation at step k + 1). With solver_type="bh1" and a
  final σ = 0 UniPC returns NaN, on diffusers' own schedules too (B(h) = −h = −∞ times a zero
  correction), so "diffusers:unipc_bh1_*" refuse final_zero. "diffusers:dpmpp_o3" (solver_type
  "midpoint", the default) takes its order-2 warm-up step as dpmpp_2m does, where k-diffusion's 3M puts φ₂
  on D1 (diffusers' "heun"); from the third step on, both weigh D2 by −φ₃ (docs/fast_sampling.md §6).

`python benchmarks/peers.py [--quick]` prints the self-check (seconds, one CPU thread).
"""
import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import math
import sys
import types
from collections.abc import Callable

import torch

from score_sde.analytic import GaussianMixture
from score_sde.sampling import ode_sample
from score_sde.sampling.fast import fast_sample
from score_sde.sampling.schedules import time_grid
from score_sde.sampling.solvers import Denoiser, DPMSolverPP3M, Grid
from score_sde.sde import SDE, VESDE, VPSDE, ScoreFn, subVPSDE

INSTALL_HINT = "pip install -e '.[peers]' (docs/fast_sampling.md §6 says how beside pinned versions)"


# ---- the peers, if installed ----


def import_k_diffusion_sampling() -> types.ModuleType | None:
    """k_diffusion.sampling, or None if k-diffusion is not installed.

    k_diffusion/__init__.py imports every submodule, among them evaluation -> clip -> pkg_resources, which
    recent setuptools (84.2.1 here) no longer ships. sampling.py itself needs none of that, so when the
    package's __init__ fails on an import, the subpackage is loaded under a bare parent package instead."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        return None
    try:
        import k_diffusion.sampling as sampling
        return sampling
    except ImportError as error:
        print(f"note: `import k_diffusion` fails ({error}); loading k_diffusion.sampling without the "
              "package's __init__")
    package = types.ModuleType("k_diffusion")
    # the real spec, so that a later find_spec("k_diffusion") still answers (a bare module's is None)
    package.__spec__, package.__path__ = spec, spec.submodule_search_locations
    sys.modules["k_diffusion"] = package
    return importlib.import_module("k_diffusion.sampling")


def k_diffusion_sampling() -> types.ModuleType | None:
    """k-diffusion's sampling module, or None when k-diffusion is absent."""
    return import_k_diffusion_sampling()


def diffusers_schedulers() -> types.ModuleType | None:
    """The `diffusers` module (its schedulers are attributes of it), or None when diffusers is absent."""
    if importlib.util.find_spec("diffusers") is None:
        return None
    return importlib.import_module("diffusers")


def absent_peers() -> list[str]:
    """One line per peer that is not installed, saying how to install it."""
    found = {"k-diffusion": importlib.util.find_spec("k_diffusion"),
             "diffusers": importlib.util.find_spec("diffusers")}
    return [f"{name} is not installed: {INSTALL_HINT}" for name, spec in found.items() if spec is None]


class HalfWeight3M(DPMSolverPP3M):
    """Our 3M with k-diffusion's weight −φ₃ on d2: the same formula as theirs, in our implementation."""

    second_difference_weight = 1.0


# ---- our problem in the peers' variables ----


class SigmaProblem:
    """Our SDE, score and grid in σ: y = x/m, D(y, σ) = x̂₀(m·y, t(σ)); counts score evaluations."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, x_T: torch.Tensor, times: torch.Tensor):
        if times.ndim != 1 or len(times) < 2 or not bool((times[1:] < times[:-1]).all()):
            raise ValueError(f"times must be a decreasing 1-D grid of at least 2 times, got {times}")
        self.sde, self.grid = sde, Grid.build(sde, times, x_T.device, x_T.dtype)
        self.denoiser = Denoiser(score_fn)
        self.sigma = [self.grid.sigma(i) for i in range(len(times))]
        self.log_sigma = torch.tensor(self.sigma, dtype=torch.float64).log()
        self.time_index = {t: i for i, t in enumerate(self.grid.t)}
        self.y_T = x_T / self.grid.m[0]

    @property
    def nfe(self) -> int:
        return self.denoiser.nfe

    @property
    def steps(self) -> int:
        return len(self.sigma) - 1

    def sigmas(self, final_zero: bool) -> list[float]:
        """The σ grid, with σ = 0 appended when final_zero."""
        return self.sigma + [0.0] if final_zero else list(self.sigma)

    def denoise_at(self, y: torch.Tensor, i: int) -> torch.Tensor:
        """D(y, σ_i) at grid point i."""
        return self.denoiser.at(self.grid.m[i] * y, self.grid, i)

    def denoise_off_grid(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(y, σ) at t = t(λ = −log σ), for a σ between grid points."""
        t = self.sde.t_from_log_snr(torch.tensor([-math.log(sigma)], dtype=torch.float64))
        m, s = (v.item() for v in self.sde.marginal_coefficients(t))
        t_device = t[0].to(device=self.y_T.device, dtype=self.y_T.dtype)
        return self.denoiser(m * y, t_device, m, s)

    def k_model(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """k-diffusion's model(y, σ [B]): the grid point of σ where σ is one (to its dtype's rounding)."""
        value = float(sigma.reshape(-1)[0])
        gaps = (self.log_sigma - math.log(value)).abs()
        i = int(gaps.argmin())
        if gaps[i] <= 4 * torch.finfo(sigma.dtype).eps:
            return self.denoise_at(y, i)
        return self.denoise_off_grid(y, value)

    def to_ours(self, y: torch.Tensor, final_zero: bool) -> torch.Tensor:
        """x = m(eps)·y at the grid's end; after a final step to σ = 0, y is already x̂₀."""
        return y if final_zero else self.grid.m[-1] * y


@contextlib.contextmanager
def default_dtype_of(x: torch.Tensor):
    """torch's default dtype set to float64 for a float64 x: k-diffusion's dpm_fast and dpm_adaptive make
    their λ grid with torch.tensor(σ) and torch.linspace, which would otherwise round it to float32."""
    previous = torch.get_default_dtype()
    if x.dtype == torch.float64:
        torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# ---- a peer sampler ----

RunFn = Callable[[SigmaProblem, bool], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class PeerSampler:
    """A peer library's own deterministic sampler, run on our SDE from our σ grid.

    run(problem, final_zero) returns x at the grid's end in our variables; `uses_grid` is False for the one
    sampler (kdiff:dpm_fast) that takes only the grid's ends; `final_zero_works` is False where the peer's
    own code returns NaN on a last step to σ = 0 (diffusers 0.42.1's UniPC with B(h) = "bh1")."""

    name: str
    library: str
    evaluations_per_step: int
    run: RunFn = dataclasses.field(repr=False)
    uses_grid: bool = True
    final_zero_works: bool = True

    def sample(self, sde: SDE, score_fn: ScoreFn, x_T: torch.Tensor, times: torch.Tensor,
               final_zero: bool = False) -> tuple[torch.Tensor, int]:
        """Runs the peer's code on σ_i = s_i/m_i of `times`.

        Args:
            x_T: [B, ...] at times[0] = T, any float dtype and device.
            times: float64 [steps + 1], decreasing from T to eps (schedules.time_grid).
            final_zero: append σ = 0 after the grid, as k-diffusion users do (diffusers:
                final_sigmas_type="zero"); the output is then x̂₀ at times[-1].
        Returns:
            (x [B, ...] at times[-1], i.e. m(eps)·y, or x̂₀ when final_zero; the number of score evaluations).
        """
        if final_zero and not self.final_zero_works:
            raise ValueError(f"{self.name} returns NaN on a final step to sigma = 0 (the peer's own code, "
                             "on its own schedules too): use final_zero=False")
        problem = SigmaProblem(sde, score_fn, x_T, times)
        with torch.no_grad():
            x = self.run(problem, final_zero)
        return x.to(x_T.dtype), problem.nfe


def never_called(sigma, sigma_next):
    raise RuntimeError("the noise sampler was called: eta must be 0 for a deterministic peer sampler")


def k_diffusion_run(sample_fn: Callable, **options) -> RunFn:
    """A k-diffusion sample_* function on the problem's σ grid, on x's device in x's dtype (at least float32):
    k-diffusion broadcasts σ with append_dims, so float64 σ would promote a float32 x to float64."""
    def run(problem: SigmaProblem, final_zero: bool) -> torch.Tensor:
        dtype = torch.promote_types(problem.y_T.dtype, torch.float32)
        sigmas = torch.tensor(problem.sigmas(final_zero), dtype=dtype, device=problem.y_T.device)
        y = sample_fn(problem.k_model, problem.y_T, sigmas, disable=True, **options)
        return problem.to_ours(y, final_zero)
    return run


def k_diffusion_fast_run(sampling: types.ModuleType) -> RunFn:
    """sample_dpm_fast from σ(T) to σ(eps) in NFE = steps (its own uniform-in-λ steps of orders 3, …, 3
    then 2, 1 or the remainder); final_zero adds Tweedie's x̂₀ at eps, one more evaluation."""
    def run(problem: SigmaProblem, final_zero: bool) -> torch.Tensor:
        with default_dtype_of(problem.y_T):
            y = sampling.sample_dpm_fast(problem.k_model, problem.y_T, problem.sigma[-1], problem.sigma[0],
                                         problem.steps, disable=True)
        if final_zero:
            return problem.denoise_at(y, problem.steps)
        return problem.to_ours(y, final_zero)
    return run


def k_diffusion_samplers(sampling: types.ModuleType) -> list[PeerSampler]:
    deterministic_sde = dict(eta=0.0, noise_sampler=never_called)
    runs = [("euler", 1, k_diffusion_run(sampling.sample_euler)),
            ("heun", 2, k_diffusion_run(sampling.sample_heun)),
            ("dpm_2", 2, k_diffusion_run(sampling.sample_dpm_2)),
            ("lms", 1, k_diffusion_run(sampling.sample_lms)),
            ("dpmpp_2m", 1, k_diffusion_run(sampling.sample_dpmpp_2m)),
            # at eta = 0 the midpoint variant is dpmpp_2m's update; the heun variant weighs the difference
            # of the last two x̂₀ by φ₂ instead of −φ₁/2
            ("dpmpp_2m_sde", 1, k_diffusion_run(sampling.sample_dpmpp_2m_sde, **deterministic_sde)),
            ("dpmpp_2m_sde_heun", 1, k_diffusion_run(sampling.sample_dpmpp_2m_sde, solver_type="heun",
                                                     **deterministic_sde)),
            ("dpmpp_3m", 1, k_diffusion_run(sampling.sample_dpmpp_3m_sde, **deterministic_sde))]
    samplers = [PeerSampler(f"kdiff:{name}", "k-diffusion", per_step, run) for name, per_step, run in runs]
    return samplers + [PeerSampler("kdiff:dpm_fast", "k-diffusion", 1, k_diffusion_fast_run(sampling),
                                   uses_grid=False)]


class Float64State(torch.Tensor):
    """A state whose .to(torch.float32) is itself: bypasses DPMSolverMultistepScheduler.step's cast of the
    state to float32, so that self_check can show the cast is the only difference from our update."""

    def to(self, *args, **kwargs):
        if args == (torch.float32,) and not kwargs:
            return self
        return super().to(*args, **kwargs)


def drive_scheduler(scheduler, problem: SigmaProblem, final_zero: bool, bypass_float32_cast: bool = False
                    ) -> torch.Tensor:
    """A diffusers pipeline's loop (model, then scheduler.step) on our σ grid; returns x in our variables.

    set_timesteps(n) resets the scheduler's multistep state; then its σ become ours (float64, its
    `sigmas[n]` being σ(eps) or 0) and its timesteps our times, which the model maps back to grid points."""
    sigmas = problem.sigmas(final_zero)
    n = len(sigmas) - 1
    scheduler.set_timesteps(n)
    scheduler.sigmas = torch.tensor(sigmas, dtype=torch.float64)
    scheduler.timesteps = torch.tensor(problem.grid.t[:n], dtype=torch.float64)
    scheduler.set_begin_index(0)
    alpha = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas)[0].tolist()  # α = 1/√(1 + σ²)
    sample = alpha[0] * problem.y_T
    if bypass_float32_cast:
        sample = sample.as_subclass(Float64State)
    for timestep in scheduler.timesteps:
        i = problem.time_index[timestep.item()]
        x0 = problem.denoise_at(sample / alpha[i], i)
        sample = scheduler.step(x0, timestep, sample).prev_sample
    return problem.to_ours(sample.as_subclass(torch.Tensor) / alpha[n], final_zero)


def diffusers_run(scheduler_cls: type, bypass_float32_cast: bool = False, **config) -> RunFn:
    """A fresh scheduler per run, predicting x̂₀ and configured for the grid's end (σ(eps) or 0)."""
    def run(problem: SigmaProblem, final_zero: bool) -> torch.Tensor:
        scheduler = scheduler_cls(prediction_type="sample", final_sigmas_type="zero" if final_zero else
                                  "sigma_min", **config)
        return drive_scheduler(scheduler, problem, final_zero, bypass_float32_cast)
    return run


def diffusers_samplers(diffusers: types.ModuleType) -> list[PeerSampler]:
    samplers = []
    for order in (2, 3):
        run = diffusers_run(diffusers.DPMSolverMultistepScheduler, algorithm_type="dpmsolver++",
                            solver_order=order)
        samplers.append(PeerSampler(f"diffusers:dpmpp_o{order}", "diffusers", 1, run))
    for solver_type in ("bh1", "bh2"):
        for order in (2, 3):
            run = diffusers_run(diffusers.UniPCMultistepScheduler, predict_x0=True, solver_order=order,
                                solver_type=solver_type)
            # B(h) = −h is −∞ on a last step to σ = 0, and diffusers multiplies it by a zero correction
            samplers.append(PeerSampler(f"diffusers:unipc_{solver_type}_o{order}", "diffusers", 1, run,
                                        final_zero_works=solver_type != "bh1"))
    return samplers


def peer_samplers() -> dict[str, PeerSampler]:
    """The installed peers' deterministic samplers by name ("kdiff:…", "diffusers:…")."""
    samplers = []
    sampling = k_diffusion_sampling()
    if sampling is not None:
        samplers += k_diffusion_samplers(sampling)
    diffusers = diffusers_schedulers()
    if diffusers is not None:
        samplers += diffusers_samplers(diffusers)
    return {sampler.name: sampler for sampler in samplers}


def k_diffusion_adaptive(sde: SDE, score_fn: ScoreFn, x_T: torch.Tensor, eps: float, rtol: float,
                         atol: float) -> tuple[torch.Tensor, int]:
    """k-diffusion's sample_dpm_adaptive (DPM-Solver-23, Lu et al. 2022) from T to eps.

    Its tolerances apply to y = x/m, and it stops within 1e-5 in λ of eps (its loop condition).
    Returns (x [B, ...] at eps, the number of score evaluations, rejected steps included)."""
    sampling = k_diffusion_sampling()
    if sampling is None:
        raise RuntimeError(f"k-diffusion is not installed: {INSTALL_HINT}")
    problem = SigmaProblem(sde, score_fn, x_T, torch.tensor([sde.T, eps], dtype=torch.float64))
    with torch.no_grad(), default_dtype_of(x_T):
        y = sampling.sample_dpm_adaptive(problem.k_model, problem.y_T, problem.sigma[-1], problem.sigma[0],
                                         rtol=rtol, atol=atol, disable=True)
    return problem.to_ours(y, False), problem.nfe


# ---- self-check: the adapters reproduce our identical updates ----

CHECK_MIXTURE = GaussianMixture([0.3, 0.7], [[-2.0, 1.0], [2.0, 0.5]], [0.5, 0.8])
CHECK_SDES = (VPSDE, subVPSDE, VESDE)
CHECK_SCHEDULES = ("logsnr", "karras")
CHECK_STEPS, CHECK_POINTS = 7, 64
TOLERANCES = {"exact": 1e-12, "diffusers": 1e-10}  # in float64
OursFn = Callable[[SDE, ScoreFn, torch.Tensor, str, bool], tuple[torch.Tensor, int]]


@dataclasses.dataclass(frozen=True)
class Case:
    """A peer run against our run of the same update. tolerance: a TOLERANCES key, or a number where the
    pair legitimately differs by up to that much (`why` says why)."""

    label: str
    peer: RunFn
    ours: OursFn
    final_zero: bool = False
    tolerance: str | float = "exact"
    why: str = ""


def ours_named(solver: str) -> OursFn:
    """fast_sample with a named solver, CHECK_STEPS steps; final_zero adds denoise=True."""
    def run(sde, score_fn, x_T, schedule, final_zero):
        return fast_sample(sde, score_fn, x_T.shape, solver=solver, steps=CHECK_STEPS, schedule=schedule,
                           eps=sde.sampling_eps, z=x_T, dtype=x_T.dtype, denoise=final_zero)
    return run


@torch.no_grad()
def ours_half_weight_3m(sde, score_fn, x_T, schedule, final_zero):
    """fast_sample's loop with HalfWeight3M (fast_sample takes solvers by name only)."""
    times = time_grid(sde, schedule, CHECK_STEPS, sde.sampling_eps)
    grid, denoiser, solver = Grid.build(sde, times, x_T.device, x_T.dtype), Denoiser(score_fn), HalfWeight3M()
    x = x_T
    for i in range(CHECK_STEPS):
        x = solver.step(x, grid, i, denoiser)
    if final_zero:
        x = denoiser.at(x, grid, CHECK_STEPS)
    return x, denoiser.nfe


def k_diffusion_cases(sampling: types.ModuleType) -> list[Case]:
    runs = {sampler.name: sampler.run for sampler in k_diffusion_samplers(sampling)}
    return [
        Case("kdiff:euler = euler", runs["kdiff:euler"], ours_named("euler")),
        Case("kdiff:euler, final sigma 0 = euler + denoise", runs["kdiff:euler"], ours_named("euler"), True),
        Case("kdiff:dpmpp_2m = dpmpp_2m", runs["kdiff:dpmpp_2m"], ours_named("dpmpp_2m")),
        Case("kdiff:dpmpp_2m_sde (eta 0) = dpmpp_2m", runs["kdiff:dpmpp_2m_sde"], ours_named("dpmpp_2m")),
        Case("kdiff:dpmpp_3m = dpmpp_3m, half weight on d2", runs["kdiff:dpmpp_3m"], ours_half_weight_3m),
        Case("kdiff:heun = heun (Heun to sigma(eps) too)", runs["kdiff:heun"], ours_named("heun")),
        Case("kdiff:heun, final sigma 0 = heun + denoise", runs["kdiff:heun"], ours_named("heun"), True),
    ]


def diffusers_cases(diffusers: types.ModuleType) -> list[Case]:
    dpm, unipc = diffusers.DPMSolverMultistepScheduler, diffusers.UniPCMultistepScheduler
    cast = "step() casts the state to float32"

    def dpmpp(order, bypass, **config):
        return diffusers_run(dpm, bypass, algorithm_type="dpmsolver++", solver_order=order, **config)

    no_lower = dict(lower_order_final=False)
    unipc_euler = diffusers_run(unipc, predict_x0=True, solver_order=1,
                                disable_corrector=list(range(CHECK_STEPS)))
    return [
        Case("diffusers:dpmpp o1 = euler", dpmpp(1, False), ours_named("euler"), tolerance=1e-5, why=cast),
        Case("  the same, cast bypassed", dpmpp(1, True), ours_named("euler"), tolerance="diffusers"),
        Case("  the same, final sigma 0 = euler + denoise", dpmpp(1, True), ours_named("euler"), True,
             "diffusers"),
        Case("diffusers:dpmpp o2, lower_order_final off = dpmpp_2m", dpmpp(2, False, **no_lower),
             ours_named("dpmpp_2m"), tolerance=1e-5, why=cast),
        Case("  the same, cast bypassed", dpmpp(2, True, **no_lower), ours_named("dpmpp_2m"),
             tolerance="diffusers"),
        # the default solver_type "midpoint" takes its second (order-2 warm-up) step as dpmpp_2m does;
        # k-diffusion's 3M and ours take it with φ₂ on D1, which is diffusers' "heun"
        Case("diffusers:dpmpp o3 heun, lower_order_final off, bypassed = dpmpp_3m half weight",
             dpmpp(3, True, solver_type="heun", **no_lower), ours_half_weight_3m, tolerance="diffusers"),
        Case("diffusers:unipc o1, correctors off = euler", unipc_euler, ours_named("euler"),
             tolerance="diffusers"),
    ]


def check_problems(dtype: torch.dtype):
    """(sde, score_fn, x_T, schedule) of every SDE and schedule of the self-check, x_T from the prior."""
    for sde_cls in CHECK_SDES:
        sde = sde_cls()
        x_T = sde.prior_sampling((CHECK_POINTS, 2), generator=torch.Generator().manual_seed(0), dtype=dtype)
        for schedule in CHECK_SCHEDULES:
            yield sde, CHECK_MIXTURE.score_fn(sde), x_T, schedule


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def tolerance_of(case: Case, dtype: torch.dtype) -> float:
    """The case's bound; below float64, rounding dominates: 1000 ulps of the dtype at least."""
    bound = TOLERANCES.get(case.tolerance, case.tolerance)
    return bound if dtype == torch.float64 else max(bound, 1000 * torch.finfo(dtype).eps)


def check_case(case: Case, dtype: torch.dtype) -> str:
    """The worst relative difference over CHECK_SDES × CHECK_SCHEDULES; NFEs must be equal."""
    worst, nfes = 0.0, set()
    for sde, score_fn, x_T, schedule in check_problems(dtype):
        problem = SigmaProblem(sde, score_fn, x_T, time_grid(sde, schedule, CHECK_STEPS, sde.sampling_eps))
        with torch.no_grad():
            theirs = case.peer(problem, case.final_zero)
        ours, nfe = case.ours(sde, score_fn, x_T, schedule, case.final_zero)
        assert problem.nfe == nfe, f"{case.label}: {problem.nfe} evaluations, ours {nfe}"
        worst, nfes = max(worst, relative(theirs, ours)), nfes | {nfe}
    bound = tolerance_of(case, dtype)
    assert worst <= bound, f"{case.label}: max relative difference {worst:.1e} > {bound:.0e}"
    why = f" ({case.why})" if case.why and dtype == torch.float64 else ""
    return f"  {case.label:<80} {worst:8.1e} <= {bound:.0e}  nfe {sorted(nfes)}{why}"


SANITY_STEPS = (7, 28)
REFERENCE_TOL = 1e-9


def reference_flows(dtype: torch.dtype) -> dict:
    """Per SDE: (sde, score_fn, x_T, the flow at sampling_eps by an adaptive solve at REFERENCE_TOL)."""
    flows = {}
    for sde, score_fn, x_T, _ in check_problems(dtype):
        if type(sde).__name__ not in flows:
            x_ref = ode_sample(sde, score_fn, x_T.shape, rtol=REFERENCE_TOL, atol=REFERENCE_TOL, z=x_T,
                               eps=sde.sampling_eps)[0]
            flows[type(sde).__name__] = (sde, score_fn, x_T, x_ref)
    return flows


def sanity_lines(samplers: dict[str, PeerSampler], flows: dict) -> list[str]:
    """Every sampler, logsnr grids: exact NFE, with and without a final σ = 0, and an error against the flow
    that falls from 7 to 28 steps (an adapter error would not)."""
    lines = [f"  relative error vs the flow at eps, logsnr grid, {SANITY_STEPS[0]} -> {SANITY_STEPS[1]} steps"
             f" (NFE at {SANITY_STEPS[0]})",
             f"  {'sampler':<28}" + "".join(f"{name:>22}" for name in flows)]
    for sampler in samplers.values():
        cells = []
        for sde, score_fn, x_T, x_ref in flows.values():
            errors = []
            for steps in SANITY_STEPS:
                times = time_grid(sde, "logsnr", steps, sde.sampling_eps)
                for final_zero in (False, True) if sampler.final_zero_works else (False,):
                    x, nfe = sampler.sample(sde, score_fn, x_T, times, final_zero)
                    expected = sampler.evaluations_per_step * steps + final_zero
                    assert nfe == expected, f"{sampler.name}: {nfe} evaluations, expected {expected}"
                errors.append(relative(sampler.sample(sde, score_fn, x_T, times)[0], x_ref))
            assert errors[1] < errors[0], f"{sampler.name}, {type(sde).__name__}: error {errors} not falling"
            cells.append(f"{errors[0]:.1e} -> {errors[1]:.1e}")
        nfe = sampler.evaluations_per_step * SANITY_STEPS[0]
        lines.append(f"  {sampler.name:<24} {nfe:>3}" + "".join(f"{cell:>22}" for cell in cells))
    return lines


def adaptive_lines(flows: dict) -> list[str]:
    lines = []
    for name, (sde, score_fn, x_T, x_ref) in flows.items():
        x, nfe = k_diffusion_adaptive(sde, score_fn, x_T, sde.sampling_eps, rtol=1e-6, atol=1e-6)
        error = relative(x, x_ref)
        assert error < 1e-3, f"k_diffusion_adaptive on {name}: relative error {error:.1e}"
        lines.append(f"  kdiff:dpm_adaptive, rtol = atol = 1e-6, {name}: relative error {error:.1e}, "
                     f"{nfe} NFE")
    return lines


def unipc_bh1_final_zero_line(diffusers: types.ModuleType) -> str:
    """Reports (no assertion: it is the peer's behaviour) UniPC bh1's last step to σ = 0 on diffusers' own
    schedule, with a model returning a finite x̂₀."""
    scheduler = diffusers.UniPCMultistepScheduler(prediction_type="sample", solver_type="bh1")
    scheduler.set_timesteps(CHECK_STEPS)
    sample = torch.ones(4, 2)
    for timestep in scheduler.timesteps:
        sample = scheduler.step(0.5 * sample, timestep, sample).prev_sample
    return (f"  diffusers UniPC bh1 on its own {CHECK_STEPS}-step schedule ending at sigma 0: NaN in the "
            f"output = {bool(sample.isnan().any())} (so PeerSampler refuses final_zero for unipc_bh1_*)")


def self_check(dtype: torch.dtype = torch.float64) -> list[str]:
    """Proves the adapters on GaussianMixture data with its exact score (VP, sub-VP, VE; logsnr and karras
    grids of CHECK_STEPS steps; CHECK_POINTS points): each peer sampler that computes the same update as
    one of ours matches it to TOLERANCES, with the same NFE. Raises AssertionError on any mismatch.

    Returns printable lines: the measured worst relative differences, then every installed sampler's
    error against the flow at two step counts, and k-diffusion's adaptive solver."""
    sampling, diffusers = k_diffusion_sampling(), diffusers_schedulers()
    lines = [f"self-check, {dtype}: worst max|peer - ours| / max|ours| over VP, sub-VP, VE x logsnr, karras, "
             f"{CHECK_STEPS} steps, {CHECK_POINTS} points of a 2-D mixture, exact score"]
    lines += [f"  skipped: {line}" for line in absent_peers()]
    cases = k_diffusion_cases(sampling) if sampling else []
    cases += diffusers_cases(diffusers) if diffusers else []
    lines += [check_case(case, dtype) for case in cases]
    if diffusers is not None:
        lines.append(unipc_bh1_final_zero_line(diffusers))
    samplers = peer_samplers()
    if samplers:
        flows = reference_flows(dtype)
        lines += sanity_lines(samplers, flows) + (adaptive_lines(flows) if sampling else [])
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same run: it already takes seconds")
    parser.parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(self_check()))


if __name__ == "__main__":
    main()
