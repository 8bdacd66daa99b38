"""NCSN++ and DDPM++ (Song et al. 2021, App. H): the U-Net of the original score_sde `models/ncsnpp.py`
with its blocks from `layerspp.py`.

Parameter names and order follow the original PyTorch code (a flat `all_modules` list; `GroupNorm_0`,
`Conv_0`, `Dense_0`, `NIN_0`, `Conv2d_0`, `W` inside the blocks), so its published checkpoints load with
`strict=True` once the DataParallel `module.` prefix is stripped. Option values that crash in the original
(`resblock_type='ddpm'`, `progressive='residual'`, non-FIR `progressive='output_skip'`) work here: they
use the nearest-neighbour upsampling and the StyleGAN2 fused upsampling conv that the original intended.
"""
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from score_sde.models.fir import Conv2d as FIRConv2d
from score_sde.models.fir import (
    downsample_2d,
    naive_downsample_2d,
    naive_upsample_2d,
    register_taps,
    upsample_2d,
)
from score_sde.models.layers import (
    NIN,
    add_class_embedding,
    class_embedding,
    conv1x1,
    conv3x3,
    ddpm_conv,
    dense,
    geometric_sigmas,
    get_act,
    timestep_embedding,
)
from score_sde.sde import expand_to


def group_norm(channels: int) -> nn.GroupNorm:
    """NCSN++'s normalisation: min(C // 4, 32) groups (DDPM always uses 32), eps 1e-6."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


def _choice(value: str, choices: Sequence[str], what: str) -> str:
    """value, lower-cased as the original does, or a ValueError listing the choices."""
    value = value.lower()
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(choices)}")
    return value


def _skip_sum(a: torch.Tensor, b: torch.Tensor, skip_rescale: bool) -> torch.Tensor:
    """a + b, divided by √2 with skip_rescale so that two unit-variance branches sum to unit variance."""
    return (a + b) / math.sqrt(2.0) if skip_rescale else a + b


class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin(2π·s·W), cos(2π·s·W)] of a scalar s per sample (Tancik et al. 2020).
    `W` ~ N(0, scale²) is a frozen parameter: saved with the model, never trained."""

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B] -> [B, 2 · embedding_size]."""
        x_proj = x[:, None] * self.W[None, :] * 2 * math.pi  # this product order, as the original rounds it
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)


class Combine(nn.Module):
    """Merges an input-pyramid image x into features y: a 1×1 conv of x, then concatenated or summed."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = _choice(method, ("cat", "sum"), "progressive_combine")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: [B, dim1, H, W], y: [B, dim2, H, W] -> [B, 2·dim2 (cat) or dim2 (sum), H, W]."""
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels with NIN (1×1) projections and a residual connection."""

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        h = self.GroupNorm_0(x)
        # [B, C, H, W] -> [B, H·W, C]: one token per pixel. SDPA computes softmax(q kᵀ / √C) v, the
        # softmax over the key pixels, in one fused kernel on a GPU instead of materialising the weights.
        q, k, v = (nin(h).flatten(2).transpose(1, 2) for nin in (self.NIN_0, self.NIN_1, self.NIN_2))
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(1, 2).reshape(x.shape)
        return _skip_sum(x, self.NIN_3(h), self.skip_rescale)


class Upsample(nn.Module):
    """Upsampling by 2: FIR (optionally fused with a 3×3 conv) or nearest neighbour (optionally followed by a
    3×3 conv)."""

    def __init__(self, in_ch: int | None = None, out_ch: int | None = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, kernel=3, up=True, resample_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        self.fir, self.with_conv, self.fir_kernel, self.out_ch = fir, with_conv, tuple(fir_kernel), out_ch
        if fir:
            register_taps(self, fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_ch, H, W] -> [B, out_ch, 2H, 2W]."""
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else upsample_2d(x, self.fir_taps)
        h = naive_upsample_2d(x)
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """Downsampling by 2: FIR (optionally fused with a 3×3 conv), or a stride-2 3×3 conv after padding the
    right and bottom by one (as TF's 'SAME'), or 2×2 average pooling."""

    def __init__(self, in_ch: int | None = None, out_ch: int | None = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, kernel=3, down=True, resample_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = ddpm_conv(in_ch, out_ch, 3, stride=2, padding=0)
        self.fir, self.with_conv, self.fir_kernel, self.out_ch = fir, with_conv, tuple(fir_kernel), out_ch
        if fir:
            register_taps(self, fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_ch, H, W] -> [B, out_ch, H/2, W/2]."""
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else downsample_2d(x, self.fir_taps)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return naive_downsample_2d(x)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM's residual block with NCSN++'s group count and optional √2 skip rescaling: GroupNorm, act, 3×3
    conv, + Dense(act(temb)) per channel, GroupNorm, act, dropout, 3×3 conv; NIN shortcut if C changes."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 dropout: float = 0.1, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        # Attribute order fixes the state_dict order of the original.
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.skip_rescale, self.in_ch, self.out_ch = act, skip_rescale, in_ch, out_ch

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, in_ch, H, W], temb: [B, temb_dim] or None -> [B, out_ch, H, W]."""
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[..., None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.NIN_0(x)
        return _skip_sum(x, h, self.skip_rescale)


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN's residual block, which can also resample by 2 (up or down: FIR or naive, applied to both the
    residual branch after its first activation and the shortcut); 1×1 conv shortcut when C or size changes."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1, fir: bool = False,
                 fir_kernel: Sequence[int] = (1, 3, 3, 1), skip_rescale: bool = True,
                 init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.up, self.down, self.fir, self.fir_kernel = act, up, down, fir, tuple(fir_kernel)
        if fir:
            register_taps(self, fir_kernel)
        self.skip_rescale, self.in_ch, self.out_ch = skip_rescale, in_ch, out_ch

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            if self.fir:
                return upsample_2d(x, self.fir_taps)
            return naive_upsample_2d(x)
        if self.down:
            if self.fir:
                return downsample_2d(x, self.fir_taps)
            return naive_downsample_2d(x)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, in_ch, H, W], temb: [B, temb_dim] or None -> [B, out_ch, H', W'] (H' = 2H, H/2 or H)."""
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[..., None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return _skip_sum(x, h, self.skip_rescale)


class NCSNpp(nn.Module):
    """The NCSN++ / DDPM++ U-Net: `model(x, labels)` with x [B, num_channels, H, W] and labels [B].

    labels are σ (embedding_type='fourier', which embeds log σ), or for 'positional' noise-level indices or
    float times (999·t for continuous VP), embedded as they are. With scale_by_sigma the output is divided
    by σ: the labels themselves (fourier) or the float64 `sigmas[labels.long()]` (positional, which makes
    the output float64, as in the original).

    The `all_modules` list holds every layer in the original's order; `forward` walks it with one iterator,
    in the same order as `__init__` built it. Attention sits at the levels whose construction-time
    resolution (image_size / 2^level) is in attn_resolutions.

    Args (named as the original's config.model / config.data knobs):
        resblock_type: 'biggan' (blocks that also resample) or 'ddpm' (separate Upsample / Downsample).
        progressive: output pyramid, 'none', 'output_skip' (an image predicted at every level, upsampled and
            summed) or 'residual' (a feature pyramid merged into the features).
        progressive_input: input pyramid, 'none', 'input_skip' (the downsampled image merged in by
            progressive_combine, 'sum' or 'cat') or 'residual' (a strided-conv feature pyramid).
        fir, fir_kernel: resample with this FIR kernel instead of nearest neighbour / box filtering.
        skip_rescale: divide every residual sum by √2. init_scale: scale of the last layer of each block.
        centered: inputs already in [-1, 1]; otherwise x in [0, 1] is mapped to 2x − 1 first.
        conv_size: accepted for config compatibility; only 3 (the original ignores it).
        sigma_min, sigma_max, num_scales: the geometric `sigmas` buffer.
        num_classes: 0 (no class conditioning), or the number of classes of a class-conditional
            network: a learned embedding of the class labels (num_classes + 1 rows, the last the null class)
            is added to temb (needs conditional=True). Registered after `all_modules`, so unconditional
            state dicts keep the original's keys.
    """

    def __init__(self, image_size: int = 32, num_channels: int = 3, centered: bool = False, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, resamp_with_conv: bool = True,
                 conditional: bool = True, fir: bool = True, fir_kernel: Sequence[int] = (1, 3, 3, 1),
                 skip_rescale: bool = True, resblock_type: str = "biggan", progressive: str = "none",
                 progressive_input: str = "residual", progressive_combine: str = "sum",
                 embedding_type: str = "fourier", fourier_scale: float = 16.0, init_scale: float = 0.0,
                 scale_by_sigma: bool = True, nonlinearity: str = "swish", conv_size: int = 3,
                 sigma_min: float = 0.01, sigma_max: float = 50.0, num_scales: int = 1000,
                 num_classes: int = 0):
        super().__init__()
        if num_classes > 0 and not conditional:
            raise ValueError(f"num_classes={num_classes} needs conditional=True: the class embedding is "
                             "added to the time embedding, which an unconditional NCSN++ does not have")
        if conv_size != 3:  # the original reads conv_size nowhere: its convolutions are all 3×3 (or 1×1)
            raise ValueError(f"NCSN++ supports conv_size 3 only, got {conv_size}")
        self.act = get_act(nonlinearity)
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))
        self.nf, self.ch_mult, self.num_res_blocks = nf, tuple(ch_mult), num_res_blocks
        self.attn_resolutions, self.num_resolutions = tuple(attn_resolutions), len(ch_mult)
        self.all_resolutions = [image_size // 2**i for i in range(self.num_resolutions)]
        self.conditional, self.skip_rescale, self.centered = conditional, skip_rescale, centered
        self.scale_by_sigma, self.num_channels = scale_by_sigma, num_channels
        self.resblock_type = _choice(resblock_type, ("ddpm", "biggan"), "resblock_type")
        self.progressive = _choice(progressive, ("none", "output_skip", "residual"), "progressive")
        self.progressive_input = _choice(progressive_input, ("none", "input_skip", "residual"),
                                         "progressive_input")
        self.progressive_combine = _choice(progressive_combine, ("sum", "cat"), "progressive_combine")
        self.embedding_type = _choice(embedding_type, ("fourier", "positional"), "embedding_type")
        self.fir, self.fir_kernel, self.resamp_with_conv = fir, tuple(fir_kernel), resamp_with_conv
        self.dropout, self.init_scale, self.fourier_scale = dropout, init_scale, fourier_scale
        # Parameter-free resamplers of the image pyramids, registered before all_modules as in the original.
        if self.progressive == "output_skip":
            self.pyramid_upsample = Upsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)
        if self.progressive_input == "input_skip":
            self.pyramid_downsample = Downsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)

        modules = self._build_embedding()
        hs_c = self._build_down(modules)
        self._build_middle(modules, hs_c[-1])
        in_ch = self._build_up(modules, hs_c)
        if self.progressive != "output_skip":
            modules += [group_norm(in_ch), conv3x3(in_ch, num_channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(modules)
        self.num_classes = num_classes
        self.class_embed = class_embedding(num_classes, 4 * nf)  # last: original checkpoints keep their keys

    # ---- construction: each _build_* appends the layers its forward counterpart consumes ----

    def _attn_at(self, i_level: int) -> bool:
        return self.all_resolutions[i_level] in self.attn_resolutions

    def _resnet_block(self, in_ch: int, out_ch: int | None = None, up: bool = False, down: bool = False):
        common = dict(act=self.act, in_ch=in_ch, out_ch=out_ch, temb_dim=4 * self.nf, dropout=self.dropout,
                      skip_rescale=self.skip_rescale, init_scale=self.init_scale)
        if self.resblock_type == "ddpm":
            return ResnetBlockDDPMpp(**common)
        return ResnetBlockBigGANpp(**common, up=up, down=down, fir=self.fir, fir_kernel=self.fir_kernel)

    def _attn_block(self, channels: int) -> AttnBlockpp:
        return AttnBlockpp(channels, skip_rescale=self.skip_rescale, init_scale=self.init_scale)

    def _resample_block(self, in_ch: int, up: bool) -> nn.Module:
        """Between levels: a separate resampler for DDPM blocks, a resampling residual block for BigGAN."""
        if self.resblock_type == "biggan":
            return self._resnet_block(in_ch, up=up, down=not up)
        resampler = Upsample if up else Downsample
        return resampler(in_ch=in_ch, with_conv=self.resamp_with_conv, fir=self.fir,
                         fir_kernel=self.fir_kernel)

    def _build_embedding(self) -> list:
        modules, embed_dim = [], self.nf
        if self.embedding_type == "fourier":
            modules.append(GaussianFourierProjection(embedding_size=self.nf, scale=self.fourier_scale))
            embed_dim = 2 * self.nf
        if self.conditional:
            modules += [dense(embed_dim, 4 * self.nf), dense(4 * self.nf, 4 * self.nf)]
        return modules

    def _build_down(self, modules: list) -> list[int]:
        """Appends the input conv and the downsampling levels; returns the channels of every skip."""
        in_ch = self.nf
        modules.append(conv3x3(self.num_channels, in_ch))
        hs_c, pyramid_ch = [in_ch], self.num_channels
        for i_level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                modules.append(self._resnet_block(in_ch, self.nf * mult))
                in_ch = self.nf * mult
                if self._attn_at(i_level):
                    modules.append(self._attn_block(in_ch))
                hs_c.append(in_ch)
            if i_level != self.num_resolutions - 1:
                modules.append(self._resample_block(in_ch, up=False))
                if self.progressive_input == "input_skip":
                    modules.append(Combine(dim1=pyramid_ch, dim2=in_ch, method=self.progressive_combine))
                    in_ch *= 2 if self.progressive_combine == "cat" else 1
                elif self.progressive_input == "residual":
                    modules.append(Downsample(in_ch=pyramid_ch, out_ch=in_ch, with_conv=True, fir=self.fir,
                                              fir_kernel=self.fir_kernel))
                    pyramid_ch = in_ch
                hs_c.append(in_ch)
        return hs_c

    def _build_middle(self, modules: list, in_ch: int) -> None:
        modules += [self._resnet_block(in_ch), self._attn_block(in_ch), self._resnet_block(in_ch)]

    def _build_up(self, modules: list, hs_c: list[int]) -> int:
        """Appends the upsampling levels (consuming the skip channels hs_c); returns the final channels."""
        in_ch, pyramid_ch = hs_c[-1], 0
        for i_level in reversed(range(self.num_resolutions)):
            out_ch = self.nf * self.ch_mult[i_level]
            for _ in range(self.num_res_blocks + 1):
                modules.append(self._resnet_block(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if self._attn_at(i_level):
                modules.append(self._attn_block(in_ch))
            if self.progressive == "output_skip":
                modules += [group_norm(in_ch), conv3x3(in_ch, self.num_channels, init_scale=self.init_scale)]
            elif self.progressive == "residual" and i_level == self.num_resolutions - 1:
                modules += [group_norm(in_ch), conv3x3(in_ch, in_ch)]
                pyramid_ch = in_ch
            elif self.progressive == "residual":
                modules.append(Upsample(in_ch=pyramid_ch, out_ch=in_ch, with_conv=True, fir=self.fir,
                                        fir_kernel=self.fir_kernel))
                pyramid_ch = in_ch
            if i_level != 0:
                modules.append(self._resample_block(in_ch, up=True))
        return in_ch

    # ---- forward: each step consumes its layers from the shared iterator, in construction order ----

    def forward(self, x: torch.Tensor, labels: torch.Tensor, class_labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x: [B, num_channels, H, W], labels: [B], class_labels: [B] integers in [0, num_classes]
        (num_classes, or None for all: the null class) -> [B, num_channels, H, W] (see the class
        docstring)."""
        modules = iter(self.all_modules)
        temb = self._embed(modules, labels, x.dtype)
        temb = add_class_embedding(temb, self.class_embed, class_labels)
        if not self.centered:
            x = 2 * x - 1.0  # data in [0, 1] -> [-1, 1]
        hs = self._down(modules, x, temb)
        h = self._middle(modules, hs[-1], temb)
        h, pyramid = self._up(modules, h, hs, temb)
        if self.progressive == "output_skip":
            h = pyramid
        else:
            norm, conv = next(modules), next(modules)
            h = conv(self.act(norm(h)))
        if self.scale_by_sigma:
            used_sigmas = labels if self.embedding_type == "fourier" else self.sigmas[labels.long()]
            h = h / expand_to(used_sigmas, h)
        return h

    def _embed(self, modules: Iterator[nn.Module], labels: torch.Tensor, dtype: torch.dtype):
        """The conditioning vector temb [B, 4·nf], or None for an unconditional model."""
        if self.embedding_type == "fourier":
            temb = next(modules)(torch.log(labels))
        else:
            temb = timestep_embedding(labels, self.nf).to(dtype)  # float32 sin/cos, as the original
        if not self.conditional:
            return None
        temb = next(modules)(temb)
        return next(modules)(self.act(temb))

    def _resample(self, module: nn.Module, h: torch.Tensor, temb) -> torch.Tensor:
        return module(h) if self.resblock_type == "ddpm" else module(h, temb)

    def _down(self, modules: Iterator[nn.Module], x: torch.Tensor, temb) -> list[torch.Tensor]:
        """The downsampling path; returns every skip activation, the input conv's first."""
        pyramid = x
        hs = [next(modules)(x)]
        for i_level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(modules)(hs[-1], temb)
                if self._attn_at(i_level):
                    h = next(modules)(h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                h = self._resample(next(modules), hs[-1], temb)
                if self.progressive_input == "input_skip":
                    pyramid = self.pyramid_downsample(pyramid)
                    h = next(modules)(pyramid, h)
                elif self.progressive_input == "residual":
                    pyramid = _skip_sum(next(modules)(pyramid), h, self.skip_rescale)
                    h = pyramid
                hs.append(h)
        return hs

    def _middle(self, modules: Iterator[nn.Module], h: torch.Tensor, temb) -> torch.Tensor:
        h = next(modules)(h, temb)
        h = next(modules)(h)
        return next(modules)(h, temb)

    def _up(self, modules: Iterator[nn.Module], h: torch.Tensor, hs: list[torch.Tensor], temb):
        """The upsampling path, consuming the skips hs; returns the features and the output pyramid."""
        pyramid = None
        for i_level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(modules)(torch.cat([h, hs.pop()], dim=1), temb)
            if self._attn_at(i_level):
                h = next(modules)(h)
            if self.progressive != "none":
                h, pyramid = self._pyramid_step(modules, h, pyramid, top=i_level == self.num_resolutions - 1)
            if i_level != 0:
                h = self._resample(next(modules), h, temb)
        return h, pyramid

    def _pyramid_step(self, modules: Iterator[nn.Module], h: torch.Tensor, pyramid, top: bool):
        """One level of the output pyramid: output_skip sums an image predicted at every level;
        residual carries a feature pyramid that is merged into h below the top level."""
        if self.progressive == "output_skip" or top:
            norm, conv = next(modules), next(modules)
            level_out = conv(self.act(norm(h)))
            if self.progressive == "output_skip" and not top:
                return h, self.pyramid_upsample(pyramid) + level_out
            return h, level_out
        pyramid = _skip_sum(next(modules)(pyramid), h, self.skip_rescale)
        return pyramid, pyramid
