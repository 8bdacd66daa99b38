"""Sampling given a linear observation y = A·x + σ_y·n (score_sde/observations.py) with an unconditional
score: inpainting, colorization, super-resolution and small general A (docs/controllable.md).

Two methods:
- "replacement", the paper's (Song et al. 2021, §5 and App. I; the original's get_pc_inpainter and
  get_pc_colorizer): the PC sampler, with the observed coordinates replaced by the observation noised to the
  current time after every predictor and corrector update. It is exact when the observed and free coordinates
  are independent; otherwise it is biased, even with the exact score (docs/controllable.md has the table).
- "smc", a particle filter over the reverse chain (score_sde/smc.py): each sample is one draw from its own
  filter, and tends to an exact posterior draw as the particles grow.
"""
from collections.abc import Sequence
from typing import Any

import torch

from score_sde.observations import Observation
from score_sde.sampling import pc_sample
from score_sde.sampling.pc import AfterUpdate
from score_sde.sde import SDE, ScoreFn, expand_to, randn_like
from score_sde.smc import smc_sample

METHODS = ("smc", "replacement")
TASKS = ("inpaint", "colorize", "superres")  # the CLI's modes (run_lib.controllable)


def replacement(sde: SDE, observation: Observation, generator: torch.Generator | None = None) -> AfterUpdate:
    """pc_sample's after_update for the paper's method: the observed coordinates of x set to the observation
    noised to t, m(t)·ŷ + s(t)·n with fresh noise n each time, and those of x_mean to m(t)·ŷ.

    The original set x_mean's free coordinates from the noisy x, so its denoised output kept the last noise
    there; here they come from x_mean, so that denoise=True removes it everywhere."""
    obs = observation

    def after_update(x, x_mean, t):
        m, s = sde.marginal_coefficients(t)
        mean = expand_to(m, x) * obs.target
        noisy = mean + expand_to(s, x) * randn_like(x, generator)
        x = obs.from_coords(torch.where(obs.observed, noisy, obs.coords(x)))
        x_mean = obs.from_coords(torch.where(obs.observed, mean, obs.coords(x_mean)))
        return x, x_mean

    return after_update


def conditional_sample(sde: SDE, score_fn: ScoreFn, shape: Sequence[int], observation: Observation,
                       method: str = "smc", particles: int | None = None, steps: int | None = None,
                       eps: float | None = None, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                       progress: bool = False, return_info: bool = False, **pc_options: Any
                       ) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """B samples of x given the observation (B observations, or 1 for all).

    Args:
        sde, score_fn: the forward SDE and an unconditional score (x [N, ...], t [N]) -> like x.
        shape: [B, ...] of the samples.
        observation: an Inpainting, Colorization, SuperResolution or LinearObservation, in the samples'
            space (model space for a network: data.get_data_scaler applied to images).
        method: "smc" (the particle filter) or "replacement" (the paper's, on pc_sample).
        particles: per sample, for "smc" (default 64); "replacement" runs one chain per sample.
        steps: the reverse chain's steps for "smc" (default sde.N); "replacement" takes the SDE's N levels.
        eps: the last time (default sde.sampling_eps).
        return_info: also return smc's record (final particles and log-weights, ESS and resampling per
            step); {} for "replacement".
        pc_options: for "replacement", pc_sample's predictor, corrector, snr, n_steps, denoise, ...
    Returns:
        (x [B, ...], nfe) or (x, nfe, info): nfe the score evaluations per sample.
    """
    if method == "smc":
        if pc_options:
            raise ValueError(f"method 'smc' takes no PC sampler options, got {sorted(pc_options)}")
        x, nfe, info = smc_sample(sde, score_fn, shape, observation, particles=64 if particles is None
                                  else particles, steps=steps, eps=eps, generator=generator, device=device,
                                  dtype=dtype, progress=progress)
    elif method == "replacement":
        if particles is not None or steps is not None:
            raise ValueError("method 'replacement' runs one PC chain of the SDE's N levels per sample: "
                             "particles and steps do not apply (set the SDE's N)")
        observation.to(torch.empty(0, device=device, dtype=dtype))
        x, nfe = pc_sample(sde, score_fn, shape, eps=eps, generator=generator, device=device, dtype=dtype,
                           progress=progress, after_update=replacement(sde, observation, generator),
                           **pc_options)
        info = {}
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    return (x, nfe, info) if return_info else (x, nfe)
