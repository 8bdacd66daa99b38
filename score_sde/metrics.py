"""Sample-quality metrics: Fréchet distance (FID), kernel distance (KID), Inception Score (IS) on features,
and the sliced Wasserstein-2 distance for low-dimensional (toy) samples.

The metrics are functions of feature arrays, whatever network made them (the FID Inception network of
score_sde.features, or the MNIST classifier of score_sde.mnist_classifier), computed in float64.
Conventions follow the papers' reference code: FID (Heusel et al. 2017) with the unbiased sample covariance;
KID (Bińkowski et al. 2018) as the unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³, averaged over
subsets; IS (Salimans et al. 2016) over 10 splits.
"""
import numpy as np
import scipy.linalg
import torch


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of features [N, D] in float64, the covariance with 1/(N − 1)."""
    features = _as_float64(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be [N ≥ 2, D], got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray | torch.Tensor, sigma1: np.ndarray | torch.Tensor,
                     mu2: np.ndarray | torch.Tensor, sigma2: np.ndarray | torch.Tensor,
                     eps: float = 1e-6) -> float:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}), the Fréchet distance of two Gaussians.

    When the product is near-singular (the square root comes out with infinities or NaNs), eps·I is added
    to both covariances, as the reference implementation does; an imaginary part that rounding leaves in
    the square root is dropped, and a large one raises ValueError.
    """
    mu1, mu2, sigma1, sigma2 = (_as_float64(a) for a in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: means {mu1.shape}, {mu2.shape}; covariances "
                         f"{sigma1.shape}, {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(len(mu1))
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the square root of Σ₁Σ₂ has an imaginary part of up to "
                             f"{np.abs(covmean.imag).max():.3g}: the covariances are not valid")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x·y / d + 1)³ for rows x [N, d], y [M, d]: [N, M]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of MMD² between the distributions of rows x [m, d] and y [n, d] with the
    polynomial kernel (the diagonal terms k(x_i, x_i) left out)."""
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def kernel_inception_distance(features1: np.ndarray | torch.Tensor, features2: np.ndarray | torch.Tensor,
                              num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
                              ) -> tuple[float, float]:
    """KID: the mean and std over num_subsets random subsets (without replacement within a subset) of
    subset_size rows from each set of the unbiased MMD² (`mmd2_unbiased`). The subset size is capped at the
    smaller set's size."""
    x, y = _as_float64(features1), _as_float64(features2)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(x[rng.choice(len(x), size, replace=False)],
                            y[rng.choice(len(y), size, replace=False)]) for _ in range(num_subsets)]
    return float(np.mean(values)), float(np.std(values))


def inception_score(probabilities: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS: exp(E_x KL(p(y|x) ‖ p(y))) in each of `splits` consecutive parts of probabilities [N, C], mean and
    std over the parts (Salimans et al. 2016)."""
    p = _as_float64(probabilities)
    if p.ndim != 2 or (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-6):
        raise ValueError("probabilities must be [N, C] rows of class probabilities")
    if len(p) < splits:
        raise ValueError(f"{len(p)} rows cannot make {splits} splits")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = np.where(part > 0, part * (np.log(np.where(part > 0, part, 1.0)) - np.log(marginal)), 0.0)
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def unit_directions(num: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """num random unit vectors [num, dim], seeded: the projections of `sliced_w2`."""
    d = torch.randn(num, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return d / d.norm(dim=1, keepdim=True)


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """Sliced Wasserstein-2 distance between equal-size point sets a, b [B, D] along unit directions
    [P, D]: the root mean square over directions of the 1-D W2 of the projections (sorted and paired).
    A toy metric: for low-dimensional samples against exact ones."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_w2 pairs equal-size sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    pa, _ = torch.sort(a @ directions.T, dim=0)
    pb, _ = torch.sort(b @ directions.T, dim=0)
    return (pa - pb).pow(2).mean().sqrt().item()


def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)
