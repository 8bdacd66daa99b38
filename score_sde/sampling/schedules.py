"""Time grids for the fast samplers: `steps + 1` times from T down to eps, by a rule that any SDE obeys.

Each schedule is a function (sde, steps, eps) -> times [steps + 1] (float64, on the CPU, decreasing, the
first T and the last eps). They speak only of m(t), s(t) and λ(t) = log(m/s), so they serve VP, sub-VP and VE
alike: σ = s/m = e^{−λ} is EDM's noise level, and t(λ) is each SDE's `t_from_log_snr`.
"""
import torch

from score_sde.registry import lookup
from score_sde.sde import SDE


def _log_snr_range(sde, eps):
    ends = torch.tensor([sde.T, eps], dtype=torch.float64)
    return sde.log_snr(ends).tolist()


def uniform_time(sde: SDE, steps: int, eps: float) -> torch.Tensor:
    """Equal steps in t, the original samplers' grid."""
    return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64)


def uniform_log_snr(sde: SDE, steps: int, eps: float) -> torch.Tensor:
    """Equal steps in λ (DPM-Solver's "logSNR" grid): the step size of the exponential integrators."""
    lam_T, lam_eps = _log_snr_range(sde, eps)
    return _times(sde, torch.linspace(lam_T, lam_eps, steps + 1, dtype=torch.float64), eps)


def karras(sde: SDE, steps: int, eps: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's grid (Karras et al. 2022, eq. 5): σ^{1/ρ} equally spaced from σ(T) to σ(eps), ρ = 7."""
    lam_T, lam_eps = _log_snr_range(sde, eps)
    ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    top, bottom = torch.exp(torch.tensor(-lam_T / rho)), torch.exp(torch.tensor(-lam_eps / rho))
    sigma = (top + ramp * (bottom - top)) ** rho
    return _times(sde, -torch.log(sigma), eps)


def karras_rho20(sde: SDE, steps: int, eps: float) -> torch.Tensor:
    """EDM's grid with ρ = 20: between `karras` (ρ = 7) and `logsnr` (the limit ρ → ∞). A step in log σ is
    proportional to σ^{−1/ρ}, so ρ = 7 takes long steps near σ(eps), which data broad against σ(eps) or of
    small scale pay for; ρ = 20 keeps most of ρ = 7's gain elsewhere (docs/fast_sampling.md §3, §4)."""
    return karras(sde, steps, eps, rho=20.0)


def quadratic_time(sde: SDE, steps: int, eps: float) -> torch.Tensor:
    """t − eps falling quadratically (DDIM's "quad" grid): small steps near the data."""
    ramp = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    return eps + (sde.T - eps) * ramp**2


def _times(sde, log_snr, eps):
    """t(λ) for a λ grid, with its ends set exactly to T and eps (t_from_log_snr rounds)."""
    t = sde.t_from_log_snr(log_snr).clamp(eps, sde.T)
    t[0], t[-1] = sde.T, eps
    return t


SCHEDULES = {
    "uniform": uniform_time,
    "logsnr": uniform_log_snr,
    "karras": karras,
    "karras_rho20": karras_rho20,
    "quadratic": quadratic_time,
}


def time_grid(sde: SDE, schedule: str, steps: int, eps: float) -> torch.Tensor:
    """The named schedule's times [steps + 1], checked: ValueError for a bad name, steps or eps."""
    schedule_fn = lookup(SCHEDULES, schedule, "schedule")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
    t = schedule_fn(sde, steps, eps)
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"the {schedule!r} grid of {steps} steps to eps={eps} is not strictly decreasing "
                         "(too many steps for float64?)")
    return t
