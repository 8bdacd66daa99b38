"""shared.require_shared: a file missing from ../shared skips a test on a bare clone but fails it under
CI=true (CI has ../shared, so a skip there would hide a test that never ran)."""
import inspect
from pathlib import Path

import pytest
import shared
from reference import requires_fixtures


def test_an_existing_path_is_returned_whatever_ci_says(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert shared.require_shared(tmp_path) == tmp_path
    assert shared.require_shared(str(tmp_path)) == tmp_path  # a str in, a Path out


@pytest.mark.parametrize("ci", [None, "false", "1"], ids=["unset", "false", "1"])
def test_a_missing_path_skips_outside_ci_naming_it(tmp_path, monkeypatch, ci):
    """Only CI=true, exactly as `os.environ.get("CI") == "true"`, turns the skip into a failure."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    missing = tmp_path / "data" / "mnist"
    with pytest.raises(pytest.skip.Exception) as info:
        shared.require_shared(missing)
    message = str(info.value)
    assert str(missing) in message and "../shared" in message and "\n" not in message


def test_a_missing_path_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    missing = tmp_path / "fixtures" / "reference_models"
    with pytest.raises(pytest.fail.Exception) as info:
        shared.require_shared(missing)
    message = str(info.value)
    assert str(missing) in message and "CI=true" in message and "\n" not in message


def test_the_named_folders_lie_beside_the_repository():
    repo = Path(__file__).resolve().parents[1]
    assert shared.SHARED == repo.parent / "shared"
    assert shared.MNIST_DIR == shared.SHARED / "data" / "mnist"
    assert shared.REFERENCE_MODELS == shared.SHARED / "fixtures" / "reference_models"


def test_require_mnist_checks_both_test_split_files(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(shared, "MNIST_DIR", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").touch()
    with pytest.raises(pytest.skip.Exception, match="t10k-labels-idx1-ubyte.gz"):
        shared.require_mnist()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").touch()
    assert shared.require_mnist() == tmp_path


def test_requires_fixtures_checks_in_the_test_body_and_keeps_its_signature(tmp_path, monkeypatch):
    """The decorator runs the check when the test is called (so CI=true reports a failure, not a setup
    error) and leaves pytest the wrapped test's arguments and marks."""
    calls = []

    @requires_fixtures
    @pytest.mark.parametrize("name", ["a"])
    def probe(name, tmp_path):
        calls.append(name)

    assert list(inspect.signature(probe).parameters) == ["name", "tmp_path"]
    assert [mark.name for mark in probe.pytestmark] == ["parametrize"]
    monkeypatch.setattr(shared, "REFERENCE_MODELS", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="absent"):
        probe("a", tmp_path)
    monkeypatch.setattr(shared, "REFERENCE_MODELS", tmp_path)
    probe("a", tmp_path)
    assert calls == ["a"]
