"""A particle filter over the reverse chain that samples the posterior p(x | y) of a linear observation with
an unconditional score: a replaced-path filter (SMCDiff, Trippe et al. 2022; FPS, Dou & Song 2024) with the
noisy-observation time split of MCGdiff (Cardoso et al. 2023). No network gradients; docs/controllable.md.

In the coordinates z of the observation (score_sde/observations.py), a noiseless y fixes z_obs at t = 0, and
a noisy one is z_obs's state at the time τ where the diffusion's noise-to-signal ratio equals σ_y / s:
ŷ·m(τ) ~ x_τ,obs. A path y_t of the observed coordinates is drawn backwards from T to τ by the forward
process's bridge to y_τ, which gives it exactly the forward process's law, so conditioning on the path is
conditioning on y_τ alone. Each filter's particles move by the ancestral kernel p(x_a | x_b) (the forward
posterior q(x_a | x_b, x̂₀) at Tweedie's x̂₀), their observed coordinates are replaced by y_a, and each is
weighted by its kernel's density at y_a. Below τ the chain runs unconditionally. As the particle count
grows, each filter's weighted particles tend to the model chain's posterior, which the exact score and small
steps make the true one.
"""

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from score_sde.observations import Observation
from score_sde.sde import SDE, ScoreFn, randn_like

Coefficients = tuple[torch.Tensor, torch.Tensor]  # (m, s) of x_t = m·x_0 + s·z, broadcastable to x


def forward_posterior(x_b: torch.Tensor, x_0: torch.Tensor, coef_a: Coefficients, coef_b: Coefficients
                      ) -> Coefficients:
    """Mean and variance of q(x_a | x_b, x_0) for a linear SDE, a before b: with x_t = m_t·x_0 + s_t·n,
    r = m_b / m_a and v = s_b² − r²·s_a² (the variance of x_b given x_a),
        mean = (v·m_a / s_b²)·x_0 + (r·s_a² / s_b²)·x_b,   var = s_a²·v / s_b².
    coef_a, coef_b: (m, s), tensors broadcastable to x."""
    (m_a, s_a), (m_b, s_b) = coef_a, coef_b
    r = m_b / m_a
    v = s_b**2 - r**2 * s_a**2
    mean = (v * m_a / s_b**2) * x_0 + (r * s_a**2 / s_b**2) * x_b
    return mean, s_a**2 * v / s_b**2


def observation_times(sde: SDE, ratio: torch.Tensor, eps: float) -> torch.Tensor:
    """τ per coordinate: the time at which the diffusion's noise-to-signal ratio s/m equals `ratio` (σ_y / s),
    0 for an exact observation; never below eps, where the chain stops. ValueError when an observation is
    noisier than the prior."""
    noisy = ratio > 0
    m_T, s_T = sde.marginal_coefficients(torch.full((1,), sde.T, dtype=torch.float64))
    if (ratio > s_T / m_T).any():
        raise ValueError(f"sigma_y / s up to {ratio.max().item():.3g} exceeds the prior's noise-to-signal "
                         f"ratio {(s_T / m_T).item():.3g}: such an observation tells nothing the prior does "
                         "not")
    tau = sde.t_from_log_snr(-torch.log(torch.where(noisy, ratio, 1.0).double())).clamp(eps, sde.T)
    return torch.where(noisy, tau, torch.zeros_like(tau))


def time_grid(sde: SDE, steps: int, eps: float, taus: torch.Tensor) -> torch.Tensor:
    """linspace(T, eps, steps + 1) with each distinct τ in (eps, T) moved onto its nearest interior point,
    so that the filter stops replacing a coordinate exactly at its τ."""
    grid = torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64)
    for tau in torch.unique(taus[(taus > eps) & (taus < sde.T)]).tolist():
        interior = (grid[1:-1] - tau).abs()
        grid[1 + int(interior.argmin())] = tau
    return grid.sort(descending=True).values


def systematic_resample(log_weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Ancestor indices [B, P] by systematic resampling of each filter's weights (one uniform per filter)."""
    b, p = log_weights.shape
    cdf = torch.softmax(log_weights, dim=1).cumsum(1)
    u = (torch.rand(b, 1, generator=generator, device=log_weights.device, dtype=log_weights.dtype)
         + torch.arange(p, device=log_weights.device, dtype=log_weights.dtype)) / p
    return torch.searchsorted(cdf, u).clamp(max=p - 1)


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """(Σw)² / Σw² per filter [B] from log-weights [B, P]."""
    return torch.exp(2 * torch.logsumexp(log_weights, 1) - torch.logsumexp(2 * log_weights, 1))


class _Reading:
    """The observation as the filter reads it, per filter [B, ...] in the observation's coordinates: each
    observed coordinate's time τ, its state y_τ there and (m_τ, s_τ), and the bridge that draws y_t from y_τ.

    An exact reading (σ_y = 0) is the clean coordinate: τ = 0, (m_τ, s_τ) = (1, 0), y_τ = ŷ. A noisy one is
    the state at τ: y_τ = m(τ)·ŷ, plus the noise that makes up the difference when τ was clamped to eps."""

    def __init__(self, sde, obs, batch, eps, generator):
        self.sde, self.observed = sde, obs.observed
        ratio = obs.relative_noise()
        tau = observation_times(sde, ratio.double().cpu(), eps).to(ratio)
        self.tau = torch.where(self.observed, tau, torch.zeros_like(tau))
        self.exact = self.tau == 0
        m, s = (c.reshape(tau.shape) for c in sde.marginal_coefficients(self.tau.flatten()))
        self.m_tau = torch.where(self.exact, 1.0, m)
        self.s_tau = torch.where(self.exact, 0.0, s)
        missing = (self.s_tau**2 - (self.m_tau * ratio) ** 2).clamp(min=0).sqrt()
        target = obs.target.expand(batch, *obs.target.shape[1:])  # one path of y per filter
        self.y_tau = self.m_tau * target + missing * randn_like(target, generator)

    def active(self, t):
        """The coordinates still replaced at time t: observed, with τ ≤ t."""
        return self.observed & (self.tau <= t)

    def relative(self, t):
        """(m, s) of x_t given x_τ per coordinate: m_t / m_τ and √(s_t² − (m_t / m_τ)²·s_τ²)."""
        m, s = self.sde.marginal_coefficients(t.reshape(1))
        m_rel = m / self.m_tau
        return m_rel, (s**2 - m_rel**2 * self.s_tau**2).clamp(min=0).sqrt()

    def start(self, t, generator):
        """y_t drawn from the forward process from y_τ (t ≥ every τ: the grid's first time)."""
        m_rel, s_rel = self.relative(t)
        return m_rel * self.y_tau + s_rel * randn_like(self.y_tau, generator)

    def step(self, y_b, t_b, t_a, generator):
        """y_a from the bridge q(y_a | y_b, y_τ), on the coordinates active at t_a (others keep y_b)."""
        coef_b, coef_a = self.relative(t_b), self.relative(t_a)
        active = self.active(t_a)
        s_b = torch.where(active, coef_b[1], 1.0)  # inactive coordinates may sit at their τ: s = 0
        mean, var = forward_posterior(y_b, self.y_tau, coef_a, (coef_b[0], s_b))
        y_a = mean + var.clamp(min=0).sqrt() * randn_like(y_b, generator)
        return torch.where(active, y_a, y_b)


def _spread(v, batch, particles):
    """Per-filter values [B or 1, ...] repeated over each filter's particles: [B·P, ...]."""
    v = v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v
    return v.unsqueeze(1).expand(batch, particles, *v.shape[1:]).reshape(-1, *v.shape[1:])


def _gather(x, index):
    """x [B, P, ...] with each filter's particles taken at index [B, Q]: [B, Q, ...]."""
    flat = x.flatten(2)
    picked = flat.gather(1, index[..., None].expand(-1, -1, flat.shape[2]))
    return picked.reshape(*index.shape, *x.shape[2:])


@torch.no_grad()
def smc_sample(sde: SDE, score_fn: ScoreFn, shape: Sequence[int], observation: Observation,
               particles: int = 64, steps: int | None = None, eps: float | None = None,
               generator: torch.Generator | None = None, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32, progress: bool = False, resample_below: float = 0.5
               ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """B posterior samples, each one particle drawn by final weight from its own filter of P particles.

    Args:
        sde, score_fn: the forward SDE and an unconditional score (x [N, ...], t [N]) -> like x.
        shape: [B, ...] of the samples; the observation holds B (or 1) observations.
        observation: an Observation (its tensors are moved to the samples' device and dtype).
        particles: P per filter; steps: reverse-chain steps (default sde.N); eps: the last time (default
            sde.sampling_eps).
        resample_below: a filter resamples (systematically) when its ESS falls below this fraction of P;
            the decision is made on the device, filter by filter, without a host sync.
    Returns:
        (x [B, ...], nfe, info): nfe the score evaluations per sample (steps·P); info holds the `particles`
        [B, P, ...] and their normalised `log_weights` [B, P] at eps, and per step the `ess` [steps, B]
        before resampling and whether each filter `resampled` [steps, B].
    """
    eps = sde.sampling_eps if eps is None else eps
    steps = sde.N if steps is None else steps
    if not (isinstance(particles, int) and particles >= 1 and isinstance(steps, int) and steps >= 1):
        raise ValueError(f"particles and steps must be whole numbers >= 1, got {particles!r} and {steps!r}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
    b, p = shape[0], particles
    x = sde.prior_sampling((b * p, *shape[1:]), generator=generator, device=device, dtype=dtype)
    obs = observation.to(x)
    reading = _Reading(sde, obs, b, eps, generator)
    grid = time_grid(sde, steps, eps, reading.tau[obs.observed].double().cpu()).to(x)

    y = reading.start(grid[0], generator)
    z = obs.coords(x)
    x = obs.from_coords(torch.where(_spread(reading.active(grid[0]), b, p), _spread(y, b, p), z))
    log_w = torch.zeros(b, p, device=x.device, dtype=torch.float64)
    ess_log, resampled_log, keep = [], [], torch.arange(p, device=x.device).expand(b, p)
    for k in tqdm(range(steps), desc="SMC", disable=not progress):
        t_b, t_a = grid[k], grid[k + 1]
        coef_b, coef_a = sde.marginal_coefficients(t_b.reshape(1)), sde.marginal_coefficients(t_a.reshape(1))
        x0_hat = (x + coef_b[1] ** 2 * score_fn(x, t_b.expand(b * p))) / coef_b[0]
        mean, var = forward_posterior(x, x0_hat, coef_a, coef_b)
        x = mean + var.sqrt() * randn_like(x, generator)
        y = reading.step(y, t_b, t_a, generator)
        active, y_p = _spread(reading.active(t_a), b, p), _spread(y, b, p)
        z, z_mean = obs.coords(x), obs.coords(mean)
        miss = torch.where(active, (y_p - z_mean) ** 2, 0.0).flatten(1).sum(1).double()
        log_w = log_w - 0.5 * miss.reshape(b, p) / var.double()
        z = torch.where(active, y_p, z)
        ess = effective_sample_size(log_w)
        resample = ess < resample_below * p
        index = torch.where(resample[:, None], systematic_resample(log_w, generator), keep)
        z = _gather(z.reshape(b, p, *z.shape[1:]), index).flatten(0, 1)
        log_w = torch.where(resample[:, None], 0.0, log_w)
        x = obs.from_coords(z)
        ess_log.append(ess)
        resampled_log.append(resample)

    z = torch.where(_spread(reading.exact & obs.observed, b, p), _spread(obs.target, b, p), obs.coords(x))
    x = obs.from_coords(z).reshape(b, p, *shape[1:])  # exact readings hold exactly: A·x = y
    log_w = log_w - torch.logsumexp(log_w, 1, keepdim=True)
    pick = torch.multinomial(log_w.exp(), 1, generator=generator)
    info = dict(particles=x, log_weights=log_w, ess=torch.stack(ess_log),
                resampled=torch.stack(resampled_log))
    return _gather(x, pick).squeeze(1), steps * p, info
