"""NCSN++ / DDPM++ and FIR resampling: the reference fixtures, the full-size manifest, the FIR operators
against direct definitions, and every option value at tiny size."""
import json

import ml_collections
import pytest
import torch
import torch.nn.functional as F
from reference import (
    assert_matches_reference,
    config,
    fixture,
    io,
    model_and_ema_state_dicts,
    requires_fixtures,
)

from score_sde.models import create_model
from score_sde.models.fir import (
    Conv2d,
    conv_downsample_2d,
    downsample_2d,
    naive_downsample_2d,
    naive_upsample_2d,
    setup_kernel,
    upfirdn2d,
    upsample_2d,
    upsample_conv_2d,
)
from score_sde.models.layers import ACTIVATIONS, geometric_sigmas
from score_sde.models.ncsnpp import NCSNpp

# ---- reference fixtures ----

FIXTURE_NAMES = ["ncsnpp_ve", "ncsnpp_ve_outskip", "ncsnpp_ve_discrete", "ddpmpp_vp", "ncsnpp_extra_paths"]


@requires_fixtures
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_matches_reference_outputs(name):
    assert_matches_reference(create_model(config(name)), name)


@requires_fixtures
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_ema_order_and_output_dtype_match_reference(name):
    model, data = create_model(config(name)), io(name)
    trainable = [key for key, p in model.named_parameters() if p.requires_grad]
    assert trainable == data["ema_param_keys"]
    model_sd, _ = model_and_ema_state_dicts(name)
    torch.testing.assert_close(model.sigmas, model_sd["sigmas"], rtol=1e-15, atol=0)
    model.load_state_dict(model_sd, strict=True)
    with torch.no_grad():
        out = model.eval()(data["x"], data["labels"])
    assert out.dtype == data["out_model"].dtype  # float64 where the positional model divides by `sigmas`


# ---- full-size manifest: keys, shapes, order, counts and module hyper-parameters ----

NCSNPP_MANIFEST = [
    "vp/cifar10_ddpmpp_continuous",
    "vp/cifar10_ddpmpp_deep_continuous",
    "ve/cifar10_ncsnpp_continuous",
    "ve/cifar10_ncsnpp_deep_continuous",
    "subvp/cifar10_ddpmpp_continuous",
    "ve/celebahq_256_ncsnpp_continuous",
    "ve/ffhq_ncsnpp_continuous",
]


def _manifest_entry(name):
    return json.loads(fixture("full_manifest.json").read_text())["models"][name]


def _plain(value):
    """Tuples as lists, as JSON stores them."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


@requires_fixtures
@pytest.mark.parametrize("name", NCSNPP_MANIFEST)
def test_full_size_structure_matches_manifest(name):
    entry = _manifest_entry(name)
    cfg = {k: v for k, v in entry["config"].items() if k != "device"}
    with torch.device("meta"):
        model = create_model(ml_collections.ConfigDict(cfg))
    state = model.state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == list(entry["state_dict"].items())
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == entry["num_trainable_parameters"]
    assert [k for k, p in model.named_parameters() if not p.requires_grad] == entry["frozen_parameters"]
    # Our non-persistent buffers (FIR taps kept on the device) are in no checkpoint: compare the saved ones.
    assert [k for k, _ in model.named_buffers() if k in state] == entry["buffers"]
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in state.items() if v.dtype != torch.float32} == \
        entry["non_float32_dtypes"]
    skipped = (torch.nn.ModuleList, *(type(make()) for make in ACTIVATIONS.values()))  # not in the manifest
    ours = {path: m for path, m in model.named_modules() if not isinstance(m, skipped)}
    assert list(ours) == list(entry["modules"])
    for path, spec in entry["modules"].items():
        assert type(ours[path]).__name__ == spec["type"], path
        for attr, value in spec.items():
            if attr != "type":
                assert _plain(getattr(ours[path], attr)) == value, (path, attr)


# ---- FIR resampling against direct definitions ----

def slow_upfirdn2d(x, kernel, up, down, pad):
    """upfirdn2d by its definition, one output pixel at a time: zero insertion, padding (negative crops),
    a true convolution with `kernel` over the valid region, every down-th sample."""
    batch, channels, height, width = x.shape
    kh, kw = kernel.shape
    padded_h, padded_w = height * up + sum(pad), width * up + sum(pad)
    v = torch.zeros(batch, channels, padded_h, padded_w, dtype=x.dtype)
    for i in range(padded_h):
        for j in range(padded_w):
            a, b = i - pad[0], j - pad[0]  # index into the zero-inserted image
            if a % up == 0 and b % up == 0 and 0 <= a // up < height and 0 <= b // up < width:
                v[:, :, i, j] = x[:, :, a // up, b // up]
    out_h, out_w = (padded_h - kh) // down + 1, (padded_w - kw) // down + 1
    out = torch.zeros(batch, channels, out_h, out_w, dtype=x.dtype)
    for y in range(out.shape[2]):
        for z in range(out.shape[3]):
            for a in range(kh):
                for b in range(kw):
                    out[:, :, y, z] += v[:, :, y * down + a, z * down + b] * kernel[kh - 1 - a, kw - 1 - b]
    return out


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("up, down, pad", [(1, 1, (0, 0)), (2, 1, (2, 1)), (1, 2, (1, 1)), (3, 1, (1, -1)),
                                           (1, 3, (-1, 2)), (2, 2, (1, 2))])
def test_upfirdn2d_matches_its_definition(up, down, pad):
    x, kernel = _randn(2, 2, 5, 7), _randn(3, 4, seed=1)  # non-square, asymmetric: catches flips and axes
    torch.testing.assert_close(upfirdn2d(x, kernel, up, down, pad), slow_upfirdn2d(x, kernel, up, down, pad))


def _along_both_axes(fn, x):
    """Apply a 1-D operator on the last axis to both spatial axes of [B, C, H, W]."""
    return fn(fn(x).transpose(-1, -2)).transpose(-1, -2)


def test_fir_kernel_1331_resampling_in_closed_form():
    # Per axis, [1, 3, 3, 1] upsampling is out[2m] = (x[m-1] + 3x[m]) / 4, out[2m+1] = (3x[m] + x[m+1]) / 4
    # and downsampling out[m] = (x[2m-1] + 3x[2m] + 3x[2m+1] + x[2m+2]) / 8, with zeros outside the image.
    def up_1d(x):
        p = F.pad(x, (1, 1))
        even, odd = (p[..., :-2] + 3 * p[..., 1:-1]) / 4, (3 * p[..., 1:-1] + p[..., 2:]) / 4
        return torch.stack([even, odd], dim=-1).flatten(-2)

    def down_1d(x):
        p = F.pad(x, (1, 1))
        return (p[..., 0:-3:2] + 3 * p[..., 1:-2:2] + 3 * p[..., 2:-1:2] + p[..., 3::2]) / 8

    x = _randn(2, 3, 6, 8)
    torch.testing.assert_close(upsample_2d(x, [1, 3, 3, 1]), _along_both_axes(up_1d, x))
    torch.testing.assert_close(downsample_2d(x, [1, 3, 3, 1]), _along_both_axes(down_1d, x))


@pytest.mark.parametrize("k", [[1, 3, 3, 1], [1, 1], [1, 2, 3, 3, 2, 1]], ids=str)
def test_fir_upsampling_is_factor_squared_times_adjoint_of_downsampling(k):
    # For symmetric kernels of even p = len(k) - factor, upsample_2d = factor² · downsample_2d^T exactly.
    x, y = _randn(1, 2, 8, 12), _randn(1, 2, 4, 6, seed=1)
    torch.testing.assert_close((upsample_2d(y, k) * x).sum(), 4 * (y * downsample_2d(x, k)).sum())


@pytest.mark.parametrize("k", [[1, 3, 3, 1], [1, 2, 1]], ids=str)
def test_fir_resampling_keeps_constants_away_from_borders(k):
    x = torch.full((1, 1, 12, 12), 2.5, dtype=torch.float64)
    torch.testing.assert_close(upsample_2d(x, k, gain=2)[..., 3:-3, 3:-3], torch.full((1, 1, 18, 18), 5.0,
                                                                                        dtype=torch.float64))
    torch.testing.assert_close(downsample_2d(x, k)[..., 2:-2, 2:-2], torch.full((1, 1, 2, 2), 2.5,
                                                                                 dtype=torch.float64))


@pytest.mark.parametrize("k", [[1, 3, 3, 1], [1, 2, 1], [1, 1]], ids=str)
def test_fused_resampling_convs_equal_resample_then_conv(k):
    # With a zero border wider than the filters reach, no border effect remains, so the fused ops must
    # equal the two-step ones at every pixel: this pins the original's paddings and the weight flip.
    x = F.pad(_randn(2, 3, 4, 6), (4, 4, 4, 4))
    w = _randn(5, 3, 3, 3, seed=1)
    torch.testing.assert_close(upsample_conv_2d(x, w, k), F.conv2d(upsample_2d(x, k), w, padding=1))
    torch.testing.assert_close(conv_downsample_2d(x, w, k), downsample_2d(F.conv2d(x, w, padding=1), k))
    assert upsample_conv_2d(x[..., 3:, 2:], w, k).shape == (2, 5, 18, 24)
    assert conv_downsample_2d(x[..., 2:, 4:], w, k).shape == (2, 5, 5, 5)


def test_fir_conv2d_module():
    torch.manual_seed(0)
    conv, x = Conv2d(3, 5, kernel=3).double(), _randn(2, 3, 8, 6)
    with torch.no_grad():
        conv.bias.normal_()
    bias = conv.bias[:, None, None]
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, padding=1) + bias)
    conv.up = True
    torch.testing.assert_close(conv(x), upsample_conv_2d(x, conv.weight, (1, 3, 3, 1)) + bias)
    conv.up, conv.down = False, True
    torch.testing.assert_close(conv(x), conv_downsample_2d(x, conv.weight, (1, 3, 3, 1)) + bias)
    with pytest.raises(ValueError, match="up and down"):
        Conv2d(3, 5, kernel=3, up=True, down=True)


def test_naive_resampling_and_kernel_setup():
    x = _randn(2, 3, 4, 6)
    torch.testing.assert_close(naive_upsample_2d(x), x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    torch.testing.assert_close(naive_downsample_2d(x), x.reshape(2, 3, 2, 2, 3, 2).mean(dim=(3, 5)))
    torch.testing.assert_close(setup_kernel([1, 3, 3, 1]) * 64, torch.outer(*2 * [torch.tensor([1.0, 3, 3, 1],
                                                                                             dtype=torch.float64)]))
    torch.testing.assert_close(geometric_sigmas(0.01, 50, 5), torch.logspace(torch.log10(torch.tensor(50.0)),
                                                                             -2, 5, dtype=torch.float64))


# ---- every option at tiny size ----

TINY = dict(image_size=8, num_channels=3, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
            dropout=0.1, init_scale=1.0, num_scales=100)

OPTIONS = {  # the reference crashes on the ones marked *: they have no fixture
    "ncsnpp_defaults": {},
    "ddpmpp": dict(embedding_type="positional", fir=False, progressive_input="none", scale_by_sigma=False,
                   centered=True),
    "positional_scale_by_sigma": dict(embedding_type="positional"),
    "output_skip_input_skip": dict(progressive="output_skip", progressive_input="input_skip"),
    "output_skip_no_fir*": dict(progressive="output_skip", fir=False),
    "residual*": dict(progressive="residual"),
    "residual_no_fir*": dict(progressive="residual", progressive_input="residual", fir=False),
    "ddpm_blocks_fir*": dict(resblock_type="ddpm"),
    "ddpm_blocks_no_fir*": dict(resblock_type="ddpm", fir=False, progressive_input="input_skip"),
    "ddpm_blocks_no_conv*": dict(resblock_type="ddpm", resamp_with_conv=False, progressive="residual"),
    "ddpm_blocks_fir_no_conv*": dict(resblock_type="ddpm", fir=False, resamp_with_conv=False),
    "input_skip_cat": dict(progressive_input="input_skip", progressive_combine="cat", fir=False),
    "input_skip_cat_fir": dict(progressive_input="input_skip", progressive_combine="cat"),
    "no_skip_rescale": dict(skip_rescale=False, progressive="residual", resblock_type="ddpm"),
    "kernel_121": dict(fir_kernel=(1, 2, 1), progressive="residual", progressive_input="input_skip"),
    "kernel_121_output_skip": dict(fir_kernel=(1, 2, 1), progressive="output_skip", resblock_type="ddpm"),
    "unconditional": dict(conditional=False),
    "unconditional_positional": dict(conditional=False, embedding_type="positional"),
    "elu_init_scale_0": dict(nonlinearity="elu", init_scale=0.0, dropout=0.0),
}


def _labels(model, batch):
    """σ for the Fourier embedding, noise-level indices when dividing by sigmas, else 999·t."""
    if model.embedding_type == "fourier":
        return torch.tensor([0.02, 1.0, 40.0])[:batch]
    if model.scale_by_sigma:
        return torch.tensor([0, 50, 99])[:batch]
    return torch.tensor([0.999, 500.5, 999.0])[:batch]


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_every_option_runs_forward_and_backward(options):
    torch.manual_seed(0)
    model = NCSNpp(**{**TINY, **options}).train()
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    out = model(x, _labels(model, 3))
    scaled_positional = model.scale_by_sigma and model.embedding_type == "positional"
    assert out.shape == x.shape and out.dtype == (torch.float64 if scaled_positional else torch.float32)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for key, p in model.named_parameters():
        if p.requires_grad:  # every layer built is used; only the unconditional blocks' Dense_0 is idle
            assert (p.grad is None) == (not model.conditional and "Dense_0" in key), key
            assert p.grad is None or torch.isfinite(p.grad).all(), key

    model.eval().double()
    labels = _labels(model, 3)
    labels = labels.double() if labels.is_floating_point() else labels
    with torch.no_grad():
        out64 = model(x.detach().double(), labels)
        single = model(x.detach()[1:2].double(), labels[1:2])
    assert out64.dtype == torch.float64 and torch.isfinite(out64).all()
    torch.testing.assert_close(single, out64[1:2])  # samples are independent: any batch size


BAD_OPTIONS = [dict(progressive="sideways"), dict(progressive_input="output_skip"), dict(resblock_type="vgg"),
               dict(embedding_type="learned"), dict(progressive_combine="max"), dict(nonlinearity="gelu"),
               dict(conv_size=5)]


@pytest.mark.parametrize("bad", BAD_OPTIONS, ids=lambda d: next(iter(d)))
def test_unknown_options_raise(bad):
    with pytest.raises(ValueError):
        NCSNpp(**{**TINY, **bad})
