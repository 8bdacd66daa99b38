"""Adaptive Runge–Kutta integration of dy/dt = fn(t, y) on the tensors' own device.

`dopri5` is the Dormand–Prince 5(4) pair with the step-size control of scipy's RK45, written in torch so
that the state never leaves the device; its one host read per step is the accept/reject decision.
`scipy_rk45` keeps the original code's path (scipy.integrate.solve_ivp over NumPy) for comparison.
"""
import math
from collections.abc import Callable

import scipy.integrate
import torch
from tqdm.auto import tqdm

from score_sde.registry import lookup

# Dormand & Prince (1980): nodes, stages, 5th-order weights, and the 5th − 4th order error weights.
_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR, _ERROR_EXPONENT = 0.9, 0.2, 10.0, -1 / 5

# The right-hand side fn(t [0-d tensor], y) -> dy/dt like y, and the per-step hook on_step(t, y).
OdeFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepHook = Callable[[float, torch.Tensor], None]


def _rms(v):
    return v.pow(2).mean().sqrt()


def _combine(y, h, weights, ks):
    """y + h·Σ w_i·k_i, skipping zero weights."""
    return y + h * sum(w * k for w, k in zip(weights, ks) if w != 0)


def _time(t, y):
    # Filled on the device: torch.tensor(t, device=...) would copy from the host at every stage.
    return torch.full((), t, dtype=y.dtype, device=y.device)


def _initial_step(fn, t0, y0, f0, t1, rtol, atol):
    """First step size by Hairer, Nørsett & Wanner (1993, II.4), as scipy chooses it; one extra evaluation."""
    interval, direction = abs(t1 - t0), (1.0 if t1 > t0 else -1.0)
    scale = atol + y0.abs() * rtol
    d0, d1 = _rms(y0 / scale).item(), _rms(f0 / scale).item()
    if not (math.isfinite(d0) and math.isfinite(d1)):
        raise FloatingPointError(f"dopri5: the ODE's right-hand side is not finite at its start t={t0} (or "
                                 "the start itself is not): a score function returning NaN or infinity?")
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, interval)
    f1 = fn(_time(t0 + direction * h0, y0), y0 + direction * h0 * f0)
    d2 = _rms((f1 - f0) / scale).item() / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1, interval)


def dopri5(fn: OdeFn, y0: torch.Tensor, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
           progress: bool = False, on_step: StepHook | None = None) -> tuple[torch.Tensor, int]:
    """Integrate dy/dt = fn(t, y) from t0 to t1 (either direction); returns (y(t1), number of fn calls).
    on_step(t, y), if given, is called after each accepted step, whose last evaluation of fn was at (t, y)
    (the pair is first-same-as-last)."""
    direction = 1.0 if t1 > t0 else -1.0
    t, y = t0, y0
    f = fn(_time(t, y), y)
    h_abs = _initial_step(fn, t0, y0, f, t1, rtol, atol)
    nfe, rejected = 2, False
    with tqdm(total=abs(t1 - t0), desc="ODE", disable=not progress, unit="t") as bar:
        while direction * (t1 - t) > 0:
            t_new = t + direction * h_abs
            if direction * (t_new - t1) > 0:
                t_new = t1
            h = t_new - t
            h_abs = abs(h)  # as scipy: a step clipped to the end shrinks from its clipped length if rejected
            ks = [f]
            for c, a in zip(_C, _A):
                ks.append(fn(_time(t + c * h, y), _combine(y, h, a, ks)))
            y_new = _combine(y, h, _B, ks)
            f_new = fn(_time(t_new, y), y_new)
            ks.append(f_new)
            nfe += 6
            scale = atol + torch.maximum(y.abs(), y_new.abs()) * rtol
            error = _rms(_combine(torch.zeros_like(y), h, _E, ks) / scale).item()
            finite = math.isfinite(error)
            if finite and error < 1:
                factor = _MAX_FACTOR if error == 0 else min(_MAX_FACTOR, _SAFETY * error**_ERROR_EXPONENT)
                bar.update(abs(h))
                t, y, f = t_new, y_new, f_new
                if on_step is not None:
                    on_step(t, y)
                h_abs *= min(1.0, factor) if rejected else factor
                rejected = False
            else:
                # A trial stage off the path can overflow (a network extrapolating) or give NaN: reject and
                # shrink the step, as scipy does; the accepted state at t is finite (checked at the start).
                h_abs *= max(_MIN_FACTOR, _SAFETY * error**_ERROR_EXPONENT) if finite else _MIN_FACTOR
                rejected = True
            if h_abs < 1e-12 * max(1.0, abs(t)):
                if not finite:  # NaN or infinity at every step size: no step helps
                    raise FloatingPointError(f"dopri5: the ODE's right-hand side is not finite near t={t} at "
                                             "every step size tried: a score function returning NaN or "
                                             "infinity?")
                raise RuntimeError(f"dopri5: step size underflow at t={t}; too stiff for rtol={rtol}")
            bar.set_postfix(nfe=nfe, refresh=False)
    return y, nfe


def scipy_rk45(fn: OdeFn, y0: torch.Tensor, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
               progress: bool = False, on_step: StepHook | None = None) -> tuple[torch.Tensor, int]:
    """The original code's path: scipy's RK45 on a flat float64 NumPy copy of the state, one round trip per
    evaluation. Returns (y(t1), number of fn calls). It has no per-step hook: on_step must be None."""
    if on_step is not None:
        raise ValueError("the 'scipy-rk45' ODE method takes no per-step callback; use 'rk45'")
    shape, device, dtype = y0.shape, y0.device, y0.dtype

    def numpy_fn(t, flat):
        y = torch.from_numpy(flat).reshape(shape).to(device=device, dtype=dtype)
        return fn(_time(t, y), y).detach().reshape(-1).cpu().double().numpy()

    start = y0.detach().reshape(-1).cpu().double().numpy()
    solution = scipy.integrate.solve_ivp(numpy_fn, (t0, t1), start, rtol=rtol, atol=atol, method="RK45")
    if not solution.success:
        raise RuntimeError(f"scipy RK45 failed: {solution.message}")
    y = torch.from_numpy(solution.y[:, -1]).reshape(shape).to(device=device, dtype=dtype)
    return y, solution.nfev


INTEGRATORS = {"rk45": dopri5, "scipy-rk45": scipy_rk45}


def odeint(fn: OdeFn, y0: torch.Tensor, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
           method: str = "rk45", progress: bool = False, on_step: StepHook | None = None
           ) -> tuple[torch.Tensor, int]:
    """Integrate dy/dt = fn(t [0-d tensor], y) from t0 to t1 with the named method; returns (y(t1), nfe).
    on_step(t, y): called after each accepted step ("rk45" only)."""
    return lookup(INTEGRATORS, method, "ODE method")(fn, y0, t0, t1, rtol=rtol, atol=atol, progress=progress,
                                                     on_step=on_step)
