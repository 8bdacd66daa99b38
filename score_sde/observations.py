"""Linear observations y = A·x + σ_y·n of samples x [B, ...], each written in an orthonormal basis that splits
the coordinates into observed and free ones (the SVD A = U·diag(s)·Vᵀ).

In the coordinates z = Vᵀx (`coords`, shaped like x), the observation is ŷ = Uᵀy / s = z_obs + (σ_y / s)·n
on the `observed` coordinates and says nothing about the others. V is orthogonal, so the forward SDE (its
noise isotropic, its drift a multiple of x) noises every coordinate of z independently, as it noises x: the
conditional samplers (score_sde/controllable.py) work coordinate by coordinate in z. Each kind of
observation supplies its V cheaply: the identity for inpainting, a 3 × 3 colour rotation per pixel for
colorization, an f² × f² rotation per block for super-resolution, an explicit SVD for a small general A.

Observations hold one y per sample: B observations for B samples (a batch of 1 is broadcast).
"""
import math

import torch
import torch.nn.functional as F


class Observation:
    """y = A·x + σ_y·n, split by an orthonormal basis.

    Attributes (all shaped like the coordinates, [B or 1, ...]):
        observed: bool, which coordinates of z = coords(x) y observes.
        scale: the singular value s of each observed coordinate (1 elsewhere).
        target: ŷ = Uᵀy / s on the observed coordinates (0 elsewhere): z_obs's noiseless value.
        sigma_y: the observation noise's standard deviation (0: exact observations).
    """

    observed: torch.Tensor
    scale: torch.Tensor
    target: torch.Tensor
    sigma_y: float
    basis: torch.Tensor | None = None  # the rotation's rows, built once: coords runs in samplers' loops

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        """z = Vᵀx, shaped like x."""
        raise NotImplementedError

    def from_coords(self, z: torch.Tensor) -> torch.Tensor:
        """x = V·z, the inverse of coords."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A·x (noiseless), shaped as the observation y."""
        raise NotImplementedError

    def pseudo_inverse(self) -> torch.Tensor:
        """A⁺·y: the observation shown as a sample (observed coordinates at ŷ, free ones 0), e.g. the masked
        image, the gray image in every channel, the low-resolution image upsampled."""
        return self.from_coords(self.target)

    def relative_noise(self) -> torch.Tensor:
        """σ_y / s per coordinate (0 where not observed): the noise of ŷ as a reading of z_obs."""
        return torch.where(self.observed, self.sigma_y / self.scale, torch.zeros_like(self.scale))

    def to(self, x: torch.Tensor) -> "Observation":
        """The observation's tensors moved to x's device and dtype (in place; returns self)."""
        self.scale, self.target = self.scale.to(x), self.target.to(x)
        self.observed = self.observed.to(x.device)
        self.basis = None if self.basis is None else self.basis.to(x)
        return self


def _check_sigma(sigma_y: float) -> float:
    if not (isinstance(sigma_y, int | float) and math.isfinite(sigma_y) and sigma_y >= 0):
        raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y!r}")
    return float(sigma_y)


class Inpainting(Observation):
    """The pixels where mask is true, y = x[mask] (+ σ_y·n): A is a row selection, V the identity.

    Args:
        mask: bool or 0/1, shaped like the samples [B or 1, ...] (a mask [1, ...] serves every sample).
        y: the samples' values, shaped like the samples; only the masked entries are read.
        sigma_y: observation noise (default 0: the known pixels are exact).
    """

    def __init__(self, mask: torch.Tensor, y: torch.Tensor, sigma_y: float = 0.0):
        self.sigma_y = _check_sigma(sigma_y)
        self.observed = torch.as_tensor(mask).bool()
        if self.observed.ndim != y.ndim:
            raise ValueError(f"the mask {tuple(self.observed.shape)} and y {tuple(y.shape)} must have the "
                             "same number of dimensions ([B or 1, ...] like the samples)")
        self.observed = self.observed.expand_as(y) if self.observed.shape[0] == 1 else self.observed
        self.target = torch.where(self.observed, y, torch.zeros_like(y))
        self.scale = torch.ones_like(y)

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def from_coords(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.observed, x, torch.zeros_like(x))


def colour_basis(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An orthogonal 3 × 3 Q whose first row is (1, 1, 1)/√3 (the gray direction); the other two rows span
    the colour differences (red − blue, and red + blue − 2·green). Rows are the new coordinates."""
    rows = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]], dtype=torch.float64)
    return (rows / rows.norm(dim=1, keepdim=True)).to(dtype)


class Colorization(Observation):
    """The gray image, the mean over the three colour channels: y = mean_c(x) (+ σ_y·n), for x [B, 3, H, W].

    A per pixel is (1, 1, 1)/3 = (1/√3)·q₀ᵀ with q₀ = (1, 1, 1)/√3, so in the coordinates z = Q·x (the colour
    basis, per pixel: the paper's orthogonal colour transform) channel 0 is observed with s = 1/√3 and
    channels 1 and 2 are free.

    Args:
        gray: [B or 1, 1, H, W], the channel mean in the samples' space.
        sigma_y: observation noise on the gray values.
    """

    def __init__(self, gray: torch.Tensor, sigma_y: float = 0.0):
        if gray.ndim != 4 or gray.shape[1] != 1:
            raise ValueError(f"gray must be [B, 1, H, W] (one channel), got {tuple(gray.shape)}")
        self.sigma_y, self.basis = _check_sigma(sigma_y), colour_basis(gray.dtype)
        shape = (gray.shape[0], 3, *gray.shape[2:])
        self.observed = torch.zeros(shape, dtype=torch.bool)
        self.observed[:, 0] = True
        self.scale = torch.where(self.observed, 1 / math.sqrt(3), 1.0).to(gray.dtype)
        self.target = torch.zeros(shape, dtype=gray.dtype)
        self.target[:, :1] = gray * math.sqrt(3)

    def _rotate(self, x, matrix):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"colorization needs colour samples [B, 3, H, W], got {tuple(x.shape)}")
        return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        return self._rotate(x, self.basis)

    def from_coords(self, z: torch.Tensor) -> torch.Tensor:
        return self._rotate(z, self.basis.T)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True)


def block_basis(factor: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An orthogonal f² × f² Q whose first row is constant (1/f): block averages in the first coordinate,
    the rest an orthonormal completion (QR of [1, e₂, ..., e_{f²}]). Rows are the new coordinates."""
    n = factor * factor
    start = torch.eye(n, dtype=torch.float64)
    start[:, 0] = 1.0
    q, _ = torch.linalg.qr(start)
    q = q * q[0, 0].sign()  # the first column +1/f rather than −1/f
    return q.T.contiguous().to(dtype)


class SuperResolution(Observation):
    """Average pooling by `factor`: y = avgpool_f(x) (+ σ_y·n), for x [B, C, H, W] with f dividing H and W.

    Per f × f block, A = (1/f²)·1ᵀ = (1/f)·q₀ᵀ with q₀ = 1/f, so in the block basis (block_basis, coordinate k
    of a block stored at its k-th pixel, row-major) the block's first pixel is observed with s = 1/f.

    Args:
        y: [B or 1, C, H/f, W/f], the low-resolution images in the samples' space.
        factor: the pooling factor f ≥ 2.
        sigma_y: observation noise on the pooled values.
    """

    def __init__(self, y: torch.Tensor, factor: int, sigma_y: float = 0.0):
        if not isinstance(factor, int) or factor < 2:
            raise ValueError(f"factor must be a whole number >= 2, got {factor!r}")
        if y.ndim != 4:
            raise ValueError(f"y must be [B, C, H/f, W/f], got {tuple(y.shape)}")
        self.factor, self.sigma_y = factor, _check_sigma(sigma_y)
        self.basis = block_basis(factor, y.dtype)
        b, c, h, w = y.shape
        first = torch.zeros(factor, factor, dtype=torch.bool)
        first[0, 0] = True
        self.observed = first.repeat(h, w).expand(b, c, h * factor, w * factor).clone()
        self.scale = torch.where(self.observed, 1 / factor, 1.0).to(y.dtype)
        self.target = torch.zeros(b, c, h * factor, w * factor, dtype=y.dtype)
        self.target[..., ::factor, ::factor] = y * factor

    def _blocks(self, x, matrix):
        b, c, h, w = x.shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(f"the samples' size {h} × {w} is not a multiple of the factor {f}")
        blocks = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // f, w // f,
                                                                                          f * f)
        blocks = blocks @ matrix.to(x).T
        return blocks.reshape(b, c, h // f, w // f, f, f).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        return self._blocks(x, self.basis)

    def from_coords(self, z: torch.Tensor) -> torch.Tensor:
        return self._blocks(z, self.basis.T)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.factor)


class LinearObservation(Observation):
    """A general y = A·x + σ_y·n for flat samples x [B, d] and A [r, d], through an explicit SVD (small d).

    Directions with a singular value below `rtol`·s_max carry no information and are left free (with
    σ_y = 0, y must then agree with A's range; that is not checked).

    Args:
        A: [r, d]; y: [B or 1, r]; sigma_y: observation noise.
    """

    def __init__(self, A: torch.Tensor, y: torch.Tensor, sigma_y: float, rtol: float = 1e-10):
        if A.ndim != 2 or y.ndim != 2 or y.shape[1] != A.shape[0]:
            raise ValueError(f"need A [r, d] and y [B, r]; got {tuple(A.shape)} and {tuple(y.shape)}")
        self.A, self.sigma_y = A, _check_sigma(sigma_y)
        u, s, vh = torch.linalg.svd(A.double(), full_matrices=True)
        rank = int((s > rtol * s.max()).sum())
        d = A.shape[1]
        self.basis = vh  # rows: the coordinates, the first `rank` observed
        self.observed = (torch.arange(d) < rank).expand(y.shape[0], d)
        self.scale = torch.ones(d, dtype=torch.float64)
        self.scale[:rank] = s[:rank]
        self.scale = self.scale.expand(y.shape[0], d).to(y.dtype)
        self.target = torch.zeros(y.shape[0], d, dtype=y.dtype)
        self.target[:, :rank] = (y.double() @ u[:, :rank] / s[:rank]).to(y.dtype)

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.basis.to(x).T

    def from_coords(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.basis.to(z)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A.to(x).T


def _half(size, part):
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return {"lower_half": rows < size // 2, "upper_half": rows >= size // 2,
            "right_half": cols < size // 2, "left_half": cols >= size // 2}[part]


def _centre(size):
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    low, high = size // 4, size - size // 4
    return ~((rows >= low) & (rows < high) & (cols >= low) & (cols < high))


# Built-in inpainting masks by the part they hide: size -> bool [size, size], True where a pixel is known.
MASKS = {"lower_half": lambda size: _half(size, "lower_half"),
         "upper_half": lambda size: _half(size, "upper_half"),
         "left_half": lambda size: _half(size, "left_half"),
         "right_half": lambda size: _half(size, "right_half"),
         "centre": _centre}
