"""Toy data: 2-D point clouds spanning about ±5 (and a Gaussian mixture in any dimension), drawn on the
generator's device."""
import math

import torch

from score_sde.analytic import GaussianMixture, two_mode_mixture
from score_sde.registry import lookup
from score_sde.sde import expand_to


def toy_distribution(name: str, dim: int = 2) -> GaussianMixture | None:
    """The toy's exact distribution where it has one: for 'gaussian_mixture', 0.2·N(−5·1, I) + 0.8·N(5·1, I)
    in `dim` dimensions (the issue's test mixture); None for the toys without a closed-form density."""
    lookup(TOYS, name, "toy dataset")
    if name != "gaussian_mixture":
        return None
    return two_mode_mixture(dim)


def _gaussian_mixture(n, generator, device, dim):
    # The same draws, in the same order, as GaussianMixture.sample, but on the generator's device; the
    # component index is the point's class.
    mix = toy_distribution("gaussian_mixture", dim)
    k = torch.multinomial(mix.weights.to(device), n, replacement=True, generator=generator)
    z = torch.randn(n, dim, generator=generator, dtype=torch.float64, device=device)
    return mix.means.to(device)[k] + expand_to(mix.stds.to(device)[k], z) * z, k


def _checkerboard(n, generator, device, dim):
    # The 4×4 checkerboard of FFJORD (Grathwohl et al. 2019) on [-2, 2)², scaled by 2.5 to [-5, 5)².
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    x1 = torch.rand(n, **kw) * 4 - 2
    x2 = torch.rand(n, **kw) - 2 * torch.randint(0, 2, (n,), generator=generator, device=device)
    return 2.5 * torch.stack([x1, x2 + torch.floor(x1) % 2], dim=1), None


def _swiss_roll(n, generator, device, dim):
    # The 2-D swiss roll t·(cos t, sin t), t in [1.5π, 4.5π], scaled to radius 5, plus N(0, 0.1²) noise.
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, **kw))
    roll = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) * (5 / (4.5 * math.pi))
    return roll + 0.1 * torch.randn(n, 2, **kw), None


def _two_moons(n, generator, device, dim):
    # sklearn's make_moons (unit half circles), centred and scaled by 3 to about [-4.5, 4.5] × [-2.3, 2.3].
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    inner = torch.rand(n, generator=generator, device=device) < 0.5
    theta = math.pi * torch.rand(n, **kw)
    outer_xy = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    inner_xy = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    xy = torch.where(inner[:, None], inner_xy, outer_xy) + 0.05 * torch.randn(n, 2, **kw)
    return 3 * (xy - torch.tensor([0.5, 0.25], dtype=torch.float64, device=device)), None


# Each toy draws (points [n, dim] float64, class labels [n] or None for a toy without classes).
TOYS = {
    "gaussian_mixture": _gaussian_mixture,
    "checkerboard": _checkerboard,
    "swiss_roll": _swiss_roll,
    "two_moons": _two_moons,
}
TOY_CLASSES = {"gaussian_mixture": 2}  # the toys whose points carry a class: the mixture's component


def toy_batch(name: str, batch_size: int, generator: torch.Generator | None = None, dim: int = 2,
              dtype: torch.dtype | None = None, with_labels: bool = False
              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fresh points from a built-in toy distribution, drawn on the generator's device.

    Args:
        name: one of TOYS; batch_size: number of points B; generator: the source of randomness (its device is
            the output's); dim: dimension D, 2 except for 'gaussian_mixture'; dtype: default dtype if None;
            with_labels: also return each point's class (a toy of TOY_CLASSES; the same points either way).
    Returns:
        [B, D] points, about ±5 in each coordinate; with_labels, (points, int64 labels [B]).
    """
    sample_fn = lookup(TOYS, name, "toy dataset")
    if dim != 2 and name != "gaussian_mixture":
        raise ValueError(f"toy {name!r} is 2-D; got dim={dim} (only 'gaussian_mixture' takes any dim)")
    if with_labels and name not in TOY_CLASSES:
        raise ValueError(f"toy {name!r} has no classes; only {sorted(TOY_CLASSES)} carry labels")
    device = generator.device if generator is not None else torch.device("cpu")
    points, labels = sample_fn(batch_size, generator, device, dim)
    points = points.to(dtype or torch.get_default_dtype())
    return (points, labels) if with_labels else points

