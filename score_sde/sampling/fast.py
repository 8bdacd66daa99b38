"""fast_sample: a few-step solver (sampling/solvers.py) on a time grid (sampling/schedules.py), any SDE."""
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from score_sde.registry import lookup
from score_sde.sampling.callbacks import StepCallback
from score_sde.sampling.schedules import time_grid
from score_sde.sampling.solvers import SOLVERS, Denoiser, Grid
from score_sde.sde import SDE, ScoreFn

DEFAULT_SOLVER = "adams_pc"
DEFAULT_SCHEDULE = "logsnr"


@torch.no_grad()  # a score function that needs gradients opens its own enable_grad
def fast_sample(sde: SDE, score_fn: ScoreFn, shape: Sequence[int], solver: str = DEFAULT_SOLVER,
                steps: int = 20, schedule: str = DEFAULT_SCHEDULE, eps: float | None = None,
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
            s_noise for "heun_churn", order for "adams_pc").
        steps: solver steps. Most solvers evaluate the score once a step; "heun" and "heun_churn" twice.
        schedule: a name in schedules.SCHEDULES: "logsnr" (equal steps in λ), "uniform" (in t), "karras"
            (EDM's ρ = 7) or "quadratic".
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
