"""From [0, 1] images to model space: the data scalers, and the flip and dequantization drawn on the way."""
from collections.abc import Callable

import torch

from score_sde.distributed import ONE_PROCESS, Shard
from score_sde.sde import expand_to

# Scalers: [0, 1] data <-> model space, as the original's get_data_scaler / get_data_inverse_scaler.


def get_data_scaler(centered: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """x in [0, 1] -> 2x − 1 in [-1, 1] if centered, else x unchanged."""
    return (lambda x: x * 2.0 - 1.0) if centered else (lambda x: x)


def get_data_inverse_scaler(centered: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The inverse of get_data_scaler(centered): model space -> [0, 1]."""
    return (lambda x: (x + 1.0) / 2.0) if centered else (lambda x: x)


# Batch-level augmentation, on the batch's device.


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard = ONE_PROCESS
                ) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2.

    Args:
        x: [B, ..., W] images, this rank's shard of a global batch; generator: on x's device, in the same
            state on every rank (the coins are tossed for the global batch, each rank keeps its own).
    Returns:
        [B, ..., W], each sample either x[i] or x[i] mirrored along the last axis.
    """
    coins = torch.rand(shard.global_size(x.shape[0]), generator=generator, device=x.device)
    flip = shard.of(coins) < 0.5
    return torch.where(expand_to(flip, x), x.flip(-1), x)


def uniform_dequantize(x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard = ONE_PROCESS
                       ) -> torch.Tensor:
    """(255·x + u) / 256 with u ~ U[0, 1) per pixel, the original's uniform dequantization.

    Args:
        x: [B, ...] 8-bit images scaled to [0, 1] (values k / 255), this rank's shard of a global batch;
            generator: on x's device, in the same state on every rank (as random_flip).
    Returns:
        [B, ...] in [0, 1): pixel k becomes uniform on [k / 256, (k + 1) / 256).
    """
    shape = (shard.global_size(x.shape[0]), *x.shape[1:])
    u = shard.of(torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype))
    k = torch.round(x * 255.0)
    # k + u rounds up to k + 1 when u is within an ulp of 1 (float32: about one pixel in 2¹⁶), which would
    # put the pixel on the next bin's edge: keep it below. Dividing by 256 is exact.
    return torch.minimum(k + u, torch.nextafter(k + 1, k)) / 256.0


def augment(x: torch.Tensor, generator: torch.Generator | None, flip: bool, dequantize: bool,
            centered: bool, shard: Shard = ONE_PROCESS) -> torch.Tensor:
    """[0, 1] images [B, C, H, W] -> model space: optional flip, then dequantization, then the data scaler."""
    if flip:
        x = random_flip(x, generator, shard)
    if dequantize:
        x = uniform_dequantize(x, generator, shard)
    return get_data_scaler(centered)(x)
