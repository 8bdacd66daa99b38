"""The files beside the repository in ../shared (reference-network fixtures, MNIST's test split): too large or
not ours to commit, so a bare clone lacks them. Its tests then skip, naming what is missing; under CI
(CI=true) the same absence fails them, so that CI, which has ../shared, never passes by skipping them."""
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE_MODELS = SHARED / "fixtures" / "reference_models"
MNIST_DIR = SHARED / "data" / "mnist"
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def require_shared(path: str | os.PathLike) -> Path:
    """`path` (a file or folder under ../shared) when it exists; else skip the calling test, or, with
    CI=true, fail it: one line naming what is missing and where CI has it.

    Call it at test time (in a test or a fixture), never at import: raised while a module is collected, a
    skip or failure is a collection error of the whole module instead of a report on the tests that need it.
    """
    path = Path(path)
    if path.exists():
        return path
    message = f"{path} not found: CI has it under ../shared ({SHARED}), beside the repository"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing shared file fails, never skips)", pytrace=False)
    pytest.skip(message)


def require_reference_models() -> Path:
    """The reference-network fixtures folder (see its README)."""
    return require_shared(REFERENCE_MODELS)


def require_mnist() -> Path:
    """The folder holding MNIST's gzipped test split (t10k-images and t10k-labels), both files checked."""
    for name in MNIST_TEST_FILES:
        require_shared(MNIST_DIR / name)
    return MNIST_DIR
