"""NCSN v1 and NCSNv2 against the original's fixtures and manifest, and their blocks against exact answers."""
import json

import ml_collections
import pytest
import reference
import torch
import torch.nn.functional as F
from reference import assert_matches_reference, config, io, model_and_ema_state_dicts, requires_fixtures

from score_sde.models import create_model, load_reference_checkpoint, ncsn
from score_sde.models.layers import geometric_sigmas
from score_sde.train import read_checkpoint

FULL_SIZE = {"ve/ncsnv2/cifar10": 29_694_083, "ve/ncsn/cifar10": 30_117_635}
ACTIVATION_TYPES = ("ELU", "ReLU", "LeakyReLU", "SiLU", "ModuleList")
VARIANTS = {"ncsn": ncsn.NCSN, "ncsnv2_64": ncsn.NCSNv2, "ncsnv2_128": ncsn.NCSNv2Deeper,
            "ncsnv2_256": ncsn.NCSNv2Deepest}


def randomize_(model, seed=0):
    """Non-degenerate weights: the default init leaves the norms at ~1 and the offsets at 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def tiny(name, **kwargs):
    torch.manual_seed(0)
    defaults = {"num_scales": 10} if name == "ncsn" else {"num_scales": 10, "sigma_max": 5.0}
    return randomize_(VARIANTS[name](nf=4, **{**defaults, **kwargs}).double())


def batch(size=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, size, size, generator=gen, dtype=torch.float64), torch.tensor([0, 4, 9])


# ---- the reference fixtures ----


@requires_fixtures
@pytest.mark.parametrize("name", ["ncsnv2_ve", "ncsnv2_128_ve", "ncsn_ve"])
def test_matches_reference_fixture(name):
    model = create_model(config(name))
    model_sd, _ = model_and_ema_state_dicts(name)
    assert list(model.state_dict()) == list(model_sd)  # same order: the EMA list pairs by position
    if "sigmas" in model_sd:
        # Our table equals the reference's NumPy one to a few float64 ulps; the fixture's is loaded anyway.
        torch.testing.assert_close(model.sigmas, model_sd["sigmas"], rtol=1e-13, atol=0)
    # As built (float32 weights, float64 sigmas) the output dtype is the reference's: float64 for NCSNv2.
    model.load_state_dict(model_sd, strict=True)
    data = io(name)
    with torch.no_grad():
        assert model.eval()(data["x"], data["labels"]).dtype == data["out_model"].dtype
    assert_matches_reference(model, name)


@requires_fixtures
@pytest.mark.parametrize("name", ["ncsnv2_ve", "ncsn_ve"])
def test_published_checkpoint_format_loads_with_its_ema(name):
    checkpoint = read_checkpoint(reference.fixture(f"{name}.pth"))
    loaded = load_reference_checkpoint(checkpoint, create_model(config(name)))
    data = io(name)
    loaded.ema.copy_to(loaded.model)
    with torch.no_grad():
        out = loaded.model.eval()(data["x"], data["labels"])
    assert reference.per_sample_error(out, data["out_ema"]) <= 2e-4


# ---- the full-size manifest ----


@pytest.fixture(scope="module", params=sorted(FULL_SIZE))
def full_size(request):
    """A full-size CIFAR-10 network built without memory (meta device), and its manifest entry."""
    entry = json.loads(reference.fixture("full_manifest.json").read_text())["models"][request.param]
    cfg = {k: v for k, v in entry["config"].items() if k != "device"}
    with torch.device("meta"):
        model = create_model(ml_collections.ConfigDict(cfg))
    return request.param, model, entry


@requires_fixtures
def test_full_size_matches_manifest_keys_shapes_and_counts(full_size):
    name, model, entry = full_size
    state = model.state_dict()
    assert list(state) == list(entry["state_dict"])
    assert {k: list(v.shape) for k, v in state.items()} == entry["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"] == FULL_SIZE[name]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == entry["num_trainable_parameters"]
    assert [k for k, _ in model.named_buffers()] == entry["buffers"]
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()
            if v.dtype != torch.float32} == entry["non_float32_dtypes"]


@requires_fixtures
def test_full_size_matches_manifest_module_hyperparameters(full_size):
    """Classes, conv padding/dilation, pooling, norm eps: what the state dict does not show."""
    _, model, entry = full_size
    modules = {name: m for name, m in model.named_modules() if type(m).__name__ not in ACTIVATION_TYPES}
    assert set(modules) == set(entry["modules"])
    for name, spec in entry["modules"].items():
        assert type(modules[name]).__name__ == spec["type"], name
        for attr, expected in spec.items():
            value = getattr(modules[name], attr) if attr != "type" else spec["type"]
            if attr == "bias" and isinstance(modules[name], ncsn.InstanceNorm2dPlus):
                # The reference passes num_scales (232) as `bias` to the final norm; only its truth counts.
                expected = bool(expected)
            assert (list(value) if isinstance(value, tuple) else value) == expected, (name, attr)


# ---- every variant at a tiny size ----


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_tiny_forward_and_backward(name):
    model = tiny(name).train()
    x, labels = batch()
    x.requires_grad_(True)
    out = model(x, labels)
    assert out.shape == x.shape and out.dtype == torch.float64 and torch.isfinite(out).all()
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for key, p in model.named_parameters():  # every parameter takes part in the output
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_float32_input_keeps_device_and_gives_reference_dtype(name):
    """Built with float32 weights, NCSNv2 divides by the float64 sigmas (float64 out), as the reference."""
    with torch.device("meta"):
        model = VARIANTS[name](nf=4, num_scales=10)
        out = model(torch.zeros(2, 3, 16, 16), torch.tensor([0, 9]))
    assert out.device.type == "meta" and out.shape == (2, 3, 16, 16)
    assert out.dtype == (torch.float32 if name == "ncsn" else torch.float64)


def test_centering_maps_x_to_2x_minus_1():
    plain, centered = tiny("ncsnv2_64"), tiny("ncsnv2_64", centered=True)
    x, labels = batch()
    with torch.no_grad():
        torch.testing.assert_close(plain(x, labels), centered(2 * x - 1, labels), rtol=0, atol=0)


def test_ncsnv2_is_unconditional_up_to_the_sigma_division():
    model = tiny("ncsnv2_128")
    x, _ = batch()
    x = x[:1].expand(10, -1, -1, -1)
    with torch.no_grad():
        scaled = model(x, torch.arange(10)) * model.sigmas[:, None, None, None]
    torch.testing.assert_close(scaled, scaled[:1].expand_as(scaled))


def test_sigmas_are_geometric_and_descending():
    sigmas = geometric_sigmas(0.01, 50.0, 232)
    assert sigmas.dtype == torch.float64 and sigmas.shape == (232,)
    torch.testing.assert_close(sigmas[[0, -1]], torch.tensor([50.0, 0.01], dtype=torch.float64))
    ratios = sigmas[1:] / sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (0.01 / 50.0) ** (1 / 231)))


# ---- blocks ----


def test_instance_norm_plus_keeps_standardized_channel_means():
    """With gamma = alpha = 1 and beta = 0, each output channel has mean m̃_c = (m_c − mean m) / std(m)
    (unbiased std, plus eps) and the instance-normalised spread."""
    norm = ncsn.InstanceNorm2dPlus(5).double()
    with torch.no_grad():
        norm.alpha.fill_(1.0), norm.gamma.fill_(1.0)
    offsets = torch.arange(5.0, dtype=torch.float64)[:, None, None]
    x = 3 * torch.randn(2, 5, 6, 6, dtype=torch.float64) + offsets
    out = norm(x)
    means = x.mean(dim=(2, 3))
    expected = (means - means.mean(1, keepdim=True)) / torch.sqrt(means.var(1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out.mean(dim=(2, 3)), expected)
    spread = out.var(dim=(2, 3), unbiased=False)  # var / (var + eps) per channel
    torch.testing.assert_close(spread, torch.ones_like(spread), rtol=1e-4, atol=0)


def test_conditional_norm_reads_gamma_alpha_beta_rows_of_its_table():
    cond = ncsn.ConditionalInstanceNorm2dPlus(4, num_classes=3).double()
    plain = ncsn.InstanceNorm2dPlus(4).double()
    randomize_(cond), randomize_(plain, seed=1)
    with torch.no_grad():
        cond.embed.weight[2] = torch.cat([plain.gamma, plain.alpha, plain.beta])
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(cond(x, torch.tensor([2, 2])), plain(x))


def test_conv_mean_pool_is_conv_then_2x2_average():
    pool = ncsn.ConvMeanPool(3, 4).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(pool(x), F.avg_pool2d(pool.conv(x), 2))


@pytest.mark.parametrize("resample, dilation, size",
                         [(None, 1, 8), ("down", 1, 4), ("down", 2, 8), (None, 4, 8)])
def test_residual_block_resolution(resample, dilation, size):
    """Only the undilated 'down' block halves the resolution; dilated ones keep it."""
    block = ncsn.ResidualBlock(4, 6, resample=resample, dilation=dilation)
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 6, size, size)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="resample"):
        ncsn.ResidualBlock(4, 4, resample="up")
    with pytest.raises(ValueError, match="nonlinearity"):
        ncsn.NCSN(nf=4, nonlinearity="tanh")
    cfg = ml_collections.ConfigDict({"model": {"name": "ncsnv2_64", "normalization": "GroupNorm"}})
    with pytest.raises(ValueError, match="normalization"):
        create_model(cfg)
