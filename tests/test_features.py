"""The feature networks: the FID Inception (random weights here: the real file is not in the repository)
and the MNIST classifier, on uint8 images of any size."""
from unittest import mock

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception

from score_sde import features
from score_sde.mnist_classifier import MNISTClassifier


@pytest.fixture(scope="module")
def random_inception_weights():
    """A state dict of the right names and shapes with random values (torch-fidelity's constructor insists
    on loading weights, so its loading is stubbed out here, in the test only)."""
    torch.manual_seed(0)
    with mock.patch.object(fidelity_inception.torch, "load", lambda *args, **kwargs: {}), \
            mock.patch.object(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict",
                              lambda self, state_dict: None):
        network = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                                 feature_extractor_weights_path="unused")
    return network.state_dict()


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28), (1, 3, 64, 48)])
def test_inception_gives_2048_pool_features_and_1008_probabilities_for_any_size(random_inception_weights,
                                                                                 shape):
    extractor = features.InceptionFeatures(random_inception_weights)
    images = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pool, probabilities = extractor(images)
    assert pool.shape == (shape[0], 2048) and pool.dtype == torch.float64 and torch.isfinite(pool).all()
    assert probabilities.shape == (shape[0], 1008)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(shape[0], dtype=torch.float64))


def test_missing_inception_weights_name_the_file_the_url_and_the_download_flag(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        features.inception_weights(tmp_path / "inception.pth")
    for text in ("inception.pth", features.INCEPTION_URL, "download=True"):
        assert text in str(info.value)


def test_a_file_with_another_checksum_is_refused_before_it_is_read(tmp_path, random_inception_weights):
    path = tmp_path / "weights.pth"
    torch.save(random_inception_weights, path)
    with mock.patch.object(torch, "load") as load, pytest.raises(ValueError, match="SHA-256"):
        features.inception_weights(path)
    load.assert_not_called()


def test_mnist_features_and_uint8_conversion():
    extractor = features.MNISTFeatures(MNISTClassifier())
    images = features.data_to_uint8(torch.rand(4, 1, 28, 28))
    pool, probabilities = extractor(images)
    assert pool.shape == (4, 128) and probabilities.shape == (4, 10)
    with pytest.raises(ValueError, match="uint8"):
        extractor(torch.rand(4, 1, 28, 28))
    x = torch.tensor([-0.1, 0.0, 0.5, 1.0, 1.2])
    assert features.data_to_uint8(x).tolist() == [0, 0, 128, 255, 255]
