"""The data kinds (score_sde/data_kind.py): what the edge asks of toy points and images, on exact answers."""
import math

import pytest
import torch

import configs
from score_sde.api import data_kind, sample_shape
from score_sde.data import toy_batch
from score_sde.data_kind import Images, ToyPoints
from score_sde.likelihood import bits_per_dim
from score_sde.sde import VPSDE


def test_the_config_picks_the_kind_and_its_shape():
    toy = configs.load_config("vp_toy")
    assert data_kind(toy) == ToyPoints(toy.data.dataset, toy.data.get("dim", 2))
    assert sample_shape(toy, 5) == (5, toy.data.get("dim", 2))
    image = configs.load_config("vp_ddpm")
    d = image.data
    assert data_kind(image) == Images(d.num_channels, d.image_size, d.centered)
    assert sample_shape(image, 3) == (3, d.num_channels, d.image_size, d.image_size)


@pytest.mark.parametrize("centered, model_range", [(True, (-1.0, 1.0)), (False, (0.0, 1.0))])
def test_images_map_data_space_to_the_networks_range_and_back(centered, model_range):
    kind = Images(1, 4, centered)
    x = torch.tensor([0.0, 0.25, 1.0])
    model = kind.to_model_space(x)
    assert model[0].item() == model_range[0] and model[-1].item() == model_range[1]
    assert torch.equal(kind.to_data_space(model), x)


def test_toy_points_are_used_as_drawn():
    kind = ToyPoints("gaussian_mixture")
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    assert kind.to_model_space(x) is x and kind.to_data_space(x) is x
    logp = x[:, 0]
    assert kind.from_log_likelihood(logp, x) is logp
    assert kind.unit == "nats" and Images(1, 4, True).unit == "bits/dim"


def test_bits_per_dim_of_a_uniform_density_on_the_pixel_cube_is_eight():
    """u uniform on [0, 1]^D has log p = 0; centered, x = 2u − 1 has log p = −D log 2. Both are exactly 8
    bits/dim of the 8-bit pixels: the kind applies the scaler's Jacobian."""
    x = torch.zeros(2, 1, 4, 4)
    d = x[0].numel()
    assert torch.allclose(Images(1, 4, False).from_log_likelihood(torch.zeros(2), x), torch.full((2,), 8.0))
    centered = Images(1, 4, True).from_log_likelihood(torch.full((2,), -d * math.log(2)), x)
    assert torch.allclose(centered, torch.full((2,), 8.0), atol=1e-12)
    assert torch.equal(centered, bits_per_dim(torch.full((2,), -d * math.log(2)), x.shape, centered=True))


def test_toy_quality_is_the_exact_log_density_and_data_scores_as_data():
    kind = ToyPoints("gaussian_mixture")
    exact = kind.density()
    points = toy_batch("gaussian_mixture", 4000, torch.Generator().manual_seed(3))
    quality = kind.quality(points, seed=0)
    assert quality["samples_nats"] == pytest.approx(exact.log_prob(points.double()).mean().item())
    assert quality["samples_nats"] == pytest.approx(quality["data_nats"], abs=0.1)  # both are data
    far = kind.quality(points + 10.0, seed=0)
    assert far["samples_nats"] < quality["data_nats"] - 10  # samples off the data score far worse
    assert kind.rounds_quality(dict(samples=points.numpy()), None, seed=0) == quality


def test_a_toy_without_a_known_density_reports_no_quality():
    kind = ToyPoints("two_moons")
    assert kind.density() is None
    assert kind.quality(torch.zeros(3, 2), seed=0) == {}


def test_the_image_bound_is_the_pixel_bound_in_bits_per_dim():
    """Images.bound is discrete_bound's nats over D ln 2 with the kind's pixel range; on one batch and one
    seed the two agree to the last digit."""
    from score_sde.bound import discrete_bound
    sde, x = VPSDE(), torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def score_fn(x, t):
        return -x / sde.marginal_prob(torch.zeros_like(x), t)[1].reshape(-1, 1, 1, 1) ** 2

    bits = Images(1, 2, True).bound(sde, score_fn, x, 2, torch.Generator().manual_seed(5))
    nats = discrete_bound(sde, score_fn, x, num_times=2, low=-1.0, high=1.0,
                          generator=torch.Generator().manual_seed(5))
    assert torch.equal(bits, nats / (4 * math.log(2)))
