"""Few-step solvers of the reverse process, written once for every SDE in terms of m, s and λ.

Every SDE here has x_t = m(t)·x_0 + s(t)·z. With the half log-SNR λ = log(m/s), the noise level σ = s/m
= e^{−λ} and the data prediction x̂₀(x, t) = (x + s²·score(x, t)) / m, the probability-flow ODE has the
exact solution (Lu et al. 2022, DPM-Solver++, eq. 9), for h = λ_next − λ_now > 0:

    x_next = (s_next / s_now)·x_now + m_next·∫_{λ_now}^{λ_next} e^{−(λ_next − λ)}·x̂₀(λ) dλ,

and the solvers differ in how they approximate x̂₀ over the step. A solver is a small class whose `step`
maps x at grid point i to x at grid point i + 1, keeping what it carries between steps (earlier x̂₀); the
grid (`Grid`) holds t, m, s, λ and σ of every point as Python floats, computed once before the loop, so a
step makes no host synchronisation. docs/fast_sampling.md derives each rule.
"""
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from score_sde.sde import SDE, ScoreFn, randn_like

# Gauss–Legendre nodes and weights on [0, 1]: exact for the polynomial × exponential integrands below to
# float64 rounding for steps h up to about 10.
_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(16)
_GL_NODES, _GL_WEIGHTS = 0.5 * (_LEGENDRE_NODES + 1), 0.5 * _LEGENDRE_WEIGHTS


@dataclasses.dataclass(frozen=True)
class Grid:
    """The time grid of a fast sampler and its coefficients, as float64 Python floats (index 0 is T).

    t_device holds the same times as a tensor on the samples' device, for the score function.
    """

    t: list
    m: list
    s: list
    log_snr: list
    t_device: torch.Tensor

    @classmethod
    def build(cls, sde: SDE, times: torch.Tensor, device: torch.device | str, dtype: torch.dtype) -> "Grid":
        m, s = sde.marginal_coefficients(times)
        return cls(times.tolist(), m.tolist(), s.tolist(), (torch.log(m) - torch.log(s)).tolist(),
                   times.to(device=device, dtype=dtype))

    def h(self, i: int) -> float:
        """λ_{i+1} − λ_i > 0: the size of step i in log-SNR."""
        return self.log_snr[i + 1] - self.log_snr[i]

    def sigma(self, i: int) -> float:
        return self.s[i] / self.m[i]


class Denoiser:
    """x̂₀(x, t) = (x + s²·score(x, t)) / m from a score function; counts its evaluations in `nfe`."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self.nfe, self.last = score_fn, 0, None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, m: float, s: float) -> torch.Tensor:
        """x [B, ...]; t: a 0-d tensor on x's device; m, s: the floats m(t), s(t)."""
        self.nfe += 1
        self.last = (x + (s * s) * self.score_fn(x, t.expand(x.shape[0]))) / m
        return self.last

    def at(self, x: torch.Tensor, grid: Grid, i: int) -> torch.Tensor:
        return self(x, grid.t_device[i], grid.m[i], grid.s[i])


def exponential_weights(nodes: Sequence[float], h: float) -> list[float]:
    """w_j with ∫_0^h e^{−(h−u)}·P(u) du = Σ_j w_j·P(v_j·h) for every polynomial P of degree < len(nodes):
    the weights of x̂₀ values at λ_now + v_j·h in the exact solution above (exponential Adams rules)."""
    return _lagrange_weights(nodes, h * np.exp(-h * (1 - _GL_NODES)) * _GL_WEIGHTS)


def noise_weights(nodes: Sequence[float], h: float) -> list[float]:
    """The same for ∫_0^h e^{−u}·P(u) du: the weights of ε̂ values in the noise-prediction form of the exact
    solution, x_next/m_next = x/m − e^{−λ_now}·∫_0^h e^{−u}·ε̂(λ_now + u) du (DPM-Solver's, Lu et al. 2022)."""
    return _lagrange_weights(nodes, h * np.exp(-h * _GL_NODES) * _GL_WEIGHTS)


def _lagrange_weights(nodes, kernel):
    """Σ over the quadrature of kernel × the Lagrange basis polynomial of each node (nodes in units of h)."""
    v = _GL_NODES
    weights = []
    for j, node in enumerate(nodes):
        basis = np.ones_like(v)
        for k, other in enumerate(nodes):
            if k != j:
                basis *= (v - other) / (node - other)
        weights.append(float(np.sum(kernel * basis)))
    return weights


def damped_weights(rule: Callable[[Sequence[float], float], list[float]], nodes: Sequence[float], h: float,
                   damping: float) -> list[float]:
    """The weights rule(nodes, h) of the polynomial P through nodes (oldest first), for P' + c·(P − P') with
    P' through all but the oldest node and c = 1/(1 + damping·h): P's highest divided difference times c."""
    weights = rule(nodes, h)
    if damping == 0 or len(nodes) < 2:
        return weights
    c = 1 / (1 + damping * h)
    lower = [0.0, *rule(nodes[1:], h)]
    return [c * full + (1 - c) * low for full, low in zip(weights, lower)]


def linear_step(x: torch.Tensor, grid: Grid, i: int, terms: Iterable[tuple[float, torch.Tensor]]
                ) -> torch.Tensor:
    """(s_{i+1}/s_i)·x + m_{i+1}·Σ w·x̂₀ over terms [(w, x̂₀), ...]."""
    out = (grid.s[i + 1] / grid.s[i]) * x
    for weight, x0 in terms:
        out = out + (grid.m[i + 1] * weight) * x0
    return out


# ---- deterministic: the probability-flow ODE ----


class Euler:
    """First order: x̂₀ constant over the step. Euler's method in σ on EDM's ODE for x/m, DDIM for VP and
    DPM-Solver++(1) alike: x_next = (s_next/s)·x − m_next·expm1(−h)·x̂₀."""

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = denoiser.at(x, grid, i)
        return linear_step(x, grid, i, [(-math.expm1(-grid.h(i)), x0)])


class Heun:
    """EDM's second-order Heun step (Karras et al. 2022, Alg. 1) in σ = s/m on y = x/m, whose ODE is
    dy/dσ = (y − x̂₀)/σ: an Euler step, then the trapezoid of the slopes at both ends. Two evaluations a
    step."""

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        return self.heun(x / grid.m[i], grid.sigma(i), grid.t_device[i], grid.m[i], grid, i, denoiser)

    @staticmethod
    def heun(y: torch.Tensor, sigma: float, t: torch.Tensor, m: float, grid: Grid, i: int, denoiser: Denoiser
             ) -> torch.Tensor:
        """The Heun step from y = x/m at (σ, t, m) to grid point i + 1; returns x there."""
        sigma_next = grid.sigma(i + 1)
        slope = (y - denoiser(m * y, t, m, m * sigma)) / sigma
        y_euler = y + (sigma_next - sigma) * slope
        slope_next = (y_euler - denoiser.at(grid.m[i + 1] * y_euler, grid, i + 1)) / sigma_next
        return grid.m[i + 1] * (y + (sigma_next - sigma) * 0.5 * (slope + slope_next))


class HeunChurn(Heun):
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2): each step first raises σ_i to
    σ̂ = σ_i·(1 + γ), γ = min(churn / steps, √2 − 1) (at most σ(T)), by adding fresh noise of std
    s_noise·√(σ̂² − σ_i²) to y = x/m, then takes the Heun step from σ̂."""

    def __init__(self, churn: float = 5.0, s_noise: float = 1.0):
        if churn < 0:
            raise ValueError(f"churn must be >= 0, got {churn}")
        self.churn, self.s_noise = churn, s_noise
        self.raised = None  # per step: (σ̂, t(σ̂) on the device, m(t(σ̂)))

    def prepare(self, sde: SDE, grid: Grid) -> None:
        """The raised noise levels of every step, computed once before the loop (no syncs in it)."""
        steps = len(grid.t) - 1
        gamma = min(self.churn / steps, math.sqrt(2) - 1)
        sigma_hat = [min(grid.sigma(i) * (1 + gamma), grid.sigma(0)) for i in range(steps)]
        t_hat = sde.t_from_log_snr(-torch.log(torch.tensor(sigma_hat, dtype=torch.float64)))
        t_hat = torch.maximum(t_hat, torch.tensor(grid.t[:-1], dtype=torch.float64)).clamp(max=grid.t[0])
        m_hat = sde.marginal_coefficients(t_hat)[0]
        t_device = t_hat.to(device=grid.t_device.device, dtype=grid.t_device.dtype)
        self.raised = [(sig, t_device[i], m) for i, (sig, m) in enumerate(zip(sigma_hat, m_hat.tolist()))]

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = grid.sigma(i)
        sigma_hat, t_hat, m_hat = self.raised[i]
        y = x / grid.m[i]
        y = y + (self.s_noise * math.sqrt(max(sigma_hat**2 - sigma**2, 0.0))) * randn_like(y, generator)
        return self.heun(y, sigma_hat, t_hat, m_hat, grid, i, denoiser)


class DPMSolverPP2M:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): x̂₀ extrapolated linearly from this step's and the last
    one's, D = (1 + 1/(2r))·x̂₀ − 1/(2r)·x̂₀_prev with r = h_prev/h; the first step is first order."""

    def __init__(self):
        self.previous = None  # (x̂₀, h) of the last step

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x0, h = denoiser.at(x, grid, i), grid.h(i)
        d = x0
        if self.previous is not None:
            x0_prev, h_prev = self.previous
            c = h / (2 * h_prev)
            d = (1 + c) * x0 - c * x0_prev
        self.previous = (x0, h)
        return linear_step(x, grid, i, [(-math.expm1(-h), d)])


class DPMSolverPP3M:
    """DPM-Solver++(3M) (Lu et al. 2022, multistep third order with data prediction): first and second
    divided differences of the last three x̂₀ in λ, integrated with φ₁ = e^{−h} − 1, φ₂ = φ₁/h + 1 and
    φ₃ = φ₂/h − 1/2; the first two steps are of order 1 and 2."""

    # The last three x̂₀ lie on x̂₀ + d1·u + d2·u² in u = (λ − λ_now)/h, and ∫_0^h e^{−(h−τ)}·(τ/h)² dτ = −2φ₃:
    # weight 2 integrates that quadratic exactly (third order). k-diffusion's sample_dpmpp_3m_sde and
    # diffusers' DPMSolverMultistepScheduler weigh d2 by −φ₃ (1 here), which is second order
    # (benchmarks/peer_3m.py, docs/fast_sampling.md).
    second_difference_weight = 2.0

    def __init__(self, second_difference_weight: float | None = None):
        if second_difference_weight is not None:  # 1 reproduces k-diffusion's and diffusers' 3M
            self.second_difference_weight = second_difference_weight
        self.history = []  # [(x̂₀, λ)], newest last, at most three

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x0, h = denoiser.at(x, grid, i), grid.h(i)
        self.history = [*self.history[-2:], (x0, grid.log_snr[i])]
        phi1 = math.expm1(-h)
        if len(self.history) == 1:
            return linear_step(x, grid, i, [(-phi1, x0)])
        (x0_1, lam_1), (x0_0, lam_0) = self.history[-2:]
        r0 = (lam_0 - lam_1) / h
        d1_0 = (x0_0 - x0_1) / r0
        phi2 = phi1 / h + 1
        if len(self.history) == 2:  # second order: DPM-Solver++(2M) with φ₂ (exact for linear x̂₀)
            return linear_step(x, grid, i, [(-phi1, x0), (phi2, d1_0)])
        x0_2, lam_2 = self.history[0]
        r1 = (lam_1 - lam_2) / h
        d1_1 = (x0_1 - x0_2) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        weight_d2 = -self.second_difference_weight * (phi2 / h - 0.5)  # −2φ₃
        return linear_step(x, grid, i, [(-phi1, x0), (phi2, d1), (weight_d2, d2)])


ADAMS_ORDERS = (1, 2, 3, 4)  # the predictor's; the corrector's is one higher


class AdamsPC:
    """Our default: an exponential Adams predictor–corrector in λ, in the manner of UniPC (Zhao et al. 2023).

    Predictor (Adams–Bashforth): the network's prediction is the polynomial through its last `order`
    values, integrated exactly against the kernel of the exact solution. The network is then evaluated at
    the predicted point, and that value serves twice: the corrector (Adams–Moulton) adds it as a node at
    λ_next and redoes the step from x_i, one order higher; and the next step uses it as its current value.
    So a step costs one evaluation, as a multistep method, for one more order of accuracy. The last step has
    no corrector (it would need one more evaluation).

    prediction: "data" interpolates x̂₀ (the kernel e^{−(λ_next − λ)}, `exponential_weights`); "noise"
    interpolates ε̂ = (x − m·x̂₀)/s (the kernel e^{−λ}, `noise_weights`). Far from the data ε̂ barely moves
    while x̂₀ grows like e^λ, near it the reverse, so each is exact where the other is poor
    (docs/fast_sampling.md §2). lower_order_final: the last steps use at most as many nodes as steps remain
    (the last one order 1 before its corrector-free end), as DPM-Solver and UniPC do below 15 steps.
    damping: the predictor's polynomial P through its nodes becomes P' + c·(P − P'), P' the polynomial
    through all nodes but the oldest and c = 1/(1 + damping·h): its highest difference is damped on long
    steps, where x̂₀ saturates between its nodes and an extrapolated polynomial overshoots. c = 1 − O(h), so
    the predictor's local error keeps its order, and so does the method (docs/fast_sampling.md §2). 0 (the
    default) is the exact polynomial; the corrector is never damped.
    """

    def __init__(self, order: int = 2, prediction: str = "data", lower_order_final: bool = False,
                 damping: float = 0.0):
        if order not in ADAMS_ORDERS:
            raise ValueError(f"order must be one of {ADAMS_ORDERS}, got {order}")
        if prediction not in ("data", "noise"):
            raise ValueError(f"prediction must be 'data' or 'noise', got {prediction!r}")
        if not damping >= 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        self.predictor_order, self.lower_order_final, self.damping = order, lower_order_final, damping
        self.noise = prediction == "noise"
        self.history = []  # [(x̂₀ or ε̂, λ)] of earlier grid points, newest last
        self.current = None  # the prediction at the current point (evaluated at the predicted point)

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        last = len(grid.t) - 1
        if self.current is None:
            self.current = self._predict(x, grid, i, denoiser)
        self.history = [*self.history, (self.current, grid.log_snr[i])][-self.predictor_order:]
        nodes = self.history[-(last - i):] if self.lower_order_final else self.history
        x_predicted = self._integrate(x, grid, i, nodes, self.damping)
        if i + 1 == last:
            return x_predicted
        self.current = self._predict(x_predicted, grid, i + 1, denoiser)
        return self._integrate(x, grid, i, [*nodes, (self.current, grid.log_snr[i + 1])])

    def _predict(self, x, grid, i, denoiser):
        x0 = denoiser.at(x, grid, i)
        return (x - grid.m[i] * x0) / grid.s[i] if self.noise else x0

    def _integrate(self, x, grid, i, nodes, damping=0.0):
        """The exact step for the prediction interpolated through nodes [(x̂₀ or ε̂, λ)], oldest first, its
        highest difference damped by `damping` (see the class)."""
        h, lam = grid.h(i), grid.log_snr[i]
        units = [(node_lam - lam) / h for _, node_lam in nodes]
        weights = damped_weights(noise_weights if self.noise else exponential_weights, units, h, damping)
        if not self.noise:
            return linear_step(x, grid, i, list(zip(weights, (v for v, _ in nodes))))
        out = (grid.m[i + 1] / grid.m[i]) * x
        for weight, (eps_hat, _) in zip(weights, nodes):
            out = out - (grid.m[i + 1] * math.exp(-lam) * weight) * eps_hat
        return out


# ---- stochastic: the reverse SDE ----


class DDIM:
    """DDIM with η (Song et al. 2021a, eq. 12), for any SDE: x_next = m_next·x̂₀ + √(s_next² − σ_η²)·ε̂ +
    σ_η·z with ε̂ = (x − m·x̂₀)/s and σ_η = η·s_next·√(1 − e^{−2h}), the posterior std at η = 1 (then it is
    ancestral sampling); η = 0 is the deterministic Euler step."""

    def __init__(self, eta: float = 1.0):
        if eta < 0 or eta > 1:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.eta = eta

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = denoiser.at(x, grid, i)
        eps_hat = (x - grid.m[i] * x0) / grid.s[i]
        s_next = grid.s[i + 1]
        noise_std = self.eta * s_next * math.sqrt(-math.expm1(-2 * grid.h(i)))
        out = grid.m[i + 1] * x0 + math.sqrt(s_next**2 - noise_std**2) * eps_hat
        return out + noise_std * randn_like(x, generator) if noise_std > 0 else out


class DPMSolverPP2MSDE:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, appendix): the exact solution of the reverse SDE in data
    prediction, x_next = (s_next/s)·e^{−h}·x + m_next·(1 − e^{−2h})·x̂₀ + (correction from the last x̂₀)
    + s_next·√(1 − e^{−2h})·z. The correction integrates the linear extrapolation of x̂₀ exactly against
    the kernel 2e^{−2(λ_next − λ)}: weight m_next·(h − (1 − e^{−2h})/2)/h_prev on x̂₀ − x̂₀_prev."""

    def __init__(self):
        self.previous = None

    def step(self, x: torch.Tensor, grid: Grid, i: int, denoiser: Denoiser,
             generator: torch.Generator | None = None) -> torch.Tensor:
        x0, h = denoiser.at(x, grid, i), grid.h(i)
        m_next, s_next = grid.m[i + 1], grid.s[i + 1]
        one_minus = -math.expm1(-2 * h)
        out = (s_next / grid.s[i] * math.exp(-h)) * x + (m_next * one_minus) * x0
        if self.previous is not None:
            x0_prev, h_prev = self.previous
            out = out + (m_next * (h - 0.5 * one_minus) / h_prev) * (x0 - x0_prev)
        self.previous = (x0, h)
        return out + (s_next * math.sqrt(one_minus)) * randn_like(x, generator)


SOLVERS = {
    "euler": Euler,
    "heun": Heun,
    "dpmpp_2m": DPMSolverPP2M,
    "dpmpp_3m": DPMSolverPP3M,
    "adams_pc": AdamsPC,
    "ddim": DDIM,
    "dpmpp_2m_sde": DPMSolverPP2MSDE,
    "heun_churn": HeunChurn,
}
STOCHASTIC = {"ddim", "dpmpp_2m_sde", "heun_churn"}
