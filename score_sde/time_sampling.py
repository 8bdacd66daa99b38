"""Densities of the training time t on [eps, T]: uniform (the original's), EDM's log-normal noise levels, and
the importance density that lowers the variance of the likelihood-weighted loss.

A density is used as an importance sampler: the loss divides each sample's weight by p(t), so the density
changes the variance of the estimate, never the objective (losses.py). For that to hold exactly, `pdf` must
be the density `sample` draws from. The non-uniform densities are therefore piecewise constant on bins
(edges equally spaced in the half log-SNR λ, which resolves both ends of [eps, T] for every SDE), sampled
exactly through their piecewise-linear CDF, and evaluated as the same piecewise-constant function: the
estimator is unbiased whatever the bins, and the bins only decide how close p(t) comes to its target shape.
"""
import torch

from score_sde.registry import lookup
from score_sde.sde import SDE

BINS = 4096
_FLOOR = 1e-12  # relative mass given to every bin: p(t) > 0 on all of [eps, T], so w(t) / p(t) is finite


class UniformTime:
    """t ~ U(eps, T), drawn as the original draws it (so losses stay bit for bit those of before)."""

    def __init__(self, sde: SDE, eps: float):
        self.T, self.eps = sde.T, eps

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.eps + (self.T - self.eps) * torch.rand(n, generator=generator, device=device, dtype=dtype)

    def pdf(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, 1.0 / (self.T - self.eps))


class BinnedTime:
    """A density on [eps, T] that is constant on each bin [edges[k], edges[k + 1]), of mass masses[k]."""

    def __init__(self, edges: torch.Tensor, masses: torch.Tensor):
        masses = masses.double() + _FLOOR * masses.sum()
        self.edges = edges.double()
        self.masses = masses / masses.sum()
        self.cdf = torch.cat([torch.zeros(1, dtype=torch.float64), self.masses.cumsum(0)])
        self.cdf[-1] = 1.0
        self._tables = {}

    def _on(self, device):
        """(edges, masses, cdf) on the device, made once per device: no copy per training step."""
        key = str(device)
        if key not in self._tables:
            self._tables[key] = tuple(v.to(device) for v in (self.edges, self.masses, self.cdf))
        return self._tables[key]

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """n times [n]: a bin by its mass, then a uniform place in it, both from one uniform draw."""
        edges, masses, cdf = self._on(device or torch.device("cpu"))
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        k = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, len(masses) - 1)
        within = ((u - cdf[k]) / masses[k]).clamp(0.0, 1.0)
        return (edges[k] + within * (edges[k + 1] - edges[k])).to(dtype)

    def pdf(self, t: torch.Tensor) -> torch.Tensor:
        """p(t) [B], in t's dtype: the mass of t's bin over the bin's width."""
        edges, masses, _ = self._on(t.device)
        k = (torch.bucketize(t.double(), edges, right=True) - 1).clamp(0, len(masses) - 1)
        return (masses[k] / (edges[k + 1] - edges[k])).to(t.dtype)


def _log_snr_edges(sde, eps, bins=BINS):
    """Bin edges in t, increasing from eps to T, equally spaced in λ(t) = log(m/s)."""
    ends = torch.tensor([eps, sde.T], dtype=torch.float64)
    lam_eps, lam_T = sde.log_snr(ends).tolist()
    edges = sde.t_from_log_snr(torch.linspace(lam_eps, lam_T, bins + 1, dtype=torch.float64))
    edges[0], edges[-1] = eps, sde.T  # exact ends, whatever the inverse's rounding
    return edges


def lognormal_time(sde: SDE, eps: float, mean: float = -1.2, std: float = 1.2, bins: int = BINS
                   ) -> BinnedTime:
    """EDM's training noise levels (Karras et al. 2022, Table 1): ln σ ~ N(mean, std²) with σ = s/m = e^{−λ},
    truncated to [eps, T]; each bin's mass is the normal's exact mass over the bin's λ-interval."""
    edges = _log_snr_edges(sde, eps, bins)
    log_sigma = -sde.log_snr(edges)  # increasing with t
    cdf = torch.special.ndtr((log_sigma - mean) / std)
    return BinnedTime(edges, (cdf[1:] - cdf[:-1]).clamp(min=0.0))


def importance_time(sde: SDE, eps: float, bins: int = BINS) -> BinnedTime:
    """p(t) ∝ g(t)² / s(t)² (Song et al. 2021b, §5): with likelihood weighting λ(t) = g² the per-time loss of
    a good model is about d·g²/s², so drawing t in proportion to it makes the weighted loss nearly constant
    over t. Each bin's mass is g²/s² at its midpoint times its width."""
    edges = _log_snr_edges(sde, eps, bins)
    mid = 0.5 * (edges[1:] + edges[:-1])
    g2 = sde.sde(torch.zeros(len(mid), 1, dtype=torch.float64), mid)[1] ** 2
    s2 = sde.marginal_coefficients(mid)[1] ** 2
    return BinnedTime(edges, g2 / s2 * (edges[1:] - edges[:-1]))


T_SAMPLINGS = {
    "uniform": lambda sde, eps, **kwargs: UniformTime(sde, eps),
    "lognormal": lambda sde, eps, lognormal_mean=-1.2, lognormal_std=1.2, **kwargs: lognormal_time(
        sde, eps, lognormal_mean, lognormal_std),
    "importance": lambda sde, eps, **kwargs: importance_time(sde, eps),
}


def time_density(sde: SDE, name: str, eps: float, **kwargs: float) -> UniformTime | BinnedTime:
    """The density named `name` (T_SAMPLINGS) on [eps, T]; kwargs: lognormal_mean, lognormal_std."""
    return lookup(T_SAMPLINGS, name, "t_sampling")(sde, eps, **kwargs)
