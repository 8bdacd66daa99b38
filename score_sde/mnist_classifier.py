"""A small MNIST classifier whose features give "MNIST-FID" and whose class probabilities give an IS.

Trained by this module's script on the first 5,000 images of the MNIST test split (all that
../shared/data/mnist holds) and judged on the other 5,000:

    python -m score_sde.mnist_classifier --mnist ../shared/data/mnist      # 10–30 s on a CPU

Deterministic (seeded, CPU); the weights go to the cache (DEFAULT_PATH), never into the repository.
"""
import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from score_sde.data import read_idx

DEFAULT_PATH = Path("~/.cache/score_sde/mnist_classifier.pth")
TRAIN_ITEMS = 5000  # the first 5,000 train it; the rest judge it


class MNISTClassifier(nn.Module):
    """Two 3×3 conv layers (32, 64 channels; ReLU; 2×2 max-pool each), a 128-unit dense layer, 10 logits.

    Input: images [B, 1, 28, 28] in [0, 1]. `features` is the 128-d penultimate activation (for FID/KID),
    `forward` the logits.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.dense = nn.Linear(64 * 7 * 7, 128)
        self.logits = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"expected MNIST images [B, 1, 28, 28], got {tuple(x.shape)}")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.dense(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))


def load_mnist(folder: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [10000, 1, 28, 28] in [0, 1], labels [10000]) of the MNIST test split's idx files."""
    folder = Path(folder)
    names = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None) for n in names]
    if None in paths:
        raise FileNotFoundError(f"MNIST test split not found: expected {names[0]}[.gz] and {names[1]}[.gz] "
                                f"in {folder}")
    images, labels = (read_idx(p) for p in paths)
    return images[:, None].float() / 255.0, labels.long()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 8, batch_size: int = 32,
                     seed: int = 0) -> MNISTClassifier:
    """Adam (lr 1e-3) on shuffled batches, seeded: the same weights on every run on a CPU."""
    torch.manual_seed(seed)
    model = MNISTClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = torch.cat([model(batch).argmax(1) for batch in images.split(1000)])
    return (predictions == labels).double().mean().item()


def load_classifier(path: str | os.PathLike = DEFAULT_PATH) -> MNISTClassifier:
    """The trained classifier from path (read with weights_only=True); a FileNotFoundError says how to
    make it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no MNIST classifier at {path}: train it with `python -m "
                                f"score_sde.mnist_classifier --mnist DIR --out {path}` (10–30 s on a CPU)")
    model = MNISTClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def main(argv: Sequence[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default="../shared/data/mnist", help="folder of the t10k idx files")
    parser.add_argument("--out", default=str(DEFAULT_PATH), help="where to write the weights")
    args = parser.parse_args(argv)
    images, labels = load_mnist(args.mnist)
    start = time.perf_counter()
    model = train_classifier(images[:TRAIN_ITEMS], labels[:TRAIN_ITEMS])
    seconds = time.perf_counter() - start
    held_out = accuracy(model, images[TRAIN_ITEMS:], labels[TRAIN_ITEMS:])
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"trained in {seconds:.1f} s; accuracy on the held-out {len(images) - TRAIN_ITEMS}: "
          f"{100 * held_out:.2f} % -> {out}")
    return held_out


if __name__ == "__main__":
    main()
