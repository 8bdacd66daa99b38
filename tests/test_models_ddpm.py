"""The DDPM U-Net against the original's fixtures and manifest, and its options on a tiny network."""
import json
import math

import ml_collections
import pytest
import torch
from reference import assert_matches_reference, config, fixture, model_and_ema_state_dicts, requires_fixtures

from score_sde.models import create_model
from score_sde.models.ddpm import DDPM, AttnBlock, Downsample, Upsample

FULL_SIZE = "vp/ddpm/cifar10"
ACTIVATION_TYPES = ("SiLU", "ELU", "ReLU", "LeakyReLU", "ModuleList")


def tiny_ddpm(seed=0, **overrides):
    """A small DDPM (32 and 64 channels: GroupNorm always has 32 groups) with random, non-degenerate weights:
    the default init zeroes the last conv of every block, which would hide most of the network."""
    kwargs = dict(image_size=8, num_channels=3, nf=32, ch_mult=(1, 2), num_res_blocks=1,
                  attn_resolutions=(4,), dropout=0.1, num_scales=10)
    model = DDPM(**{**kwargs, **overrides}).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1, generator=gen)
    return model


def inputs(batch=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 8, 8, generator=gen, dtype=torch.float64)
    return x, torch.tensor([0, 500, 999])[:batch]


@requires_fixtures
def test_matches_reference_fixture():
    model = create_model(config("ddpm_vp"))
    model_sd, _ = model_and_ema_state_dicts("ddpm_vp")
    # Our own sigmas table equals the reference's (NumPy's linspace) to a few float64 ulps.
    torch.testing.assert_close(model.sigmas, model_sd["sigmas"], rtol=1e-14, atol=0)
    assert_matches_reference(model, "ddpm_vp")


@pytest.fixture(scope="module")
def full_size():
    """The full-size CIFAR-10 DDPM built without memory (meta device), and its manifest entry."""
    entry = json.loads(fixture("full_manifest.json").read_text())["models"][FULL_SIZE]
    cfg = {k: v for k, v in entry["config"].items() if k != "device"}
    with torch.device("meta"):
        model = create_model(ml_collections.ConfigDict(cfg))
    return model, entry


@requires_fixtures
def test_full_size_matches_manifest_keys_shapes_and_counts(full_size):
    model, entry = full_size
    state = model.state_dict()
    assert list(state) == list(entry["state_dict"])  # same order: the EMA list pairs by position
    assert {k: list(v.shape) for k, v in state.items()} == entry["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"] == 35_218_947
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == entry["num_trainable_parameters"]
    assert state["sigmas"].dtype == torch.float64
    assert [name for name, _ in model.named_buffers()] == entry["buffers"]


@requires_fixtures
def test_full_size_matches_manifest_module_hyperparameters(full_size):
    model, entry = full_size
    modules = {name: m for name, m in model.named_modules() if type(m).__name__ not in ACTIVATION_TYPES}
    assert set(modules) == set(entry["modules"])
    for name, spec in entry["modules"].items():
        if name == "":  # the root lists derived quantities under the original's attribute names
            continue
        assert type(modules[name]).__name__ == spec["type"], name
        for attr, expected in spec.items():
            value = getattr(modules[name], attr) if attr != "type" else spec["type"]
            assert (list(value) if isinstance(value, tuple) else value) == expected, (name, attr)


@requires_fixtures
def test_full_size_forward_needs_no_tensor_values(full_size):
    model, _ = full_size
    # Meta tensors hold no values: any Python branch on a tensor value would raise here.
    x = torch.empty(2, 3, 32, 32, device="meta")
    assert model(x, torch.empty(2, dtype=torch.long, device="meta")).shape == x.shape
    assert model(x, torch.empty(2, device="meta")).shape == x.shape


@pytest.mark.parametrize("conditional", [True, False], ids=["cond", "uncond"])
@pytest.mark.parametrize("resamp_with_conv", [True, False], ids=["convresamp", "plainresamp"])
@pytest.mark.parametrize("centered", [True, False], ids=["centered", "uncentered"])
def test_forward_backward_keeps_float64(conditional, resamp_with_conv, centered):
    model = tiny_ddpm(conditional=conditional, resamp_with_conv=resamp_with_conv, centered=centered).train()
    x, labels = inputs()
    for lab in (labels, 999 * torch.tensor([0.001, 0.5, 1.0], dtype=torch.float64)):
        model.zero_grad()
        out = model(x, lab)
        assert out.shape == x.shape and out.dtype == torch.float64 and out.device == x.device
        out.square().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    resamplers = [m for m in model.modules() if isinstance(m, (Downsample, Upsample))]
    assert len(resamplers) == 2 and all(hasattr(m, "Conv_0") == resamp_with_conv for m in resamplers)


def test_integer_and_float_labels_agree_and_matter():
    model = tiny_ddpm()
    x, labels = inputs()
    with torch.no_grad():
        out = model(x, labels)
        torch.testing.assert_close(model(x, labels.double()), out, rtol=0, atol=0)
        shifted = model(x, labels + 1)
    assert (shifted - out).abs().flatten(1).amax(1).min() > 1e-6


def test_unconditional_has_no_time_parameters_and_ignores_labels():
    model = tiny_ddpm(conditional=False)
    assert not any("Dense" in k for k in model.state_dict())
    x, labels = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, labels), model(x, labels.flip(0)), rtol=0, atol=0)


def test_uncentered_input_is_mapped_to_minus_one_one():
    centered, uncentered = tiny_ddpm(centered=True), tiny_ddpm(centered=False)
    x, labels = inputs()
    with torch.no_grad():
        torch.testing.assert_close(uncentered(x, labels), centered(2 * x - 1, labels), rtol=0, atol=0)


def test_scale_by_sigma_divides_by_sigma_at_the_label_and_keeps_float32():
    plain, scaled = tiny_ddpm(), tiny_ddpm(scale_by_sigma=True)
    plain.float(), scaled.float()
    x, _ = inputs()
    labels = torch.tensor([0, 4, 9])  # indices into the 10 sigmas
    with torch.no_grad():
        out = scaled(x.float(), labels)
        expected = plain(x.float(), labels) / scaled.sigmas[labels].float()[:, None, None, None]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    sigmas = DDPM(image_size=8, nf=32, ch_mult=(1,), sigma_min=0.01, sigma_max=50.0, num_scales=5).sigmas
    torch.testing.assert_close(sigmas, torch.tensor([50.0, 50.0 * 5000 ** -0.25, math.sqrt(50 * 0.01),
                                                     0.01 * 5000 ** 0.25, 0.01], dtype=torch.float64))


def test_resampling_without_conv_is_pooling_and_nearest_neighbour():
    x = torch.randn(2, 32, 6, 4, dtype=torch.float64)
    pooled = Downsample(32, with_conv=False)(x)
    torch.testing.assert_close(pooled, x.reshape(2, 32, 3, 2, 2, 2).mean((3, 5)))
    upsampled = Upsample(32, with_conv=False)(x)
    torch.testing.assert_close(upsampled, x.repeat_interleave(2, 2).repeat_interleave(2, 3), rtol=0, atol=0)
    assert not list(Downsample(32).parameters()) and not list(Upsample(32).parameters())


def test_conv_downsample_pads_right_and_bottom():
    down = Downsample(32, with_conv=True).double()
    x = torch.randn(2, 32, 6, 6, dtype=torch.float64)
    padded = torch.zeros(2, 32, 7, 7, dtype=torch.float64)
    padded[:, :, :6, :6] = x
    expected = torch.nn.functional.conv2d(padded, down.Conv_0.weight, down.Conv_0.bias, stride=2)
    torch.testing.assert_close(down(x), expected)


def test_attention_is_softmax_over_all_pixels():
    block = AttnBlock(32).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3, generator=gen)
    x = torch.randn(2, 32, 3, 5, dtype=torch.float64, generator=gen)
    h = block.GroupNorm_0(x)
    q, k, v = (nin(h).flatten(2) for nin in (block.NIN_0, block.NIN_1, block.NIN_2))
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(32), dim=-1)
    expected = x + block.NIN_3(torch.einsum("bij,bcj->bci", w, v).reshape(x.shape))
    torch.testing.assert_close(block(x), expected)


def test_dropout_only_in_train_mode():
    model = tiny_ddpm(dropout=0.5)
    x, labels = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, labels), model(x, labels), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(x, labels), model(x, labels))


def test_unknown_nonlinearity_raises():
    with pytest.raises(ValueError, match="nonlinearity 'gelu'"):
        DDPM(image_size=8, nf=32, ch_mult=(1,), nonlinearity="gelu")
