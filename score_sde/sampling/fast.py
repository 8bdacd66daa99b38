"""fast_sample: a few-step solver (sampling/solvers.py) on a time grid (sampling/schedules.py), any SDE."""
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from score_sde.registry import lookup
from score_sde.sampling.callbacks import StepCallback
from score_sde.sampling.schedules import time_grid
from score_sde.sampling.solvers import SOLVERS, Denoiser, Grid
from score_sde.sde import SDE, VESDE, VPSDE, ScoreFn, subVPSDE

AUTO = "auto"  # solver or schedule: the recommended one for the SDE and steps

# The default solver, grid and solver options per SDE and number of steps, chosen on the choice halves of
# benchmarks/sampler_suite.py (docs/fast_sampling.md §4): per SDE class, [(fewest steps, settings)], the
# last entry whose threshold `steps` reaches applies. Any other SDE gets the VP row.
# The rows were chosen at 5, 8, 10 and 20 steps; each applies from about the midpoint below it.
_DATA = dict(prediction="data", lower_order_final=True)  # x̂₀ interpolated, order lowered at the end
_NOISE = dict(prediction="noise", lower_order_final=True)  # ε̂ interpolated, order lowered at the end
_DATA_TO_THE_END = dict(prediction="data", lower_order_final=False)  # x̂₀ interpolated, full order throughout
RECOMMENDED = {
    VPSDE: [(1, ("adams_pc", "quadratic", dict(order=2, **_DATA, damping=0.25))),
            (7, ("adams_pc", "quadratic", dict(order=2, **_DATA_TO_THE_END, damping=1.0))),
            (10, ("adams_pc", "quadratic", dict(order=2, **_DATA, damping=0.25))),
            (15, ("adams_pc", "quadratic", dict(order=3, **_DATA, damping=0.25)))],
    subVPSDE: [(1, ("adams_pc", "uniform", dict(order=2, **_DATA_TO_THE_END, damping=1.0))),
               (7, ("adams_pc", "uniform", dict(order=2, **_NOISE))),
               (10, ("adams_pc", "uniform", dict(order=3, **_NOISE, damping=0.25))),
               (15, ("adams_pc", "uniform", dict(order=4, **_NOISE, damping=0.5)))],
    VESDE: [(1, ("adams_pc", "logsnr", dict(order=2, **_DATA_TO_THE_END, damping=0.25))),
            (7, ("adams_pc", "logsnr", dict(order=2, **_DATA_TO_THE_END, damping=0.5))),
            (10, ("adams_pc", "karras_rho20", dict(order=3, **_NOISE))),
            (15, ("adams_pc", "karras_rho20", dict(order=4, **_NOISE)))],
}


def recommended_settings(sde: SDE, steps: int) -> tuple[str, str, dict]:
    """(solver, schedule, solver options) that fast_sample uses for this SDE and steps when not told."""
    table = RECOMMENDED.get(type(sde), RECOMMENDED[VPSDE])
    settings = [entry for threshold, entry in table if steps >= threshold] or [table[0][1]]
    solver, schedule, options = settings[-1]
    return solver, schedule, dict(options)


@torch.no_grad()  # a score function that needs gradients opens its own enable_grad
def fast_sample(sde: SDE, score_fn: ScoreFn, shape: Sequence[int], solver: str = AUTO,
                steps: int = 20, schedule: str = AUTO, eps: float | None = None,
                z: torch.Tensor | None = None, denoise: bool = False,
                generator: torch.Generator | None = None, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32, progress: bool = False,
                callback: StepCallback | None = None, **solver_options: float) -> tuple[torch.Tensor, int]:
    """Samples in `steps` solver steps from T to eps (Lu et al. 2022; Karras et al. 2022; docs/fast_sampling).

    Args:
        sde, score_fn: the forward SDE (any with m, s and t(λ): VPSDE, subVPSDE, VESDE) and a score function
            (x [B, ...], t [B]) -> like x.
        shape: [B, ...] of the samples.
        solver: a name in solvers.SOLVERS; solver_options go to its class (eta for "ddim", churn and
            s_noise for "heun_churn", order for "adams_pc"). "auto": recommended_settings(sde, steps), whose
            options apply unless solver_options are given.
        steps: solver steps. Most solvers evaluate the score once a step; "heun" and "heun_churn" twice.
        schedule: a name in schedules.SCHEDULES: "logsnr" (equal steps in λ), "uniform" (in t), "karras"
            (EDM's ρ = 7), "karras_rho20" (ρ = 20) or "quadratic". "auto": the recommended grid for the SDE
            and steps.
        eps: the last time of the grid (default: sde.sampling_eps, 1e-3 for VP and sub-VP, 1e-5 for VE).
        z: optional starting points at T, [B, ...] (default: prior samples); its dtype and device are used.
        denoise: finish with the data prediction x̂₀ at eps (Tweedie's formula): one more evaluation. Off
            by default, as in every sampler here.
        generator: a torch.Generator on the device, for the prior and the stochastic solvers' noise.
        callback: callback(step, x, x0_hat) after each solver step, x0_hat being the step's last data
            prediction; it costs no evaluation.
    Returns:
        (x [B, ...], nfe): the samples and the exact number of score evaluations.
    """
    solver, schedule, solver_options = resolve_settings(sde, steps, solver, schedule, solver_options)
    solver_state = lookup(SOLVERS, solver, "solver")(**solver_options)
    eps = sde.sampling_eps if eps is None else eps
    times = time_grid(sde, schedule, steps, eps)
    if z is None:
        z = sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(z.shape) != tuple(shape):
        raise ValueError(f"z has shape {tuple(z.shape)}, expected {tuple(shape)}")
    grid = Grid.build(sde, times, z.device, z.dtype)
    if hasattr(solver_state, "prepare"):
        solver_state.prepare(sde, grid)
    denoiser = Denoiser(score_fn)
    x = z
    for i in tqdm(range(steps), desc=f"{solver} sampling", disable=not progress):
        x = solver_state.step(x, grid, i, denoiser, generator)
        if callback is not None:
            callback(i, x, denoiser.last)
    if denoise:
        x = denoiser.at(x, grid, steps)
    return x, denoiser.nfe


def resolve_settings(sde: SDE, steps: int, solver: str, schedule: str, options: dict
                     ) -> tuple[str, str, dict]:
    """The solver, schedule and options fast_sample runs: the given ones, the recommended where "auto". The
    recommended options go with the recommended solver only; given options override them."""
    best_solver, best_schedule, best_options = recommended_settings(sde, steps)
    if solver == AUTO:
        solver, options = best_solver, {**best_options, **options}
    return solver, best_schedule if schedule == AUTO else schedule, options
