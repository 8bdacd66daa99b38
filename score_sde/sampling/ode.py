"""Sampling by integrating the probability-flow ODE dx = [f − ½g²·score] dt from T down to eps."""
from collections.abc import Callable, Sequence

import torch

from score_sde.sampling.callbacks import LastEvaluation, StepCallback
from score_sde.sampling.odeint import odeint
from score_sde.sampling.predictors import ReverseDiffusionPredictor
from score_sde.sde import SDE, ScoreFn


def probability_flow_drift(sde: SDE, score_fn: ScoreFn
                           ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The drift (x [B, ...], t [B]) -> like x of the probability-flow ODE (Song et al. 2021, eq. 13)."""
    reverse = sde.reverse(score_fn, probability_flow=True)

    def drift_fn(x, t):
        return reverse.sde(x, t)[0]

    return drift_fn


@torch.no_grad()  # a score function that needs gradients opens its own enable_grad
def ode_sample(sde: SDE, score_fn: ScoreFn, shape: Sequence[int], rtol: float = 1e-5, atol: float = 1e-5,
               method: str = "rk45", eps: float | None = None, z: torch.Tensor | None = None,
               denoise: bool = False, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
               progress: bool = False, callback: StepCallback | None = None) -> tuple[torch.Tensor, int]:
    """Samples from the probability-flow ODE, solved adaptively from T to eps.

    Args:
        sde, score_fn: the forward SDE and a score function (x [B, ...], t [B]) -> like x.
        shape: [B, ...] of the samples.
        rtol, atol, method: the integrator's tolerances and its name ("rk45" on the device, "scipy-rk45").
        eps: the time at which integration stops (default: sde.sampling_eps).
        z: optional starting points at T, [B, ...] (default: prior samples); its dtype and device are used.
        denoise: finish with one noise-free reverse-diffusion step at eps (one more evaluation), as the
            original code does when asked; off by default, as in every sampler here.
        generator: a torch.Generator on `device`, for the prior samples.
        callback: callback(step, x, x0_hat) after each accepted step of the integrator (method "rk45"),
            x0_hat being the data prediction at x; it costs no evaluation.
    Returns:
        (x [B, ...], nfe): the samples and the number of score evaluations made.
    """
    eps = sde.sampling_eps if eps is None else eps
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
    if z is None:
        z = sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(z.shape) != tuple(shape):
        raise ValueError(f"z has shape {tuple(z.shape)}, expected {tuple(shape)}")
    on_step = None
    if callback is not None:
        score_fn = watched = LastEvaluation(sde, score_fn)
        steps = iter(range(1 << 62))

        def on_step(t, x):
            callback(next(steps), x, watched.x0_hat())
    drift_fn = probability_flow_drift(sde, score_fn)
    batch = z.shape[0]
    x, nfe = odeint(lambda t, x: drift_fn(x, t.expand(batch)), z, sde.T, eps, rtol, atol, method, progress,
                    on_step)
    if denoise:
        t = torch.full((batch,), eps, dtype=x.dtype, device=x.device)
        _, x = ReverseDiffusionPredictor(sde, score_fn).update(x, t, (torch.zeros_like(x),))  # its mean
        nfe += 1
    return x, nfe
