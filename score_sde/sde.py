"""Forward SDEs of score-based generative modeling: VP (DDPM), sub-VP and VE (SMLD), and their reverses.

Every SDE here is linear, so its perturbation kernel is Gaussian: x(t) = m(t)·x(0) + s(t)·z. The forward
coefficients follow Song et al. 2021 (App. B) and the defaults of the original score_sde code.
"""
import abc
import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# A score function (x [B, ...], t [B]) -> ∇_x log p_t(x), like x: what samplers, losses and likelihoods take.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def expand_to(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values [B] to [B, 1, ..., 1] so they scale an x of any rank."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like x; unlike torch.randn_like, it takes a generator."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def standard_normal_logp(z: torch.Tensor, var: float = 1.0) -> torch.Tensor:
    """log N(z; 0, var·I) per sample, in nats. z: [B, ...] -> [B]."""
    sq = z.flatten(1).pow(2).sum(1)
    return -0.5 * z[0].numel() * math.log(2 * math.pi * var) - sq / (2 * var)


class SDE(abc.ABC):
    """A linear forward SDE dx = f(x, t) dt + g(t) dw on t in [0, T], discretized with N steps.

    Subclasses give `sde`, `marginal_coefficients`, the inverse of the half log-SNR and the prior; the
    rest (perturbation kernel, Euler–Maruyama discretization, reverse SDE) is shared.
    """

    T = 1.0
    # Where the samplers stop and where likelihoods (and the training loss's t) start, as in the original:
    # the samplers and the likelihood read these when given no eps, so no caller retypes them.
    sampling_eps = 1e-3
    likelihood_eps = 1e-5

    def __init__(self, N: int):
        if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 1:
            raise ValueError(f"N must be a positive whole number of steps, got {N!r}")
        self.N = N

    @abc.abstractmethod
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) like x and diffusion g(t) [B]."""

    @abc.abstractmethod
    def marginal_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m(t) and s(t), both [B]: x(t) = m(t)·x(0) + s(t)·z."""

    @abc.abstractmethod
    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        """Inverse of `log_snr`: the time t [B] at which λ(t) = log(m/s) takes the given values."""

    @abc.abstractmethod
    def prior_sampling(self, shape: Sequence[int], generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, dtype: torch.dtype | None = None
                       ) -> torch.Tensor:
        """Samples of the prior p_T, the stand-in for the perturbed data at t = T."""

    @abc.abstractmethod
    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log-density of the prior at z: [B, ...] -> [B], in nats."""

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (like x) and std [B] of the perturbation kernel p_0t(x(t) | x(0) = x)."""
        check_time(x, t, self.T)
        m, s = self.marginal_coefficients(t)
        return expand_to(m, x) * x, s

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """Half log signal-to-noise ratio λ(t) = log(m(t) / s(t)), [B]; decreasing in t."""
        m, s = self.marginal_coefficients(t)
        return torch.log(m) - torch.log(s)

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The discretized forward step into the level of time t, x_i = x_{i−1} + f + G·z: (f like x, G [B]).

        Euler–Maruyama with dt = T / N; VP and VE override it with the DDPM and SMLD chains.
        """
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def langevin_step_scale(self, t: torch.Tensor) -> torch.Tensor:
        """Factor [B] on the Langevin corrector's step size; 1 unless the SDE has a discrete chain."""
        return torch.ones_like(t)

    def ancestral_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, g2, std), each [B], of the ancestral step x_{i-1} = (x + g2·score) / a + std·z."""
        raise ValueError(
            f"ancestral sampling needs the discrete chain of DDPM (VPSDE) or SMLD (VESDE); "
            f"{type(self).__name__} has none: use the 'reverse_diffusion' or 'euler_maruyama' predictor"
        )

    def timestep_index(self, t: torch.Tensor) -> torch.Tensor:
        """Index i in [0, N - 1] of the discrete noise level at time t, as the original code rounds it."""
        return (t * (self.N - 1) / self.T).long()

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (or, with probability_flow, the probability-flow ODE) of this SDE."""
        return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
    """dx = [f − g²·∇log p_t(x)] dt + g dw̄ (Song et al. 2021, eq. 6), or with probability_flow the ODE
    dx = [f − ½g²·∇log p_t(x)] dt (eq. 13). Time runs from T to 0; `sde` and `discretize` mirror the
    forward SDE's, with the score supplied by score_fn(x, t)."""

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.N = forward.N
        self.T = forward.T

    def _reverse(self, x, t, drift, diffusion):
        weight = 0.5 if self.probability_flow else 1.0
        drift = drift - expand_to(diffusion**2 * weight, x) * self.score_fn(x, t)
        diffusion = torch.zeros_like(diffusion) if self.probability_flow else diffusion
        return drift, diffusion

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse drift (like x) and diffusion [B]; integrate with a negative dt."""
        return self._reverse(x, t, *self.forward.sde(x, t))

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse of one discrete forward step: x_{i-1} = x_i − f_rev + G_rev·z (reverse diffusion)."""
        return self._reverse(x, t, *self.forward.discretize(x, t))


class _LinearBetaSDE(SDE):
    """What VP and sub-VP share: β(t) = β_min + t(β_max − β_min), the mean m(t) and the N(0, I) prior."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        if not (math.isfinite(beta_min) and math.isfinite(beta_max) and 0 <= beta_min < beta_max):
            raise ValueError(f"need finite 0 <= beta_min < beta_max, got beta_min={beta_min}, "
                             f"beta_max={beta_max}")
        self.beta_min = beta_min
        self.beta_max = beta_max

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log m(t) = −¼t²(β_max − β_min) − ½t·β_min."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def t_from_neg_log_mean(self, L: torch.Tensor) -> torch.Tensor:
        """Solve −log m(t) = L for t >= 0, written without cancellation (and valid for β_max = β_min)."""
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        return 2 * L / (b + torch.sqrt(b**2 + 4 * a * L))

    def prior_sampling(self, shape: Sequence[int], generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, dtype: torch.dtype | None = None
                       ) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_logp(z)


class VPSDE(_LinearBetaSDE):
    """Variance preserving SDE, the continuous limit of DDPM: dx = −½β(t)x dt + √β(t) dw."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(beta_min, beta_max, N)
        self.discrete_betas = self.discrete_betas_on("cpu")
        self.alphas_cumprod = self.alphas_cumprod_on("cpu")

    def discrete_betas_on(self, device: torch.device | str) -> torch.Tensor:
        """The DDPM chain's β_i = β(t_i) / N on N equally spaced levels (Ho et al. 2020), float64, made on
        the device: samplers read them every step, and a host-to-device copy per step would stall a GPU
        (and keep a step out of a CUDA graph)."""
        return torch.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N, dtype=torch.float64,
                              device=device)

    def alphas_cumprod_on(self, device: torch.device | str) -> torch.Tensor:
        """ᾱ_i = Π_{k<=i} (1 − β_k), float64, made on the device."""
        return torch.cumprod(1.0 - self.discrete_betas_on(device), dim=0)

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_time(x, t, self.T)
        beta = self.beta(t)
        return -0.5 * expand_to(beta, x) * x, torch.sqrt(beta)

    def marginal_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_m = self.log_mean_coeff(t)
        return torch.exp(log_m), torch.sqrt(-torch.expm1(2 * log_m))

    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        # m² = sigmoid(2λ), so −log m = ½·softplus(−2λ).
        return self.t_from_neg_log_mean(0.5 * F.softplus(-2 * log_snr))

    def discrete_beta(self, t: torch.Tensor) -> torch.Tensor:
        """β_i [B] of the DDPM level that time t falls on."""
        if self.beta_max >= self.N:
            raise ValueError(f"the DDPM chain needs beta_max / N < 1, got beta_max={self.beta_max}, "
                             f"N={self.N}: use more steps or a continuous-time predictor (euler_maruyama)")
        return self.discrete_betas_on(t.device).to(t.dtype)[self.timestep_index(t)]

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DDPM step into level i: x_i = √(1 − β_i)·x_{i−1} + √β_i·z, as (f, G) with f = x_i's mean − x."""
        check_time(x, t, self.T)
        beta = self.discrete_beta(t)
        f = expand_to(torch.sqrt(1.0 - beta), x) * x - x
        return f, torch.sqrt(beta)

    def langevin_step_scale(self, t: torch.Tensor) -> torch.Tensor:
        # Alg. 5 of Song et al. 2021: the VP corrector step is scaled by alpha_i = 1 − beta_i.
        return 1.0 - self.discrete_beta(t)

    def ancestral_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # DDPM's sampler (Ho et al. 2020, Alg. 2) written with the score: eq. 47 of Song et al. 2021.
        beta = self.discrete_beta(t)
        return torch.sqrt(1.0 - beta), beta, torch.sqrt(beta)


class subVPSDE(_LinearBetaSDE):
    """Sub-VP SDE: dx = −½β(t)x dt + √(β(t)(1 − e^{−2∫β})) dw; its variance stays below the VP one."""

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_time(x, t, self.T)
        beta = self.beta(t)
        discount = -torch.expm1(4 * self.log_mean_coeff(t))  # 1 − exp(−2∫_0^t β) = 1 − m(t)⁴
        return -0.5 * expand_to(beta, x) * x, torch.sqrt(beta * discount)

    def marginal_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_m = self.log_mean_coeff(t)
        return torch.exp(log_m), -torch.expm1(2 * log_m)

    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        # λ = log m − log(1 − m²): the positive root of e^λ·m² + m − e^λ = 0, written to neither cancel
        # nor overflow: m = 2 / (e^{−λ} + √(e^{−2λ} + 4)).
        inv = torch.exp(-log_snr)
        m = 2 / (inv + torch.sqrt(inv**2 + 4))
        return self.t_from_neg_log_mean(-torch.log(m))


class VESDE(SDE):
    """Variance exploding SDE, the continuous limit of SMLD: dx = σ(t)·√(2 log(σ_max/σ_min)) dw.

    As in the original code, the kernel std is σ(t) itself rather than √(σ(t)² − σ_min²): the data at
    t = 0 counts as already perturbed by σ_min, which keeps every formula exact and consistent.
    """

    sampling_eps = 1e-5  # σ(eps) ≈ σ_min: VE samples stop at the smallest noise level (the original's choice)

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
            raise ValueError(f"need finite 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}")
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.discrete_sigmas = self.discrete_sigmas_on("cpu")

    def discrete_sigmas_on(self, device: torch.device | str) -> torch.Tensor:
        """SMLD's noise levels, geometric from sigma_min (index 0) to sigma_max (index N − 1), float64, made
        on the device (as VPSDE.discrete_betas_on, to spare samplers a copy per step)."""
        log_sigmas = torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N,
                                    dtype=torch.float64, device=device)
        return torch.exp(log_sigmas)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_time(x, t, self.T)
        zero = torch.zeros_like(x)
        return zero, self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))

    def marginal_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(t), self.sigma(t)

    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        return (-log_snr - math.log(self.sigma_min)) / (math.log(self.sigma_max) - math.log(self.sigma_min))

    def prior_sampling(self, shape: Sequence[int], generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, dtype: torch.dtype | None = None
                       ) -> torch.Tensor:
        return self.sigma_max * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_logp(z, var=self.sigma_max**2)

    def _sigma_and_previous(self, t):
        i = self.timestep_index(t)
        sigmas = self.discrete_sigmas_on(t.device).to(t.dtype)
        previous = torch.where(i == 0, torch.zeros_like(t), sigmas[(i - 1).clamp(min=0)])
        return sigmas[i], previous

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SMLD step into level i: x_i = x_{i−1} + √(σ_i² − σ_{i−1}²)·z (σ_{−1} = 0), as (f = 0, G)."""
        check_time(x, t, self.T)
        sigma, previous = self._sigma_and_previous(t)
        return torch.zeros_like(x), torch.sqrt(sigma**2 - previous**2)

    def ancestral_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # SMLD's ancestral step (eq. 47 of Song et al. 2021): the Gaussian posterior of x_{i-1} given x_i.
        sigma, previous = self._sigma_and_previous(t)
        g2 = sigma**2 - previous**2
        return torch.ones_like(t), g2, torch.sqrt(previous**2 * g2 / sigma**2)


SDES = {"vpsde": VPSDE, "subvpsde": subVPSDE, "vesde": VESDE}


# Devices whose times check_time range-checks. The check reads values, which on an accelerator would stall
# the device every step, so it is done only where it is free; samplers build their time grids inside
# [eps, T] by construction. (Tests empty it to count the host reads a GPU would make.)
RANGE_CHECKED_DEVICES = ("cpu",)


def check_time(x: torch.Tensor, t: torch.Tensor, T: float = 1.0) -> None:
    """Raise ValueError unless t is [B] with x's batch size and, on the CPU, inside [0, T]."""
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape [B] = [{x.shape[0]}] to match x {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}")
    if t.device.type in RANGE_CHECKED_DEVICES and not torch.compiler.is_compiling() and t.numel():
        if bool((t < 0).any()) or bool((t > T).any()):
            raise ValueError(f"t must lie in [0, {T}], got values in [{t.min().item()}, {t.max().item()}]")
