"""The DDPM U-Net (Ho et al. 2020) as the original score_sde builds it, with its residual, attention and
resampling blocks.

Parameter names and order follow the original PyTorch port (a flat `all_modules` list; `GroupNorm_0`,
`Conv_0`, `Dense_0`, `NIN_0`, ... inside the blocks), so its published checkpoints load with `strict=True`
after only the `module.` prefix is stripped.
"""
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from score_sde.models.layers import (
    NIN,
    add_class_embedding,
    class_embedding,
    conv3x3,
    ddpm_conv,
    dense,
    geometric_sigmas,
    get_act,
    timestep_embedding,
)
from score_sde.sde import expand_to


def group_norm(channels: int) -> nn.GroupNorm:
    """DDPM's normalisation: always 32 groups (NCSN++ uses min(C // 4, 32) instead), eps 1e-6 as in the TF
    original."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6)


class ResnetBlockDDPM(nn.Module):
    """Pre-activation residual block: GroupNorm, act, 3x3 conv, + Dense(act(temb)) as a per-channel bias,
    GroupNorm, act, dropout, 3x3 conv (zero-initialised), plus a shortcut that matches the channels."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 conv_shortcut: bool = False, dropout: float = 0.1):
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        self.act = act
        # Attribute order fixes the state_dict order of the original.
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:  # unconditional models have no time embedding to project
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=0.0)  # the block starts as the identity
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.in_ch, self.out_ch, self.conv_shortcut = in_ch, out_ch, conv_shortcut

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, in_ch, H, W], temb: [B, temb_dim] or None -> [B, out_ch, H, W]."""
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1 (NIN) projections and a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)  # query
        self.NIN_1 = NIN(channels, channels)  # key
        self.NIN_2 = NIN(channels, channels)  # value
        self.NIN_3 = NIN(channels, channels, init_scale=0.0)  # output; zero init: starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        h = self.GroupNorm_0(x)
        # [B, C, H, W] -> [B, H*W, C]: one token per pixel, softmax(q kᵀ / √C) v.
        q, k, v = (nin(h).flatten(2).transpose(1, 2) for nin in (self.NIN_0, self.NIN_1, self.NIN_2))
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(1, 2).reshape(x.shape)
        return x + self.NIN_3(h)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool = False):
        super().__init__()
        if with_conv:
            self.Conv_0 = conv3x3(channels, channels)
        self.with_conv = with_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, 2H, 2W]."""
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """x2 downsampling: a stride-2 3x3 conv, or 2x2 average pooling without conv."""

    def __init__(self, channels: int, with_conv: bool = False):
        super().__init__()
        if with_conv:
            self.Conv_0 = ddpm_conv(channels, channels, 3, stride=2, padding=0)  # padded in forward
        self.with_conv = with_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H/2, W/2]."""
        if not self.with_conv:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        # TF's 'SAME' padding for a stride-2 3x3 conv on an even size pads right/bottom only.
        return self.Conv_0(F.pad(x, (0, 1, 0, 1)))


class DDPM(nn.Module):
    """The DDPM U-Net: a noise-prediction network eps(x, labels) for images [B, C, H, W].

    `labels` are the noise-conditioning inputs [B]: integer DDPM timesteps (discrete VP) or floats such as
    999·t (continuous VP/sub-VP); both are embedded sinusoidally. The output has x's shape and dtype.

    With num_classes > 0 the network is also class-conditional: a learned embedding of the class labels
    (num_classes + 1 rows, the last the null class) is added to the time embedding (which needs
    conditional=True). It is registered after `all_modules`, so unconditional state dicts are unchanged.
    """

    def __init__(self, image_size: int, num_channels: int = 3, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, resamp_with_conv: bool = True,
                 conditional: bool = True, centered: bool = True, scale_by_sigma: bool = False,
                 nonlinearity: str = "swish", sigma_min: float = 0.01, sigma_max: float = 50.0,
                 num_scales: int = 1000, num_classes: int = 0):
        super().__init__()
        if num_classes > 0 and not conditional:
            raise ValueError(f"num_classes={num_classes} needs conditional=True: the class embedding is "
                             "added to the time embedding, which an unconditional DDPM does not have")
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))  # first key
        self.act = get_act(nonlinearity)
        self.nf, self.num_res_blocks = nf, num_res_blocks
        self.conditional, self.centered, self.scale_by_sigma = conditional, centered, scale_by_sigma
        resolutions = [image_size // 2**level for level in range(len(ch_mult))]
        # Where attention goes is fixed here, so forward never inspects tensor sizes.
        self.attn_levels = tuple(res in attn_resolutions for res in resolutions)
        self.level_channels = [nf * mult for mult in ch_mult]
        self._block_kwargs = dict(act=self.act, temb_dim=4 * nf if conditional else None, dropout=dropout)
        self.resamp_with_conv = resamp_with_conv

        modules = [dense(nf, 4 * nf), dense(4 * nf, 4 * nf)] if conditional else []
        modules.append(conv3x3(num_channels, nf))
        skip_channels = [nf]
        modules += self._down_modules(skip_channels)
        modules += self._middle_modules(skip_channels[-1])
        modules += self._up_modules(skip_channels)
        modules += [group_norm(nf * ch_mult[0]), conv3x3(nf * ch_mult[0], num_channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)
        self.num_classes = num_classes
        self.class_embed = class_embedding(num_classes, 4 * nf)  # last: original checkpoints keep their keys

    def _down_modules(self, skip_channels: list[int]) -> list[nn.Module]:
        """Encoder blocks per level; appends the channel count of every skip activation they produce."""
        modules, in_ch = [], skip_channels[-1]
        for level, out_ch in enumerate(self.level_channels):
            for _ in range(self.num_res_blocks):
                modules.append(ResnetBlockDDPM(in_ch=in_ch, out_ch=out_ch, **self._block_kwargs))
                in_ch = out_ch
                if self.attn_levels[level]:
                    modules.append(AttnBlock(in_ch))
                skip_channels.append(in_ch)
            if level != len(self.level_channels) - 1:
                modules.append(Downsample(in_ch, with_conv=self.resamp_with_conv))
                skip_channels.append(in_ch)
        return modules

    def _middle_modules(self, channels: int) -> list[nn.Module]:
        """ResNet, attention, ResNet at the lowest resolution."""
        return [ResnetBlockDDPM(in_ch=channels, **self._block_kwargs), AttnBlock(channels),
                ResnetBlockDDPM(in_ch=channels, **self._block_kwargs)]

    def _up_modules(self, skip_channels: list[int]) -> list[nn.Module]:
        """Decoder blocks per level, each consuming one skip activation (popped from skip_channels)."""
        modules, in_ch = [], skip_channels[-1]
        for level in reversed(range(len(self.level_channels))):
            out_ch = self.level_channels[level]
            # One block more than the encoder per level: the encoder also left the output of its
            # Downsample (at level 0: of the input conv) on the skip stack.
            for _ in range(self.num_res_blocks + 1):
                in_ch += skip_channels.pop()
                modules.append(ResnetBlockDDPM(in_ch=in_ch, out_ch=out_ch, **self._block_kwargs))
                in_ch = out_ch
            if self.attn_levels[level]:
                modules.append(AttnBlock(in_ch))
            if level != 0:
                modules.append(Upsample(in_ch, with_conv=self.resamp_with_conv))
        return modules

    def forward(self, x: torch.Tensor, labels: torch.Tensor, class_labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x: [B, C, H, W]; labels: [B] integer timesteps or float labels; class_labels: [B] integers in
        [0, num_classes] (num_classes: the null class; None: the null class for all) -> [B, C, H, W] like x.

        The modules are consumed in the order the constructor appended them.
        """
        modules = iter(self.all_modules)
        temb = self._time_embedding(labels, modules, x.dtype) if self.conditional else None
        temb = add_class_embedding(temb, self.class_embed, class_labels)
        h = x if self.centered else 2 * x - 1  # the network works on [-1, 1]
        skips = [next(modules)(h)]
        self._down(skips, modules, temb)
        h = skips[-1]
        h = next(modules)(h, temb)
        h = next(modules)(h)
        h = next(modules)(h, temb)
        h = self._up(h, skips, modules, temb)
        h = self.act(next(modules)(h))
        h = next(modules)(h)
        if self.scale_by_sigma:
            # As in the original: sigmas[labels]; float labels are truncated to an index as NCSN++ does.
            h = h / expand_to(self.sigmas[labels.long()].to(h), h)
        return h

    def _time_embedding(self, labels: torch.Tensor, modules: Iterator[nn.Module], dtype: torch.dtype):
        """Sinusoidal embedding of the labels (in float32 like the original, then cast), then two dense layers
        with the activation between them; each res-block applies the activation again before its Dense_0."""
        temb = timestep_embedding(labels, self.nf).to(dtype)
        temb = next(modules)(temb)
        return next(modules)(self.act(temb))

    def _down(self, skips: list[torch.Tensor], modules: Iterator[nn.Module], temb: torch.Tensor | None):
        """Encoder: appends every skip activation to `skips`."""
        for level in range(len(self.level_channels)):
            for _ in range(self.num_res_blocks):
                h = next(modules)(skips[-1], temb)
                if self.attn_levels[level]:
                    h = next(modules)(h)
                skips.append(h)
            if level != len(self.level_channels) - 1:
                skips.append(next(modules)(skips[-1]))

    def _up(self, h: torch.Tensor, skips: list[torch.Tensor], modules: Iterator[nn.Module],
            temb: torch.Tensor | None) -> torch.Tensor:
        """Decoder: concatenates the skips in reverse order of creation."""
        for level in reversed(range(len(self.level_channels))):
            for _ in range(self.num_res_blocks + 1):
                h = next(modules)(torch.cat([h, skips.pop()], dim=1), temb)
            if self.attn_levels[level]:
                h = next(modules)(h)
            if level != 0:
                h = next(modules)(h)
        return h
