"""Resampling image batches by an integer factor, as NCSN++ does it (the original's `up_or_down_sampling.py`).

FIR filtering follows StyleGAN2's TensorFlow ops, in pure PyTorch: `upfirdn2d` is zero insertion, padding
and a true convolution with the kernel; `upsample_conv_2d` / `conv_downsample_2d` fuse it with a 3×3 conv.
The naive versions are nearest-neighbour and box filtering. Kernels are given as sequences of taps (1-D,
made separable by an outer product, or 2-D) and normalised to sum to one.
"""
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from score_sde.models.layers import variance_scaling_

# FIR taps: a 1-D sequence (made separable), a square 2-D one, or either as a tensor.
Taps = Sequence[float] | Sequence[Sequence[float]] | torch.Tensor


def setup_kernel(k: Taps) -> torch.Tensor:
    """The 2-D FIR kernel for taps `k` (1-D: outer product with itself; 2-D: as given), normalised to sum
    to 1, in float64: on the CPU for a sequence, on k's device for a tensor (see `register_taps`). For
    integer taps its float32 rounding equals the original's numpy one."""
    k = torch.as_tensor(k, dtype=torch.float64, device=k.device if torch.is_tensor(k) else "cpu")
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {tuple(k.shape)}")
    return k / k.sum()


def register_taps(module: nn.Module, k: Taps) -> None:
    """Keep the taps k on `module` as the buffer `fir_taps` (float32, exact for integer taps; not saved in
    state dicts), so that they move with the network: a kernel made from a Python sequence in forward would
    be copied from the host at every call, which on a GPU waits for the device."""
    module.register_buffer("fir_taps", torch.tensor(k, dtype=torch.float32), persistent=False)


def _kernel_like(k, x: torch.Tensor, scale: float) -> torch.Tensor:
    return (setup_kernel(k) * scale).to(x.dtype).to(x.device)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample, FIR-filter, downsample each channel of an image batch.

    Inserts up − 1 zeros after every sample, pads both spatial axes by pad[0] before and pad[1] after
    (a negative pad crops), convolves with `kernel` (a true convolution: the kernel is flipped) over the
    valid region, and keeps every down-th sample starting from the first.

    Args:
        x: [B, C, H, W].
        kernel: [kh, kw], any dtype (cast to x's).
    Returns:
        [B, C, (H·up + pad[0] + pad[1] − kh) // down + 1, (W·up + pad[0] + pad[1] − kw) // down + 1].
    """
    channels = x.shape[1]
    if up > 1:
        h = x.new_zeros(x.shape[0], channels, x.shape[2] * up, x.shape[3] * up)
        h[:, :, ::up, ::up] = x
        x = h
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    # One filter per channel (groups=C) rather than folding C into the batch: no reshape of x, whose strides
    # torch.compile can mispredict after a transposed convolution.
    weight = kernel.flip([0, 1]).to(x).expand(channels, 1, *kernel.shape).contiguous()
    return F.conv2d(x, weight, stride=down, groups=channels)  # stride: every down-th output of the filter


def upsample_2d(x: torch.Tensor, k: Taps | None = None, factor: int = 2, gain: float = 1) -> torch.Tensor:
    """FIR upsampling: [B, C, H, W] -> [B, C, H·factor, W·factor]. The kernel is scaled by factor² so a
    constant image keeps its value (times `gain`) away from the borders. k defaults to [1] * factor
    (nearest neighbour)."""
    k = [1] * factor if k is None else k
    kernel = _kernel_like(k, x, gain * factor**2)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Taps | None = None, factor: int = 2, gain: float = 1) -> torch.Tensor:
    """FIR downsampling: [B, C, H, W] -> [B, C, H // factor, W // factor] (for H, W divisible by factor).
    k defaults to [1] * factor (box filter = average pooling)."""
    k = [1] * factor if k is None else k
    kernel = _kernel_like(k, x, gain)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Taps | None = None, factor: int = 2,
                     gain: float = 1) -> torch.Tensor:
    """Fused FIR upsampling and convolution: [B, C_in, H, W] -> [B, C_out, H·factor, W·factor].

    As StyleGAN2's `upsample_conv_2d`: a transposed convolution with stride `factor` (zero insertion, then
    a full correlation with w), then FIR filtering with padding chosen so the output is exactly factor
    times larger. Away from the borders it equals conv2d(upsample_2d(x, k), w, padding=K // 2).

    Args:
        w: [C_out, C_in, K, K], the weight of an ordinary (correlating) conv2d.
    """
    conv_size = w.shape[-1]
    if w.shape[-2] != conv_size:
        raise ValueError(f"upsample_conv_2d needs a square conv kernel, got {tuple(w.shape)}")
    k = [1] * factor if k is None else k
    kernel = _kernel_like(k, x, gain * factor**2)
    p = (kernel.shape[0] - factor) - (conv_size - 1)
    # conv_transpose2d is the adjoint of a correlation, so the flipped, in/out-swapped weight makes it a
    # correlation with w of the zero-inserted input (TF's conv2d_transpose with the original's weight flip).
    h = F.conv_transpose2d(x, w.flip([2, 3]).transpose(0, 1), stride=factor)
    return upfirdn2d(h, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Taps | None = None, factor: int = 2,
                       gain: float = 1) -> torch.Tensor:
    """Fused convolution and FIR downsampling: [B, C_in, H, W] -> [B, C_out, H // factor, W // factor]:
    FIR filtering with padding, then a stride-`factor` conv2d with w [C_out, C_in, K, K]. Away from the
    borders it equals downsample_2d(conv2d(x, w, padding=K // 2), k)."""
    conv_size = w.shape[-1]
    k = [1] * factor if k is None else k
    kernel = _kernel_like(k, x, gain)
    p = (kernel.shape[0] - factor) + (conv_size - 1)
    h = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(h, w, stride=factor)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling: every pixel becomes a factor × factor block."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Box downsampling: the mean of every factor × factor block."""
    return F.avg_pool2d(x, factor, stride=factor)


class Conv2d(nn.Module):
    """A square conv2d with 'same' padding that can fuse FIR upsampling (up=True) or downsampling
    (down=True) by 2. Parameters `weight` [out_ch, in_ch, kernel, kernel] and `bias` [out_ch], named as in
    the original so checkpoints load as they are."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, up: bool = False, down: bool = False,
                 resample_kernel: Sequence[int] = (1, 3, 3, 1), use_bias: bool = True,
                 init_scale: float = 1.0):
        super().__init__()
        if up and down:
            raise ValueError("Conv2d: up and down cannot both be set")
        if kernel < 1 or kernel % 2 != 1:
            raise ValueError(f"Conv2d: kernel must be odd and positive, got {kernel}")
        self.weight = nn.Parameter(variance_scaling_(torch.empty(out_ch, in_ch, kernel, kernel), init_scale))
        if use_bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up, self.down, self.kernel, self.use_bias = up, down, kernel, use_bias
        self.resample_kernel = tuple(resample_kernel)
        register_taps(self, resample_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_ch, H, W] -> [B, out_ch, H', W'] with H' = 2H (up), H / 2 (down) or H."""
        if self.up:
            h = upsample_conv_2d(x, self.weight, k=self.fir_taps)
        elif self.down:
            h = conv_downsample_2d(x, self.weight, k=self.fir_taps)
        else:
            h = F.conv2d(x, self.weight, padding=self.kernel // 2)
        if self.use_bias:
            h = h + self.bias[:, None, None]
        return h
