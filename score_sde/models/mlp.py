"""A noise-conditioned residual MLP for low-dimensional data [B, D] such as 2-D toy distributions."""
import math

import torch
from torch import nn

from score_sde.models.layers import add_class_embedding, class_embedding, dense, timestep_embedding

EMBEDDINGS = ("positional", "fourier")


class MLP(nn.Module):
    """x [B, dim] (or [B, ...] with dim elements, such as images, flattened), labels [B] -> output like x.

    The labels are embedded like the image networks do: "positional" is DDPM's sinusoidal embedding of
    the labels as they are (suits 999·t of continuous VP / sub-VP and the integer indices of discrete
    training); "fourier" is NCSN++'s Gaussian Fourier embedding of log(labels) (suits σ(t) of continuous
    VE; labels must be positive). The embedding goes through two dense layers and is added to the first
    hidden activation; then come num_layers residual blocks h ← h + dense(SiLU(h)), and a dense output.
    With scale_by_sigma (Fourier labels σ only), the output is divided by σ, as NCSN++ does for the VE SDE:
    the network then predicts −z, of size one at every noise level, rather than a score of size 1/σ.

    Args:
        dim: D, the data dimension.
        hidden_dim: width H of the hidden layers.
        num_layers: number of residual H -> H blocks.
        embedding_dim: size of the label embedding (default: hidden_dim).
        embedding_type: "positional" or "fourier".
        fourier_scale: std of the Fourier frequencies (NCSN++'s `fourier_scale`).
        scale_by_sigma: divide the output by the labels σ (needs embedding_type "fourier").
        input_skip: add g·x to the output, with the gain g [B] a dense layer of the label embedding: the
            identity map a noise-predicting network needs at high noise (ε ≈ x at t = T) is then exact
            rather than approximated by the residual blocks.
        num_classes: 0, or the number of classes of a class-conditional network: a learned embedding of the
            class labels (num_classes + 1 rows, the last the null class) is added to the label embedding.
    """

    def __init__(self, dim: int, hidden_dim: int = 128, num_layers: int = 3, embedding_dim: int | None = None,
                 embedding_type: str = "positional", fourier_scale: float = 16.0,
                 scale_by_sigma: bool = False, input_skip: bool = False, num_classes: int = 0):
        super().__init__()
        if embedding_type not in EMBEDDINGS:
            raise ValueError(f"unknown embedding_type {embedding_type!r}; expected one of {list(EMBEDDINGS)}")
        if scale_by_sigma and embedding_type != "fourier":
            raise ValueError("scale_by_sigma divides by the labels σ, which only the 'fourier' embedding "
                             f"takes; got embedding_type {embedding_type!r}")
        self.scale_by_sigma = scale_by_sigma
        embedding_dim = hidden_dim if embedding_dim is None else embedding_dim
        if embedding_type == "fourier" and embedding_dim % 2:
            raise ValueError(f"the Fourier embedding needs an even embedding_dim, got {embedding_dim}")
        self.embedding_type = embedding_type
        self.embedding_dim = embedding_dim
        # Fixed random frequencies: a buffer, so it is saved but neither trained nor averaged by the EMA.
        self.register_buffer("fourier_W", torch.randn(embedding_dim // 2) * fourier_scale
                             if embedding_type == "fourier" else None)
        self.temb = nn.Sequential(dense(embedding_dim, hidden_dim), nn.SiLU(), dense(hidden_dim, hidden_dim))
        self.input = dense(dim, hidden_dim)
        self.blocks = nn.ModuleList(dense(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.output = dense(hidden_dim, dim)
        self.skip_gain = dense(hidden_dim, 1) if input_skip else None
        self.act = nn.SiLU()
        self.num_classes = num_classes
        self.class_embed = class_embedding(num_classes, hidden_dim)  # last: unconditional keys unchanged

    def embed(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The label embedding [B, embedding_dim] in the given dtype."""
        if self.embedding_type == "positional":
            return timestep_embedding(labels, self.embedding_dim).to(dtype)
        args = torch.log(labels.to(dtype))[:, None] * self.fourier_W.to(dtype)[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, class_labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x: [B, dim] or [B, ...], labels: [B], class_labels: [B] integers in [0, num_classes] (num_classes,
        or None for all: the null class) -> like x."""
        shape = x.shape
        x = x.flatten(1)  # images [B, C, H, W] are points of dimension C·H·W
        if x.shape[1] != self.input.in_features:
            raise ValueError(f"MLP of dim {self.input.in_features} got x of shape {tuple(shape)}")
        temb = add_class_embedding(self.temb(self.embed(labels, x.dtype)), self.class_embed, class_labels)
        h = self.input(x) + temb
        for block in self.blocks:
            h = h + block(self.act(h))
        h = self.output(self.act(h))
        if self.skip_gain is not None:
            h = h + self.skip_gain(temb) * x
        h = h / labels.to(h.dtype)[:, None] if self.scale_by_sigma else h
        return h.reshape(shape)
