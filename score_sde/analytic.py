"""Gaussian mixtures with their exact score, log-density and posterior at every t under a linear SDE.

A linear SDE, x(t) = m(t)·x(0) + s(t)·z, maps a component N(μ_k, Σ_k) to N(m·μ_k, m²Σ_k + s²I), so the
perturbed data stay a Gaussian mixture, and score, density and the noisy classifier p_t(k | x) are known in
closed form. A component is isotropic, Σ_k = σ_k²I over events of any shape and size, or has a full
covariance over the flattened event (d values; meant for small d). `GaussianMixture.condition` gives the
exact posterior under a linear Gaussian observation y = A·x + σ_y·n, again a Gaussian mixture. This is the
exact stand-in for a trained network that tests and benchmarks use; docs/controllable.md derives the
posterior and the full-covariance score.
"""
import math
from collections.abc import Callable, Sequence

import scipy.integrate
import torch

from score_sde.sde import SDE

# What the constructor and `condition` accept: a tensor, or nested lists of numbers.
TensorLike = torch.Tensor | Sequence
# One value for every coordinate, or one per coordinate ([d]).
PerCoordinate = float | torch.Tensor

# Eigenvalues at or below this fraction of a matrix's largest count as exact zeros. Rounding leaves about
# 1e-16·‖Σ‖ where a conditioned covariance has a true zero, and its square root would spread samples 1e-8
# off the observed subspace; beyond a condition number of 1e12, float64 solves keep under 4 digits.
_RCOND = 1e-12


class GaussianMixture:
    """Mixture Σ_k w_k·N(μ_k, Σ_k) over events of any shape, with Σ_k = σ_k²I or a full covariance.

    Args:
        weights: [K] non-negative mixture weights with a positive sum (normalised here); `condition` leaves a
            zero where a component's posterior mass underflows float64.
        means: [K, *event_shape] component means.
        stds: [K] standard deviations of isotropic components, Σ_k = σ_k²I; or
        covs: [K, d, d] symmetric positive semi-definite covariances acting on the flattened event,
            d = prod(event_shape). Give exactly one of stds and covs.
    """

    def __init__(self, weights: TensorLike, means: TensorLike, stds: TensorLike | None = None,
                 covs: TensorLike | None = None) -> None:
        if (stds is None) == (covs is None):
            raise ValueError("give exactly one of stds [K] (isotropic components) and covs [K, d, d]")
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.event_shape = tuple(self.means.shape[1:])
        self.stds = self.covs = None
        if stds is not None:
            self.stds = torch.as_tensor(stds, dtype=torch.float64)
            self._check_isotropic()
        else:
            self.covs = torch.as_tensor(covs, dtype=torch.float64)
            self._check_weights_and_means()
            self.covs, self._eigvals, self._eigvecs = _eigen_factors(self.covs, math.prod(self.event_shape))
        if (self.weights < 0).any() or not self.weights.sum() > 0:
            raise ValueError(f"mixture weights must be non-negative with a positive sum, got {self.weights}")
        self.weights = self.weights / self.weights.sum()

    def _check_isotropic(self):
        k = self.weights.shape[0]
        if self.weights.ndim != 1 or self.means.shape[0] != k or self.stds.shape != (k,):
            raise ValueError(
                f"need weights [K], means [K, ...] and stds [K]; got {tuple(self.weights.shape)}, "
                f"{tuple(self.means.shape)}, {tuple(self.stds.shape)}"
            )
        if (self.stds <= 0).any():
            raise ValueError(f"mixture stds must be positive, got {self.stds}")

    def _check_weights_and_means(self):
        if self.weights.ndim != 1 or self.means.ndim == 0 or self.means.shape[0] != self.weights.shape[0]:
            raise ValueError(f"need weights [K] and means [K, ...]; got {tuple(self.weights.shape)}, "
                             f"{tuple(self.means.shape)}")

    @property
    def is_isotropic(self) -> bool:
        """True when every component is σ_k²I (built from stds)."""
        return self.stds is not None

    @property
    def covariances(self) -> torch.Tensor:
        """The component covariances [K, d, d] over the flattened event (σ_k²I expanded if isotropic)."""
        if self.covs is not None:
            return self.covs
        eye = torch.eye(math.prod(self.event_shape), dtype=torch.float64)
        return self.stds[:, None, None] ** 2 * eye

    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """num_samples draws, [num_samples, *event_shape]."""
        k = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        z = torch.randn(num_samples, *self.event_shape, generator=generator, dtype=torch.float64)
        if self.is_isotropic:
            x = self.means[k] + self.stds[k].reshape(-1, *([1] * len(self.event_shape))) * z
        else:
            x = self._full_sample(k, z.flatten(1)).reshape(z.shape)
        return x.to(device=device, dtype=dtype)

    def _full_sample(self, k, z):
        # Σ_k^½ = U_k·diag(√λ_k) is exact for semi-definite Σ_k: a zero eigenvalue gives no spread at all,
        # where a Cholesky factor would need a jitter that moves samples off the subspace the covariance
        # allows (A·x = y for a noiseless posterior).
        roots = self._eigvecs * self._eigvals.sqrt()[:, None, :]
        x = self.means.flatten(1)[k]
        for j in range(len(self.weights)):  # one matmul per component: no [num_samples, d, d] gather
            chosen = k == j
            x[chosen] += z[chosen] @ roots[j].T
        return x

    def component_log_probs(self, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log(w_k·N(x; m·μ_k, m²Σ_k + s²I)) per sample and component: [B, K].

        Args:
            x: [B, *event_shape]; m, s: [B], the kernel's mean scale and std.
        """
        self._check_event_shape(x)
        if self.is_isotropic:
            return self._isotropic_component_log_probs(x, m, s)
        return self._full_log_probs(*self._eigen_coordinates(x.flatten(1), m, s))

    def _check_event_shape(self, x):
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x has event shape {tuple(x.shape[1:])}, the mixture {self.event_shape}")

    def _isotropic_component_log_probs(self, x, m, s):
        means, stds, weights = (v.to(x) for v in (self.means, self.stds, self.weights))
        flat = x.flatten(1)
        var = m[:, None] ** 2 * stds**2 + s[:, None] ** 2
        sq = (flat[:, None, :] - m[:, None, None] * means.flatten(1)[None]).pow(2).sum(-1)
        dim = flat.shape[1]
        return torch.log(weights) - 0.5 * dim * torch.log(2 * math.pi * var) - sq / (2 * var)

    def _eigen_coordinates(self, flat, m, s):
        """U_kᵀ(x − m·μ_k) [B, K, d] and the variances m²λ_k + s² [B, K, d] along Σ_k's eigenvectors U_k.

        m²Σ_k + s²I = U_k·diag(m²λ_k + s²)·U_kᵀ shares Σ_k's eigenvectors, so the eigendecomposition made at
        construction serves every (m, s): O(d²) per point and component, no factorisation per item and t.
        """
        means, eigvals, eigvecs = (v.to(flat) for v in (self.means.flatten(1), self._eigvals, self._eigvecs))
        # one batched matmul per component ([K, B, d] @ [K, d, d]): far quicker than the einsum's general path
        coords = torch.bmm(flat[None] - m[None, :, None] * means[:, None], eigvecs).transpose(0, 1)
        var = m[:, None, None] ** 2 * eigvals + s[:, None, None] ** 2
        degenerate = (var == 0).any(-1).any(0)  # [K]: no spread along some direction (λ = 0, s = 0)
        if degenerate.any():
            raise ValueError(f"component(s) {_where(degenerate)} have a singular covariance, so there is "
                             "no density at s = 0 (log_prob); evaluate the perturbed mixture at s > 0")
        return coords, var

    def _full_log_probs(self, coords, var):
        log_det = torch.log(2 * math.pi * var).sum(-1)
        return torch.log(self.weights.to(coords)) - 0.5 * log_det - 0.5 * (coords**2 / var).sum(-1)

    def perturbed_log_prob(self, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats [B] of the data pushed through x ↦ m·x + s·z; m, s: [B]."""
        return torch.logsumexp(self.component_log_probs(x, m, s), dim=1)

    def perturbed_score(self, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """∇_x log p(x) (like x) of the data pushed through x ↦ m·x + s·z; m, s: [B]."""
        if not self.is_isotropic:
            return self._full_perturbed_score(x, m, s)
        log_probs = self.component_log_probs(x, m, s)
        resp = torch.softmax(log_probs, dim=1)  # posterior over components, stable in any dimension
        means, stds = self.means.to(x), self.stds.to(x)
        var = m[:, None] ** 2 * stds**2 + s[:, None] ** 2
        flat = x.flatten(1)
        pull = (m[:, None, None] * means.flatten(1)[None] - flat[:, None, :]) / var[:, :, None]
        return (resp[:, :, None] * pull).sum(1).reshape(x.shape)

    def _full_perturbed_score(self, x, m, s):
        # −Σ_k p(k | x)·C_k⁻¹(x − m·μ_k) with C_k = m²Σ_k + s²I, the inverse applied in C_k's eigenbasis.
        self._check_event_shape(x)
        coords, var = self._eigen_coordinates(x.flatten(1), m, s)
        resp = torch.softmax(self._full_log_probs(coords, var), dim=1)
        along = (resp[..., None] * coords / var).transpose(0, 1)  # [K, B, d], in each C_k's eigenbasis
        score = -torch.bmm(along, self._eigvecs.to(x).mT).sum(0)
        return score.reshape(x.shape)

    def responsibilities(self, x: torch.Tensor, m: torch.Tensor | None = None,
                         s: torch.Tensor | None = None) -> torch.Tensor:
        """P(k | x) [B, K] under the data (m, s None) or the data pushed through x ↦ m·x + s·z (m, s: [B]).

        Like log_prob, it raises ValueError at s = 0 when a component has a singular covariance.
        """
        if (m is None) != (s is None):
            raise ValueError("give both m and s (the perturbed mixture) or neither (the data)")
        if m is None:
            m = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
            s = torch.zeros_like(m)
        return torch.softmax(self.component_log_probs(x, m, s), dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log-density of the data in nats, [B]; raises ValueError if a component's covariance is singular."""
        one = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return self.perturbed_log_prob(x, one, torch.zeros_like(one))

    def marginal_log_prob(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log p_t(x) [B] of the data perturbed by the SDE's kernel at times t [B]."""
        return self.perturbed_log_prob(x, *sde.marginal_coefficients(t))

    def marginal_responsibilities(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noisy classifier p_t(k | x) [B, K] under the SDE's kernel at times t [B]."""
        return self.responsibilities(x, *sde.marginal_coefficients(t))

    def score_fn(self, sde: SDE) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact score function (x [B, ...], t [B]) -> ∇_x log p_t(x) under the given SDE."""

        def score_fn(x, t):
            return self.perturbed_score(x, *sde.marginal_coefficients(t))

        return score_fn

    def component_scores(self, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """∇_x log N(x; m·μ_k, m²Σ_k + s²I) per component, [B, K, *event_shape]: the class-conditional
        scores of the data pushed through x ↦ m·x + s·z (m, s: [B]), component k being class k."""
        self._check_event_shape(x)
        flat = x.flatten(1)
        if self.is_isotropic:
            var = m[:, None] ** 2 * self.stds.to(x) ** 2 + s[:, None] ** 2
            centres = m[:, None, None] * self.means.to(x).flatten(1)[None]
            scores = (centres - flat[:, None, :]) / var[..., None]
        else:
            coords, var = self._eigen_coordinates(flat, m, s)
            scores = -torch.bmm((coords / var).transpose(0, 1), self._eigvecs.to(x).mT).transpose(0, 1)
        return scores.reshape(x.shape[0], -1, *self.event_shape)

    def conditional_score_fn(self, sde: SDE) -> Callable[..., torch.Tensor]:
        """The exact class-conditional score (x [B, ...], t [B], labels [B] or None) -> ∇_x log p_t(x | k),
        component k being class k; labels None gives the unconditional score (the null class)."""

        def score_fn(x, t, labels=None):
            m, s = sde.marginal_coefficients(t)
            if labels is None:
                return self.perturbed_score(x, m, s)
            index = labels.reshape(-1, 1, *([1] * (x.ndim - 1))).expand(-1, 1, *x.shape[1:])
            return self.component_scores(x, m, s).gather(1, index).squeeze(1)

        return score_fn

    def classifier_log_prob_fn(self, sde: SDE) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact noisy classifier (x [B, ...], t [B]) -> log p_t(k | x) [B, K] (differentiable in x)."""

        def log_prob_fn(x, t):
            return torch.log_softmax(self.component_log_probs(x, *sde.marginal_coefficients(t)), dim=1)

        return log_prob_fn

    def condition(self, A: TensorLike, y: TensorLike, sigma_y: float) -> "GaussianMixture":
        """The exact posterior p(x | y) given y = A·x + σ_y·n, n ~ N(0, I): a mixture with full covariances.

        With S_k = AΣ_kAᵀ + σ_y²I, component k becomes N(μ_k + Σ_kAᵀS_k⁻¹(y − Aμ_k), Σ_k − Σ_kAᵀS_k⁻¹AΣ_k)
        with weight ∝ w_k·N(y; Aμ_k, S_k); docs/controllable.md derives it. A acts on the flattened event.

        Args:
            A: [r, d] observation matrix, d = prod(event_shape); y: [r] observed values; sigma_y: the noise
                std, ≥ 0 (at 0 the posterior covariances are singular: samples lie on A·x = y).
        Returns:
            GaussianMixture with K full-covariance components and this mixture's event shape.
        Raises:
            ValueError: shapes that do not fit, sigma_y < 0, or a singular S_k (A rank-deficient with
                sigma_y = 0, or a component without spread along A's rows).
        """
        A, y = self._checked_observation(A, y, sigma_y)
        means, covs = self.means.flatten(1), self.covariances
        a_cov = A @ covs  # AΣ_k [K, r, d]
        eye = torch.eye(A.shape[0], dtype=torch.float64)
        chol = _observation_cholesky(_symmetrised(a_cov @ A.T + sigma_y**2 * eye))
        innovation = y - means @ A.T  # y − Aμ_k [K, r]
        gain_t = torch.cholesky_solve(a_cov, chol)  # S_k⁻¹AΣ_k [K, r, d], the transposed gain Σ_kAᵀS_k⁻¹
        post_means = means + (gain_t.mT @ innovation[..., None]).squeeze(-1)
        post_covs = _symmetrised(covs - a_cov.mT @ gain_t)  # rounding breaks the exact symmetry
        log_evidence = _gaussian_log_density(innovation, chol)  # log N(y; Aμ_k, S_k)
        weights = torch.softmax(torch.log(self.weights) + log_evidence, dim=0)
        return GaussianMixture(weights, post_means.reshape(-1, *self.event_shape), covs=post_covs)

    def _checked_observation(self, A, y, sigma_y):
        d = math.prod(self.event_shape)
        A = torch.as_tensor(A, dtype=torch.float64, device=self.means.device)
        y = torch.as_tensor(y, dtype=torch.float64, device=self.means.device)
        if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] != d or y.shape != (A.shape[0],):
            raise ValueError(f"need A [r, d] with r ≥ 1 and d = {d} (the flattened event {self.event_shape}) "
                             f"and y [r]; got A {tuple(A.shape)}, y {tuple(y.shape)}")
        if not sigma_y >= 0:
            raise ValueError(f"sigma_y must be ≥ 0, got {sigma_y}")
        return A, y


def _where(mask):
    """The indices [i, ...] where a boolean vector is True, for error messages."""
    return mask.nonzero()[:, 0].tolist()


def _symmetrised(mat):
    return (mat + mat.mT) / 2


def _eigen_factors(covs, d):
    """Checked covariances [K, d, d] and their eigendecompositions Σ_k = U_k·diag(λ_k)·U_kᵀ: (Σ, λ, U)."""
    k = covs.shape[0] if covs.ndim else 0
    if covs.shape != (k, d, d):
        raise ValueError(f"covs must be [K, d, d] with d = {d}, the flattened event; got {tuple(covs.shape)}")
    asymmetric = (covs - covs.mT).abs().amax((1, 2)) > 1e-10 * covs.abs().amax((1, 2))
    if asymmetric.any():
        raise ValueError(f"covs must be symmetric; component(s) {_where(asymmetric)} are not")
    covs = _symmetrised(covs)
    eigvals, eigvecs = torch.linalg.eigh(covs)
    tiny = _RCOND * eigvals[:, -1:].clamp_min(0)
    negative = (eigvals < -tiny).any(1)
    if negative.any():
        raise ValueError(f"covs must be positive semi-definite; component(s) {_where(negative)} have "
                         "negative eigenvalues")
    return covs, torch.where(eigvals <= tiny, 0.0, eigvals), eigvecs


def _observation_cholesky(S):
    """Cholesky factors of S_k [K, r, r]; ValueError naming the components where S_k is singular."""
    eigvals = torch.linalg.eigvalsh(S)
    singular = eigvals[:, 0] <= _RCOND * eigvals[:, -1]
    if singular.any():
        raise ValueError(
            f"S_k = AΣ_kAᵀ + sigma_y²I is singular for component(s) {_where(singular)}: A is "
            "rank-deficient with sigma_y = 0, or the component has no spread along A's rows; use sigma_y > 0 "
            "or drop the dependent rows of A"
        )
    return torch.linalg.cholesky(S)


def _gaussian_log_density(residual, chol):
    """log N(residual; 0, LLᵀ) [K] for residuals [K, r] and Cholesky factors L [K, r, r]."""
    white = torch.linalg.solve_triangular(chol, residual[..., None], upper=False).squeeze(-1)
    half_log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * residual.shape[-1] * math.log(2 * math.pi) - half_log_det - 0.5 * white.pow(2).sum(-1)


def two_mode_mixture(dim: int = 2) -> GaussianMixture:
    """0.2·N(−5·1, I) + 0.8·N(5·1, I) in `dim` dimensions: the toy data, and the mixture of the demo, the
    tests and the benchmarks, whose exact answers they check samplers and likelihoods against."""
    return GaussianMixture(weights=[0.2, 0.8], means=[[-5.0] * dim, [5.0] * dim], stds=[1.0, 1.0])


def upper_mode_weight(x: torch.Tensor) -> float:
    """The fraction of the points x [B, d] on the heavier mode's side (Σ x > 0) of two_mode_mixture."""
    return (x.flatten(1).sum(1) > 0).double().mean().item()


def three_component_mixture() -> GaussianMixture:
    """A fixed 3-D mixture of three correlated Gaussians, for posteriors given an observed coordinate 0.

    Observing x_0 = y exactly (A = [[1, 0, 0]], sigma_y = 0) gives these posterior weights (`condition`):

          y     w_0     w_1     w_2
        −3.0   0.9953  0.0047  0.0000   component 0 dominates
        −1.5   0.5019  0.4942  0.0039   components 0 and 1 share the mass
         0.0   0.0075  0.8853  0.1072   component 1 dominates
         1.0   0.0002  0.4965  0.5032   components 1 and 2 share the mass
         3.0   0.0000  0.0066  0.9934   component 2 dominates

    Each Σ_k couples x_0 to x_1 and x_2, differently per component, so the observation moves the other
    coordinates' means: at y = 1.0, (x_1, x_2) is bimodal, with modes near (−2.6, 1.9) and (1.3, −1.1).
    """
    means = [[-3.0, 2.0, 0.0], [0.0, -2.0, 1.5], [2.0, 2.0, -1.5]]
    covs = [
        [[1.0, 0.6, 0.2], [0.6, 1.0, 0.3], [0.2, 0.3, 0.5]],
        [[0.8, -0.5, 0.3], [-0.5, 1.2, 0.0], [0.3, 0.0, 0.6]],
        [[1.0, 0.7, -0.4], [0.7, 1.5, -0.2], [-0.4, -0.2, 0.8]],
    ]
    return GaussianMixture(weights=[0.3, 0.35, 0.35], means=means, covs=covs)


def guided_gaussian_endpoint(sde: SDE, w: float, cond_mean: PerCoordinate, cond_std: PerCoordinate,
                             mean: PerCoordinate, std: PerCoordinate, t_end: float
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the classifier-free-guided probability-flow ODE takes the class's exact p_T, per coordinate.

    The conditional is N(μ_c, σ_c²), the unconditional (null-class) data N(μ, σ²); the guided score is
    (1 + w)·∇log p_t(x | c) − w·∇log p_t(x), and the ODE starts from x_T ~ N(m_T·μ_c, v_c(T)). With
    r = s²/m² (m, s from `sde.marginal_coefficients`), v_c = m²(σ_c² + r) and v = m²(σ² + r), the flow is
    affine in x and its end point at t_end is Gaussian (docs/guidance.md derives it):

        std  = √v_c(t_end) · [v_c(t_end)·v(T) / (v_c(T)·v(t_end))]^{w/2}
        mean = m(t_end)·μ_c + w·(μ_c − μ)·m(t_end)·(σ_c² + r_end)^{(1+w)/2}·(σ² + r_end)^{−w/2}
                 · ∫_{r_end}^{r_T} ½·(σ_c² + r)^{−(1+w)/2}·(σ² + r)^{w/2 − 1} dr

    The integral, the only one left, is evaluated by adaptive float64 quadrature. At w = 0 this is the
    conditional's own marginal at t_end; for T → ∞ and t_end → 0 the std tends to σ_c^{1+w}/σ^w.

    Args:
        sde: a linear SDE (VPSDE, subVPSDE, VESDE). w: the guidance weight, ≥ 0.
        cond_mean, cond_std, mean, std: μ_c, σ_c, μ, σ per coordinate: floats or 1-D tensors, broadcast.
        t_end: the time where the flow stops, in [0, T) (a sampler's eps).
    Returns:
        (end_mean, end_std): float64 tensors [d] (d = 1 for floats) of the end point's Gaussian.
    """
    values = (cond_mean, cond_std, mean, std)
    cond_mean, cond_std, mean, std = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=torch.float64).reshape(-1).cpu() for v in values))
    if not w >= 0:
        raise ValueError(f"the guidance weight w must be >= 0, got {w}")
    if not 0 <= t_end < sde.T:
        raise ValueError(f"t_end must lie in [0, {sde.T}), got {t_end}")
    if not ((cond_std > 0).all() and (std > 0).all()):
        raise ValueError(f"cond_std and std must be positive, got {cond_std} and {std}")
    m, s = sde.marginal_coefficients(torch.tensor([t_end, sde.T], dtype=torch.float64))
    r_end, r_T = ((s / m) ** 2).tolist()
    a, b = cond_std**2, std**2
    ratio = (a + r_end) / (a + r_T) * (b + r_T) / (b + r_end)  # v_c(t_end)·v(T) / (v_c(T)·v(t_end))
    end_std = m[0] * (a + r_end).sqrt() * ratio ** (w / 2)
    if w == 0:
        return m[0] * cond_mean, end_std
    pull = torch.tensor([_offset_integral(w, ai, bi, r_end, r_T) for ai, bi in zip(a.tolist(), b.tolist())],
                        dtype=torch.float64)
    gain = (a + r_end) ** ((1 + w) / 2) * (b + r_end) ** (-w / 2)
    return m[0] * (cond_mean + w * (cond_mean - mean) * gain * pull), end_std


def _offset_integral(w, a, b, r_end, r_T):
    """∫_{r_end}^{r_T} ½·(a + r)^{−(1+w)/2}·(b + r)^{w/2 − 1} dr, in ρ = log(c + r), c = min(a, b): the
    integrand then varies smoothly over the decades r spans (1e-5 to 1e4)."""
    c = min(a, b)

    def integrand(rho):
        r = math.exp(rho) - c
        return 0.5 * (a + r) ** (-(1 + w) / 2) * (b + r) ** (w / 2 - 1) * math.exp(rho)

    value, _ = scipy.integrate.quad(integrand, math.log(c + r_end), math.log(c + r_T), epsabs=0.0,
                                    epsrel=1e-12, limit=200)
    return value
