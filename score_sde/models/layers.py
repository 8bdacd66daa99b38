"""Building blocks shared by the score networks: activations, the noise-level table, the original's
initialisers, 1×1/3×3 convolutions, the NIN (per-pixel dense) layer and the sinusoidal timestep embedding.
Family-specific blocks live with their family (ddpm.py, ncsnpp.py, ncsn.py); FIR resampling in fir.py."""
import math

import torch
import torch.nn as nn

from score_sde.registry import lookup

ACTIVATIONS = {
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(0.2),  # the original's get_act uses slope 0.2
}


def get_act(nonlinearity: str) -> nn.Module:
    """The activation module named by config.model.nonlinearity (case-insensitive, as in the original)."""
    return lookup(ACTIVATIONS, nonlinearity.lower(), "nonlinearity")()


def geometric_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> torch.Tensor:
    """The descending noise levels exp(linspace(log σ_max, log σ_min, num_scales)) in float64, index 0 the
    largest, as the original's `get_sigmas`. Computed like numpy's linspace (start + i·step, last = stop),
    which matches the published buffers bit for bit where torch.linspace would round differently."""
    start, stop = math.log(sigma_max), math.log(sigma_min)
    step = (stop - start) / max(num_scales - 1, 1)
    log_sigmas = start + torch.arange(num_scales, dtype=torch.float64) * step
    if num_scales > 1:
        log_sigmas[-1] = stop
    return torch.exp(log_sigmas)


def variance_scaling_(tensor: torch.Tensor, scale: float = 1.0, in_axis: int = 1, out_axis: int = 0
                      ) -> torch.Tensor:
    """In place: uniform init with variance scale / fan_avg, the DDPM / NCSN++ default ("fan_avg",
    "uniform" variance scaling as in JAX), with scale 0 mapped to a tiny value as the original does."""
    scale = 1e-10 if scale == 0 else scale
    receptive = tensor[0][0].numel() if tensor.ndim > 2 else 1
    fan_in = tensor.shape[in_axis] * receptive
    fan_out = tensor.shape[out_axis] * receptive
    bound = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def ddpm_conv(in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, bias: bool = True,
              dilation: int = 1, init_scale: float = 1.0, padding: int | None = None) -> nn.Conv2d:
    """Conv2d with DDPM initialisation: variance-scaled weights, zero bias; 'same' padding by default."""
    padding = dilation * (kernel_size // 2) if padding is None else padding
    conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     bias=bias)
    variance_scaling_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True, init_scale: float = 1.0
            ) -> nn.Conv2d:
    return ddpm_conv(in_planes, out_planes, 1, stride=stride, bias=bias, init_scale=init_scale, padding=0)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True, dilation: int = 1,
            init_scale: float = 1.0) -> nn.Conv2d:
    return ddpm_conv(in_planes, out_planes, 3, stride=stride, bias=bias, dilation=dilation,
                     init_scale=init_scale)


def dense(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    """nn.Linear with DDPM initialisation (variance-scaled weight, zero bias)."""
    linear = nn.Linear(in_features, out_features)
    variance_scaling_(linear.weight, init_scale)
    nn.init.zeros_(linear.bias)
    return linear


class NIN(nn.Module):
    """A dense layer over the channel axis at every pixel: [B, C_in, H, W] -> [B, C_out, H, W].
    Parameters W [C_in, C_out] and b [C_out], named as in the original so checkpoints load as they are."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        weight = variance_scaling_(torch.empty(in_dim, num_units), init_scale, in_axis=0, out_axis=1)
        self.W = nn.Parameter(weight)
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[:, None, None]


def timestep_embedding(timesteps: torch.Tensor, embedding_dim: int, max_positions: int = 10000
                       ) -> torch.Tensor:
    """Sinusoidal embedding [B, embedding_dim] (float32) of (possibly fractional) timesteps [B] (Vaswani et
    al. 2017; DDPM). Computed in float32 as the original does; callers cast it to their activations' dtype."""
    half = embedding_dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device)
                      * -(math.log(max_positions) / (half - 1)))
    args = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if embedding_dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


def class_embedding(num_classes: int, dim: int) -> nn.Embedding | None:
    """The class embedding of a class-conditional network: num_classes + 1 vectors of size dim, the last
    (index num_classes) the null class of the unconditional score; None when num_classes is 0.

    Initialised N(0, 1), nn.Embedding's default, as ADM's class embedding, so that the classes differ from
    the first step (docs/guidance.md compares it with a zero start on MNIST).
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be 0 (unconditional) or positive, got {num_classes}")
    if num_classes == 0:
        return None
    return nn.Embedding(num_classes + 1, dim)


def add_class_embedding(temb: torch.Tensor | None, embedding: nn.Embedding | None,
                        class_labels: torch.Tensor | None) -> torch.Tensor | None:
    """temb [B, dim] plus the embedding of class_labels [B] (integers in [0, num_classes]; None: the null
    class num_classes for every sample). A network without class embedding (embedding None) returns temb as
    it is (None for one without time embedding either) and refuses class labels.
    No values are checked here, so no host sync: nn.Embedding raises on an index out of range on the CPU."""
    if embedding is None:
        if class_labels is not None:
            raise ValueError("class_labels given to an unconditional network (num_classes=0)")
        return temb
    if class_labels is None:
        return temb + embedding.weight[-1]
    return temb + embedding(class_labels)
