"""The MNIST feature network: trained on the first 5,000 shared MNIST test images, ≥ 97 % on the rest."""
import pytest
import torch
from shared import require_mnist

from score_sde import mnist_classifier
from score_sde.mnist_classifier import MNISTClassifier


def test_trained_classifier_reaches_97_percent_on_the_held_out_half_and_reloads(tmp_path):
    mnist = require_mnist()
    out = tmp_path / "classifier.pth"
    held_out = mnist_classifier.main(["--mnist", str(mnist), "--out", str(out)])
    assert held_out >= 0.97
    images, labels = mnist_classifier.load_mnist(mnist)
    reloaded = mnist_classifier.load_classifier(out)
    assert mnist_classifier.accuracy(reloaded, images[5000:], labels[5000:]) == held_out


def test_features_and_logits_shapes_and_input_check():
    model = MNISTClassifier()
    x = torch.rand(3, 1, 28, 28)
    assert model.features(x).shape == (3, 128) and model(x).shape == (3, 10)
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        model(torch.rand(3, 3, 32, 32))


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m score_sde.mnist_classifier"):
        mnist_classifier.load_classifier(tmp_path / "none.pth")
