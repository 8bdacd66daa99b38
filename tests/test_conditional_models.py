"""Class-conditional score networks (num_classes > 0), class labels through the score function, and the
noise-conditional classifier of classifier guidance."""
import ml_collections
import pytest
import torch
import torch.nn.functional as F

from score_sde.configs import load_config
from score_sde.models import create_model, get_score_fn
from score_sde.models.classifier import noise_classifier
from score_sde.models.ddpm import DDPM
from score_sde.models.mlp import MLP
from score_sde.models.ncsnpp import NCSNpp
from score_sde.models.score_fn import edm_score_fn, noise_labels
from score_sde.sde import VESDE, VPSDE, expand_to

NUM_CLASSES = 3
# Tiny networks of each family, with their x's shape. DDPM's GroupNorm always takes 32 groups: with 32
# channels it removes the per-channel time-embedding bias, so the second level has 64.
NETWORKS = {
    "DDPM": (lambda **kw: DDPM(image_size=8, num_channels=2, nf=32, ch_mult=(1, 2), num_res_blocks=1,
                               attn_resolutions=(), num_scales=10, **kw), (2, 2, 8, 8)),
    "NCSNpp": (lambda **kw: NCSNpp(image_size=8, num_channels=2, nf=8, ch_mult=(1, 2), num_res_blocks=1,
                                   attn_resolutions=(4,), init_scale=1.0, embedding_type="positional",
                                   scale_by_sigma=False, num_scales=10, **kw), (2, 2, 8, 8)),
    "MLP": (lambda **kw: MLP(dim=3, hidden_dim=16, num_layers=2, input_skip=True, **kw), (2, 3)),
}
families = pytest.mark.parametrize("family", list(NETWORKS))


def build(family, seed=0, **kwargs):
    """The family's tiny network in float64 eval mode, its parameters N(0, 0.1²) so that no zero-initialised
    layer hides the rest."""
    torch.manual_seed(seed)
    model = NETWORKS[family][0](**kwargs).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.1, generator=gen)
    return model


def inputs(family):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*NETWORKS[family][1], generator=gen, dtype=torch.float64)
    return x, torch.tensor([3.0, 700.0], dtype=torch.float64)


def conditional_twin(family):
    """(unconditional network, conditional network with the same weights and a zero class embedding)."""
    plain = build(family)
    torch.manual_seed(0)
    conditional = NETWORKS[family][0](num_classes=NUM_CLASSES).double().eval()
    missing, unexpected = conditional.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["class_embed.weight"] and not unexpected
    with torch.no_grad():
        conditional.class_embed.weight.zero_()
    return plain, conditional


@families
def test_num_classes_zero_keeps_the_state_dict(family):
    torch.manual_seed(0)
    before = NETWORKS[family][0]().state_dict()
    torch.manual_seed(0)
    after = NETWORKS[family][0](num_classes=0).state_dict()
    assert list(after) == list(before)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)


@families
def test_conditional_keys_are_the_unconditional_ones_then_the_embedding(family):
    plain = list(NETWORKS[family][0]().state_dict())
    conditional = NETWORKS[family][0](num_classes=NUM_CLASSES).state_dict()
    assert list(conditional) == plain + ["class_embed.weight"]
    weight = conditional["class_embed.weight"]
    assert weight.shape[0] == NUM_CLASSES + 1
    assert 0.5 < weight.std() < 1.5  # N(0, 1), nn.Embedding's default: the classes differ from the start


@families
def test_a_zero_embedding_gives_the_unconditional_network_for_every_class(family):
    """The embedding enters only as an addition to the time embedding: zero, the network is its twin."""
    plain, conditional = conditional_twin(family)
    x, labels = inputs(family)
    with torch.no_grad():
        want = plain(x, labels)
        torch.testing.assert_close(conditional(x, labels), want, rtol=0, atol=0)
        for k in range(NUM_CLASSES + 1):
            out = conditional(x, labels, torch.full((2,), k))
            torch.testing.assert_close(out, want, rtol=0, atol=0)


@families
def test_trained_embedding_separates_classes_and_none_is_the_null_class(family):
    model = build(family, num_classes=NUM_CLASSES)
    x, labels = inputs(family)
    with torch.no_grad():
        outs = [model(x, labels, torch.full((2,), k)) for k in range(NUM_CLASSES + 1)]
        null = model(x, labels)
        mixed = model(x, labels, torch.tensor([0, 2]))
    for i in range(len(outs)):
        for j in range(i):
            assert (outs[i] - outs[j]).abs().max() > 1e-4, (i, j)
    torch.testing.assert_close(null, outs[NUM_CLASSES], rtol=0, atol=0)
    torch.testing.assert_close(mixed, torch.stack([outs[0][0], outs[2][1]]))  # per-sample classes


@families
def test_unconditional_network_refuses_class_labels(family):
    x, labels = inputs(family)
    with pytest.raises(ValueError, match="unconditional"):
        build(family)(x, labels, torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("family", ["DDPM", "NCSNpp"])
def test_class_embedding_needs_the_time_embedding(family):
    with pytest.raises(ValueError, match="conditional=True"):
        NETWORKS[family][0](conditional=False, num_classes=NUM_CLASSES)
    x, labels = inputs(family)
    with pytest.raises(ValueError, match="unconditional"):
        build(family, conditional=False)(x, labels, torch.zeros(2, dtype=torch.long))


def test_negative_num_classes_raises():
    with pytest.raises(ValueError, match="num_classes"):
        MLP(dim=2, num_classes=-1)


def _config(name, num_classes):
    config = load_config(name)
    config.model.num_classes = num_classes
    return config


@pytest.mark.parametrize("name", ["ve_ncsn", "ve_ncsnv2"])
def test_ncsn_families_refuse_num_classes(name):
    with pytest.raises(ValueError, match="NCSN/NCSNv2 are unconditional"):
        create_model(_config(name, 10))


@pytest.mark.parametrize("name", ["vp_ddpm", "vp_ddpmpp_continuous", "vp_toy"])
def test_create_model_passes_num_classes(name):
    with torch.device("meta"):  # full size, built without memory
        assert create_model(_config(name, 10)).class_embed.num_embeddings == 11
        assert create_model(load_config(name)).class_embed is None  # configs without the knob


class LabelNet(torch.nn.Module):
    """Returns x·(1 + labels) + class_labels, broadcast; accepts no class labels like the NCSN networks."""

    def forward(self, x, labels, class_labels=None):
        shift = 0 if class_labels is None else expand_to(class_labels.to(x.dtype), x)
        return x * expand_to(1 + labels.to(x.dtype), x) + shift


class PlainNet(torch.nn.Module):
    def forward(self, x, labels):
        return x * expand_to(1 + labels.to(x.dtype), x)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_score_fn_passes_class_labels(sde):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.6, 1.0], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    score_fn = get_score_fn(sde, LabelNet())
    plain = get_score_fn(sde, PlainNet())(x, t)
    torch.testing.assert_close(score_fn(x, t), plain, rtol=0, atol=0)
    torch.testing.assert_close(score_fn(x, t, None), plain, rtol=0, atol=0)
    m, s = sde.marginal_coefficients(t)
    shift = expand_to(y.double(), x)
    network_shift = -shift / expand_to(s, x) if isinstance(sde, VPSDE) else shift  # noise prediction or score
    torch.testing.assert_close(score_fn(x, t, y), plain + network_shift)
    # EDM preconditioning passes them too (the shift reaches the score as m·c_out·y / s², c_out = σ·σ_d /
    # √(σ² + σ_d²), σ = s/m); its unconditional call needs no class_labels argument.
    edm_plain = get_score_fn(sde, PlainNet(), preconditioning="edm")(x, t)
    torch.testing.assert_close(get_score_fn(sde, LabelNet(), preconditioning="edm")(x, t), edm_plain,
                               rtol=0, atol=0)
    sigma, sigma_data = s / m, 0.5
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    edm_y = edm_score_fn(sde, LabelNet(), sigma_data)(x, t, y)
    torch.testing.assert_close(edm_y, edm_plain + expand_to(m * c_out / s**2, x) * shift)


def test_unconditional_score_fn_is_bit_identical_to_the_formula():
    # The original's VP continuous convention, written out: score = −model(x, 999·t) / s(t).
    sde, model = VPSDE(), build("MLP")
    x, _ = inputs("MLP")
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    with torch.no_grad():
        want = -model(x, noise_labels(sde, t)) / expand_to(sde.marginal_coefficients(t)[1], x)
        torch.testing.assert_close(get_score_fn(sde, model)(x, t), want, rtol=0, atol=0)


def test_conditional_score_fn_uses_the_class():
    sde, model = VPSDE(), build("MLP", num_classes=NUM_CLASSES)
    x, _ = inputs("MLP")
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    y = torch.tensor([2, 0])
    score_fn = get_score_fn(sde, model)
    with torch.no_grad():
        want = -model(x, noise_labels(sde, t), y) / expand_to(sde.marginal_coefficients(t)[1], x)
        torch.testing.assert_close(score_fn(x, t, y), want, rtol=0, atol=0)
        torch.testing.assert_close(score_fn(x, t), score_fn(x, t, torch.full((2,), NUM_CLASSES)), rtol=0,
                                   atol=0)


# ---- the noise-conditional classifier ----

SHAPES = [(2, 8, 8), (1, 12, 12), (3,)]
shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))


def classifier(shape, T=1.0):
    torch.manual_seed(0)
    model = noise_classifier(shape, num_classes=5, nf=8, T=T).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the residual blocks start as the identity: randomise to see every path
        for p in model.parameters():
            p.normal_(0.0, 0.2, generator=gen)
    return model


def classifier_inputs(shape, batch=4):
    gen = torch.Generator().manual_seed(2)
    return torch.randn(batch, *shape, generator=gen, dtype=torch.float64)


@shapes
def test_classifier_logits_shape_and_time_dependence(shape):
    model, x = classifier(shape), classifier_inputs(shape)
    early, late = model(x, torch.full((4,), 0.05, dtype=torch.float64)), model(x, torch.ones(4).double())
    assert early.shape == (4, 5) and early.dtype == torch.float64 and torch.isfinite(early).all()
    assert (early - late).abs().max() > 1e-3
    # t is embedded as 999·t/T: the same network with T = 2 sees t = 2 as T = 1 sees t = 1.
    twin = classifier(shape, T=2.0)
    torch.testing.assert_close(twin(x, 2 * torch.ones(4).double()), late)
    single = model(x[1:2], torch.ones(1).double())
    torch.testing.assert_close(single, late[1:2])  # samples are independent


@shapes
def test_classifier_gradient_flows_to_x(shape):
    # Classifier guidance adds ∇ₓ log p_t(y | x) to the score.
    model = classifier(shape)
    x = classifier_inputs(shape).requires_grad_(True)
    y = torch.tensor([0, 1, 4, 2])
    log_prob = F.log_softmax(model(x, torch.full((4,), 0.5, dtype=torch.float64)), dim=1)
    (grad,) = torch.autograd.grad(log_prob[torch.arange(4), y].sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    assert (grad.flatten(1).abs().sum(1) > 0).all()


def test_classifier_trains_in_a_few_steps():
    # Labels that are a function of x (the sign of its mean), whatever t: a few Adam steps lower the loss.
    torch.manual_seed(0)
    model = noise_classifier((1, 8, 8), num_classes=2, nf=8)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=gen) + torch.randn(64, 1, 1, 1, generator=gen)
    y, t = (x.mean(dim=(1, 2, 3)) > 0).long(), torch.rand(64, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x, t), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_classifier_rejects_other_shapes_and_no_classes():
    with pytest.raises(ValueError, match="images"):
        noise_classifier((4, 4), num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        noise_classifier((2,), num_classes=0)


def test_ml_collections_config_without_num_classes_is_unconditional():
    config = ml_collections.ConfigDict({"model": {"name": "mlp", "nf": 8}, "data": {"dim": 2}})
    assert create_model(config).class_embed is None
