"""A noise-conditional classifier p_t(y | x_t): the time-dependent classifier of classifier guidance (Song et
al. 2021, Sec. 5 and App. I), whose ∇ₓ log p_t(y | x) is added to the unconditional score.

`noise_classifier(shape, num_classes)` builds a small one for images [B, C, H, W] or points [B, D]; both map
(x, t) to logits [B, num_classes], with t the SDE time in [0, T].
"""
import torch
import torch.nn.functional as F
from torch import nn

from score_sde.models.layers import conv3x3, dense, timestep_embedding
from score_sde.models.ncsnpp import ResnetBlockDDPMpp, group_norm


class TimeEmbedding(nn.Module):
    """t [B] in [0, T] -> [B, dim]: DDPM's sinusoidal embedding of 999·t/T (the range a continuous VP network
    sees), then two dense layers with SiLU between them."""

    def __init__(self, nf: int, dim: int, T: float = 1.0):
        super().__init__()
        self.nf, self.T = nf, T
        self.dense_0, self.dense_1, self.act = dense(nf, dim), dense(dim, dim), nn.SiLU()

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        emb = timestep_embedding(t * (999 / self.T), self.nf).to(dtype)
        return self.dense_1(self.act(self.dense_0(emb)))


class ImageClassifier(nn.Module):
    """x [B, C, H, W], t [B] -> logits [B, num_classes]: a 3×3 conv, one time-conditioned residual block per
    level with 2×2 average pooling between the levels, GroupNorm, SiLU, global average pooling and a dense
    layer. The pooling sizes are fixed, so any H, W that survive len(ch_mult) − 1 halvings will do."""

    def __init__(self, num_channels: int, num_classes: int, nf: int = 32,
                 ch_mult: tuple[int, ...] = (1, 2, 2), T: float = 1.0):
        super().__init__()
        self.embed = TimeEmbedding(nf, 4 * nf, T)
        self.act = nn.SiLU()
        self.conv_in = conv3x3(num_channels, nf)
        channels = [nf] + [nf * mult for mult in ch_mult]
        self.blocks = nn.ModuleList(
            ResnetBlockDDPMpp(self.act, c_in, c_out, temb_dim=4 * nf, dropout=0.0, skip_rescale=True)
            for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.norm = group_norm(channels[-1])
        self.output = dense(channels[-1], num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.embed(t, x.dtype)
        h = self.conv_in(x)
        for level, block in enumerate(self.blocks):
            if level > 0:
                h = F.avg_pool2d(h, 2)
            h = block(h, temb)
        h = self.act(self.norm(h)).mean(dim=(2, 3))
        return self.output(h)


class PointClassifier(nn.Module):
    """x [B, D], t [B] -> logits [B, num_classes]: a dense layer plus the time embedding, residual blocks
    h ← h + dense(SiLU(h)) as in models/mlp.py, and a dense output."""

    def __init__(self, dim: int, num_classes: int, hidden_dim: int = 128, num_layers: int = 3,
                 T: float = 1.0):
        super().__init__()
        self.embed = TimeEmbedding(hidden_dim, hidden_dim, T)
        self.input = dense(dim, hidden_dim)
        self.blocks = nn.ModuleList(dense(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.output = dense(hidden_dim, num_classes)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.input(x) + self.embed(t, x.dtype)
        for block in self.blocks:
            h = h + block(self.act(h))
        return self.output(self.act(h))


def noise_classifier(shape: tuple[int, ...], num_classes: int, nf: int = 32, T: float = 1.0) -> nn.Module:
    """A classifier (x, t) -> logits [B, num_classes] for data of shape [B, *shape].

    Args:
        shape: one sample's shape, without the batch dimension: (C, H, W) for images, (D,) for points.
        num_classes: the number of classes.
        nf: width: the image network's base channels (GroupNorm takes nf // 4 groups, so a multiple of 4);
            the point network's hidden width is 4·nf.
        T: the SDE's end time; t in [0, T] is embedded as 999·t/T.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if len(shape) == 3:
        return ImageClassifier(shape[0], num_classes, nf=nf, T=T)
    if len(shape) == 1:
        return PointClassifier(shape[0], num_classes, hidden_dim=4 * nf, T=T)
    raise ValueError(f"noise_classifier takes images (C, H, W) or points (D,), got shape {tuple(shape)}")
