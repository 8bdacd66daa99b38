"""Feature networks for the sample-quality metrics: the standard FID Inception and our MNIST classifier.

A feature network maps uint8 images [B, C, H, W] (values 0–255, as the published numbers use them) to
(features [B, D], class probabilities [B, K]) as float64 CPU tensors: the features feed FID and KID, the
probabilities the Inception Score (score_sde.metrics).

The Inception network is torch-fidelity's port of TensorFlow's 2015-12-05 FID graph (the one the papers'
numbers use): 2,048-d pool features and the 1,008-way logits, images resized to 299×299 as TensorFlow 1
did. Its weights come from a local file; nothing downloads unless asked (`download=True`).
"""
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from score_sde.mnist_classifier import DEFAULT_PATH as DEFAULT_CLASSIFIER_PATH
from score_sde.mnist_classifier import MNISTClassifier, load_classifier

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_SHA256_PREFIX = "6726825d"  # the published file's name carries its SHA-256's first 8 hex digits
DEFAULT_INCEPTION_PATH = Path("~/.cache/score_sde/weights-inception-2015-12-05-6726825d.pth")
# A feature network: uint8 images [B, C, H, W] -> (features [B, D], class probabilities [B, K]).
FeatureFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inception_weights(path: str | os.PathLike = DEFAULT_INCEPTION_PATH, download: bool = False) -> dict:
    """The FID Inception weights at path, checked and read as tensors only (weights_only=True).

    Raises:
        FileNotFoundError: no file at path (and not download): says where to get it.
        ValueError: the file's SHA-256 does not start with the published prefix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        if not download:
            raise FileNotFoundError(
                f"the FID Inception weights are not at {path}. Download {INCEPTION_URL} to that path, "
                "point `inception_weights` to where you keep them, or pass download=True (needs network "
                "access)")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(path), hash_prefix=INCEPTION_SHA256_PREFIX)
    digest = sha256_of(path)
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise ValueError(f"{path} is not the FID Inception weights file: its SHA-256 {digest} does not start "
                         f"with {INCEPTION_SHA256_PREFIX} (that of {INCEPTION_URL})")
    return torch.load(path, map_location="cpu", weights_only=True)


class InceptionFeatures:
    """The FID Inception network: uint8 images [B, 1 or 3, H, W] -> (pool features [B, 2048], probabilities
    [B, 1008]); grey images are repeated to three channels."""

    def __init__(self, state_dict: dict, device: torch.device | str | None = None):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.network = _build_inception(FeatureExtractorInceptionV3, state_dict).to(device or "cpu").eval()
        self.device = device or "cpu"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = _check_uint8(images).to(self.device)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pool, logits = self.network(images)
        return pool.double().cpu(), F.softmax(logits.double(), dim=1).cpu()


class MNISTFeatures:
    """Our MNIST classifier: uint8 images [B, 1, 28, 28] -> (features [B, 128], probabilities [B, 10])."""

    def __init__(self, model: MNISTClassifier | None = None, path: str | os.PathLike | None = None,
                 device: torch.device | str | None = None):
        model = model or load_classifier(DEFAULT_CLASSIFIER_PATH if path is None else path)
        self.model = model.to(device or "cpu").eval()
        self.device = device or "cpu"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _check_uint8(images).to(self.device).float() / 255.0
        features = self.model.features(x)
        return features.double().cpu(), F.softmax(self.model.logits(features).double(), dim=1).cpu()


def _check_uint8(images):
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"feature networks take uint8 images [B, C, H, W] in 0–255, got {images.dtype} "
                         f"{tuple(images.shape)} (data_to_uint8 converts [0, 1] floats)")
    return images


def data_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (data space: the inverse scaler applied) -> uint8 0–255, rounded and clipped, as
    images are saved and as the published statistics were computed."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _build_inception(network_class, state_dict):
    """torch-fidelity's network with our already-checked weights. Its constructor insists on reading a
    file itself; we hand it a temporary copy of the tensors we loaded with weights_only=True, so that
    nothing but those tensors is ever unpickled."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.pth"
        torch.save(state_dict, path)
        return network_class("inception-v3-compat", ["2048", "logits"],
                             feature_extractor_weights_path=str(path))
