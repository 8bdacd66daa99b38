"""NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020): RefineNet score networks with InstanceNorm++.

Module names, parameter shapes and registration order follow the original score_sde code, so its state
dicts load with strict=True. Where that code crashes as published, the behaviour is the one its fixtures
record (see ../shared/fixtures/reference_models/README.md, "Caveats"): dilated 3×3 convs are padded by
their dilation, and NCSN v1 uses a conditional InstanceNorm++ with one row per noise level everywhere.
"""
import itertools
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from score_sde.models.layers import geometric_sigmas, get_act
from score_sde.sde import expand_to


def ncsn_conv3x3(in_planes: int, out_planes: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    """3×3 conv with PyTorch's default init (as NCSN/NCSNv2) and 'same' padding, also when dilated: the
    reference pads dilated convs by 1 and then cannot add its residual branches."""
    return nn.Conv2d(in_planes, out_planes, 3, padding=dilation, dilation=dilation, bias=bias)


def ncsn_conv1x1(in_planes: int, out_planes: int, bias: bool = True) -> nn.Conv2d:
    """1×1 conv with PyTorch's default init."""
    return nn.Conv2d(in_planes, out_planes, 1, bias=bias)


# ---- InstanceNorm++ (Song & Ermon 2019, App. A) ----


def instance_norm_plus(x: torch.Tensor, instance_norm: nn.Module, gamma: torch.Tensor, alpha: torch.Tensor,
                       beta: torch.Tensor | None = None) -> torch.Tensor:
    """gamma·(IN(x) + alpha·m̃) + beta, where m̃ are the channel means of x standardised across channels:
    plain instance norm would discard the relative brightness of the channels, this keeps it.

    Args:
        x: [B, C, H, W]; instance_norm: the parameter-free nn.InstanceNorm2d to apply.
        gamma, alpha, beta: [C] (shared) or [B, C] (per sample); beta may be None.
    """
    means = x.mean(dim=(2, 3))
    # torch.var is unbiased here, as in the original PyTorch code (the JAX one divides by C).
    means = (means - means.mean(dim=-1, keepdim=True)) / torch.sqrt(means.var(dim=-1, keepdim=True) + 1e-5)
    h = instance_norm(x) + means[..., None, None] * alpha[..., None, None]
    out = gamma[..., None, None] * h
    return out if beta is None else out + beta[..., None, None]


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ with learned per-channel alpha, gamma (init N(1, 0.02)) and beta (init 0)."""

    def __init__(self, num_features: int, bias: bool = True):
        super().__init__()
        self.num_features, self.bias = num_features, bias
        self.instance_norm = nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        if bias:
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, H, W]. y is ignored: taking it lets every norm here be called as norm(x, y)."""
        beta = self.beta if self.bias else None
        return instance_norm_plus(x, self.instance_norm, self.gamma, self.alpha, beta)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ whose gamma, alpha, beta are rows of a table indexed by the noise level (NCSN v1)."""

    def __init__(self, num_features: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.num_features, self.bias = num_features, bias
        self.instance_norm = nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
        # One row [gamma | alpha | beta] per noise level: scales start at N(1, 0.02), offsets at 0.
        self.embed = nn.Embedding(num_classes, (3 if bias else 2) * num_features)
        with torch.no_grad():
            self.embed.weight[:, :2 * num_features].normal_(1.0, 0.02)
            self.embed.weight[:, 2 * num_features:].zero_()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W]; y: [B] integer noise-level indices."""
        gamma, alpha, *beta = self.embed(y).chunk(3 if self.bias else 2, dim=-1)
        return instance_norm_plus(x, self.instance_norm, gamma, alpha, *beta)


def _norm(num_features, num_classes):
    """InstanceNorm++, conditional on the noise level when num_classes is given (NCSN v1)."""
    if num_classes is None:
        return InstanceNorm2dPlus(num_features)
    return ConditionalInstanceNorm2dPlus(num_features, num_classes)


# ---- residual blocks of the encoder ----


class ConvMeanPool(nn.Module):
    """A 'same' conv, then 2×2 average pooling written as the mean of the four pixel phases."""

    def __init__(self, input_dim: int, output_dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(input_dim, output_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        # The reference's summation order, so float rounding matches it.
        return (h[:, :, ::2, ::2] + h[:, :, 1::2, ::2] + h[:, :, ::2, 1::2] + h[:, :, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))), with a learned shortcut when
    the width changes or resample='down'. Dilated blocks never change the resolution: there 'down' only
    means a learned shortcut (the original NCSNv2 widens the receptive field instead of pooling)."""

    def __init__(self, input_dim: int, output_dim: int, resample: str | None = None,
                 act: nn.Module | None = None, dilation: int = 1, num_classes: int | None = None):
        super().__init__()
        if resample not in (None, "down"):
            raise ValueError(f"unknown resample {resample!r}; expected None or 'down'")
        self.input_dim, self.output_dim, self.resample = input_dim, output_dim, resample
        self.non_linearity = nn.ELU() if act is None else act
        mid = input_dim if resample == "down" else output_dim
        pooled = resample == "down" and dilation == 1
        # Registration order conv1, normalize2, conv2, shortcut, normalize1: the reference's state-dict order.
        self.conv1 = ncsn_conv3x3(input_dim, mid, dilation=dilation)
        self.normalize2 = _norm(mid, num_classes)
        if pooled:
            self.conv2 = ConvMeanPool(mid, output_dim)
        else:
            self.conv2 = ncsn_conv3x3(mid, output_dim, dilation=dilation)
        self.shortcut = None
        if output_dim != input_dim or resample is not None:
            self.shortcut = self._shortcut(input_dim, output_dim, pooled, dilation)
        self.normalize1 = _norm(input_dim, num_classes)

    @staticmethod
    def _shortcut(input_dim, output_dim, pooled, dilation):
        if pooled:
            return ConvMeanPool(input_dim, output_dim, kernel_size=1)
        if dilation > 1:
            return ncsn_conv3x3(input_dim, output_dim, dilation=dilation)
        return ncsn_conv1x1(input_dim, output_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, input_dim, H, W]; y: [B] noise-level indices (used by conditional norms only)."""
        h = self.conv1(self.non_linearity(self.normalize1(x, y)))
        h = self.conv2(self.non_linearity(self.normalize2(h, y)))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class ConditionalResidualBlock(ResidualBlock):
    """NCSN v1's residual block: ResidualBlock with conditional InstanceNorm++ (num_classes noise levels),
    under the reference's class name (as the Cond* blocks below) so the module tree reads the same."""


# ---- RefineNet blocks of the decoder (Lin et al. 2017) ----


class RCUBlock(nn.Module):
    """Residual conv units: n_blocks times x <- x + conv(act(... conv(act(x)))) with n_stages bias-free convs;
    with num_classes, a conditional InstanceNorm++ precedes every activation (NCSN v1)."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, act: nn.Module,
                 num_classes: int | None = None):
        super().__init__()
        self.stride, self.n_blocks, self.n_stages = 1, n_blocks, n_stages
        self.conditional = num_classes is not None
        for i, j in itertools.product(range(1, n_blocks + 1), range(1, n_stages + 1)):
            if self.conditional:
                setattr(self, f"{i}_{j}_norm", ConditionalInstanceNorm2dPlus(features, num_classes))
            setattr(self, f"{i}_{j}_conv", ncsn_conv3x3(features, features, bias=False))
        self.act = act

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        for i in range(1, self.n_blocks + 1):
            residual = x
            for j in range(1, self.n_stages + 1):
                if self.conditional:
                    x = getattr(self, f"{i}_{j}_norm")(x, y)
                x = getattr(self, f"{i}_{j}_conv")(self.act(x))
            x = x + residual
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: x + Σ_k path_k with path_k = conv(pool(path_{k-1})), 5×5 stride-1 pooling
    (max for NCSNv2, average for NCSN v1); with num_classes, path is normalised before each pooling."""

    def __init__(self, features: int, n_stages: int, act: nn.Module, maxpool: bool = True,
                 num_classes: int | None = None):
        super().__init__()
        self.n_stages = n_stages
        self.convs = nn.ModuleList([ncsn_conv3x3(features, features, bias=False) for _ in range(n_stages)])
        conditional = num_classes is not None
        self.norms = nn.ModuleList([ConditionalInstanceNorm2dPlus(features, num_classes)
                                    for _ in range(n_stages) if conditional])
        pool = nn.MaxPool2d if maxpool else nn.AvgPool2d
        self.pool = pool(kernel_size=5, stride=1, padding=2)
        self.act = act

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.act(x)
        path = x
        for i, conv in enumerate(self.convs):
            if len(self.norms):
                path = self.norms[i](path, y)
            path = conv(self.pool(path))
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: each input through its own conv (after a conditional norm with
    num_classes), resized bilinearly (align_corners=True) to the output shape, then summed."""

    def __init__(self, in_planes: Sequence[int], features: int, num_classes: int | None = None):
        super().__init__()
        self.features = features
        self.convs = nn.ModuleList([ncsn_conv3x3(c, features) for c in in_planes])
        conditional = num_classes is not None
        self.norms = nn.ModuleList(
            [ConditionalInstanceNorm2dPlus(c, num_classes) for c in in_planes if conditional])

    def forward(self, xs: Sequence[torch.Tensor], shape: Sequence[int], y: torch.Tensor | None = None
                ) -> torch.Tensor:
        total = None
        for i, (x, conv) in enumerate(zip(xs, self.convs)):
            h = conv(self.norms[i](x, y) if len(self.norms) else x)
            h = F.interpolate(h, size=tuple(shape), mode="bilinear", align_corners=True)
            # The reference adds onto float32 zeros; starting from the first term is the same sum in the
            # input's dtype (float64 runs stay float64, as in the fixtures).
            total = h if total is None else total + h
        return total


class RefineBlock(nn.Module):
    """One RefineNet stage: RCUs adapt each input, MSF fuses them (when there are two), CRP pools, and an
    output RCU (three units in the last stage, `end`) finishes."""

    def __init__(self, in_planes: Sequence[int], features: int, act: nn.Module, end: bool = False,
                 maxpool: bool = True, num_classes: int | None = None):
        super().__init__()
        cond = num_classes is not None
        rcu, msf, crp = (CondRCUBlock, CondMSFBlock, CondCRPBlock) if cond else (RCUBlock, MSFBlock, CRPBlock)
        self.n_blocks = len(in_planes)
        self.adapt_convs = nn.ModuleList([rcu(c, 2, 2, act, num_classes=num_classes) for c in in_planes])
        self.output_convs = rcu(features, 3 if end else 1, 2, act, num_classes=num_classes)
        if self.n_blocks > 1:
            self.msf = msf(in_planes, features, num_classes=num_classes)
        self.crp = crp(features, 2, act, maxpool=maxpool, num_classes=num_classes)

    def forward(self, xs: Sequence[torch.Tensor], output_shape: Sequence[int], y: torch.Tensor | None = None
                ) -> torch.Tensor:
        """xs: one or two [B, C_i, H_i, W_i]; output_shape: (H, W) of the result [B, features, H, W]."""
        hs = [adapt(x, y) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, output_shape, y) if self.n_blocks > 1 else hs[0]
        return self.output_convs(self.crp(h, y), y)


# NCSN v1's RefineNet blocks under the reference's class names; the behaviour comes from num_classes.


class CondRCUBlock(RCUBlock):
    """RCUBlock with conditional InstanceNorm++ (NCSN v1)."""


class CondCRPBlock(CRPBlock):
    """CRPBlock with conditional InstanceNorm++ (NCSN v1)."""


class CondMSFBlock(MSFBlock):
    """MSFBlock with conditional InstanceNorm++ (NCSN v1)."""


class CondRefineBlock(RefineBlock):
    """RefineBlock with conditional InstanceNorm++ and average pooling (NCSN v1)."""


# ---- the networks ----

# Encoder stages, shallow to deep: (name, input width, output width (in units of nf), resample, dilation,
# name of the RefineBlock that reads the stage). Each stage is two residual blocks; the dilated stages keep
# the resolution. The RefineBlock reading stage k fuses it with the decoder state and emits stage k's
# input width, so the decoder mirrors the encoder.
NCSN_STAGES = (
    ("res1", 1, 1, None, 1, "refine4"),
    ("res2", 1, 2, "down", 1, "refine3"),
    ("res3", 2, 2, "down", 2, "refine2"),
    ("res4", 2, 2, "down", 4, "refine1"),
)
NCSNV2_128_STAGES = (
    ("res1", 1, 1, None, 1, "refine5"),
    ("res2", 1, 2, "down", 1, "refine4"),
    ("res3", 2, 2, "down", 1, "refine3"),
    ("res4", 2, 4, "down", 2, "refine2"),
    ("res5", 4, 4, "down", 4, "refine1"),
)
NCSNV2_256_STAGES = (
    ("res1", 1, 1, None, 1, "refine5"),
    ("res2", 1, 2, "down", 1, "refine4"),
    ("res3", 2, 2, "down", 1, "refine3"),
    ("res31", 2, 2, "down", 1, "refine31"),
    ("res4", 2, 4, "down", 2, "refine2"),
    ("res5", 4, 4, "down", 4, "refine1"),
)


class _RefineNet(nn.Module):
    """The RefineNet skeleton shared by NCSN v1 and NCSNv2: begin conv, residual encoder, RefineBlock
    decoder, InstanceNorm++, activation, end conv. Subclasses choose the stages and the output scaling."""

    def __init__(self, stages, channels, nf, centered, nonlinearity, num_classes=None):
        super().__init__()
        self.centered, self.nf = centered, nf
        self.act = act = get_act(nonlinearity)
        self.begin_conv = nn.Conv2d(channels, nf, 3, padding=1)
        self.normalizer = _norm(nf, num_classes)
        self.end_conv = nn.Conv2d(nf, channels, 3, padding=1)
        block = ResidualBlock if num_classes is None else ConditionalResidualBlock
        for name, c_in, c_out, resample, dilation, _ in stages:
            self.add_module(name, nn.ModuleList([
                block(c_in * nf, c_out * nf, resample, act, dilation, num_classes),
                block(c_out * nf, c_out * nf, None, act, dilation, num_classes),
            ]))
        self._add_refine_blocks(stages, nf, act, num_classes)
        self._stages = [(name, refine_name) for name, *_, refine_name in stages]

    def _add_refine_blocks(self, stages, nf, act, num_classes):
        """The decoder. The block reading stage k takes that stage's output (and, below the deepest stage,
        the deeper block's output) and emits stage k's input width. NCSN v1 pools by averaging, v2 by max."""
        refine = RefineBlock if num_classes is None else CondRefineBlock
        # Registered in the string order of their names (refine1, refine2, refine3, refine31, refine4, ...),
        # as in the reference, so that parameters (and EMA lists) come in its order.
        for k in sorted(range(len(stages)), key=lambda k: stages[k][-1]):
            _, c_in, c_out, _, _, name = stages[k]
            inputs = [c_out * nf] * (1 if k == len(stages) - 1 else 2)
            self.add_module(name, refine(inputs, c_in * nf, act, end=k == 0, maxpool=num_classes is None,
                                         num_classes=num_classes))

    def _features(self, x, labels):
        """Everything up to and including end_conv: [B, C, H, W] -> [B, C, H, W]."""
        h = self.begin_conv(x if self.centered else 2 * x - 1.0)
        skips = []
        for name, _ in self._stages:
            for block in getattr(self, name):
                h = block(h, labels)
            skips.append(h)
        h = None
        for (_, refine_name), skip in reversed(list(zip(self._stages, skips))):
            xs = [skip] if h is None else [skip, h]
            h = getattr(self, refine_name)(xs, skip.shape[2:], labels)
        return self.end_conv(self.act(self.normalizer(h, labels)))


class NCSN(_RefineNet):
    """NCSN v1 (CondRefineNet): every norm is conditional on the noise level; the output is not scaled.

    forward(x, labels): x [B, channels, H, W] (in [0, 1] unless centered), labels [B] integer indices of the
    noise levels, 0 the largest. Returns the score estimate [B, channels, H, W].
    """

    def __init__(self, channels: int = 3, nf: int = 128, num_scales: int = 10, centered: bool = False,
                 nonlinearity: str = "elu"):
        super().__init__(NCSN_STAGES, channels, nf, centered, nonlinearity, num_classes=num_scales)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._features(x, labels)


class NCSNv2(_RefineNet):
    """NCSNv2 for images up to 64 px (`ncsnv2_64`): unconditional InstanceNorm++, and the output divided by
    the noise level, sigmas[labels] (Song & Ermon 2020, technique 3).

    forward(x, labels): x [B, channels, H, W] (in [0, 1] unless centered), labels [B] integer indices into
    the descending float64 buffer `sigmas`. Returns the score estimate [B, channels, H, W]; dividing by the
    float64 buffer makes it float64, as in the reference, unless the model was cast with .float().
    """

    stages = NCSN_STAGES

    def __init__(self, channels: int = 3, nf: int = 128, centered: bool = False, sigma_min: float = 0.01,
                 sigma_max: float = 50.0, num_scales: int = 232, nonlinearity: str = "elu"):
        super().__init__(self.stages, channels, nf, centered, nonlinearity)
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._features(x, labels) / expand_to(self.sigmas[labels], x)


class NCSNv2Deeper(NCSNv2):
    """NCSNv2 for 96-128 px (`ncsnv2_128`): five stages, 4·nf channels in the deepest two."""

    stages = NCSNV2_128_STAGES


class NCSNv2Deepest(NCSNv2):
    """NCSNv2 for 129-256 px (`ncsnv2_256`): six stages (an extra 2·nf one, res31 / refine31)."""

    stages = NCSNV2_256_STAGES
