"""Class-conditional generation through main.py, as users run it (issue 18): a class-conditional network
trained with class dropout and sampled with classifier-free guidance, and the noise-conditional classifier
trained by --mode train_classifier (resumable) and used for classifier guidance; with their errors."""
import json

import numpy as np
import pytest
import torch

from tests.cli import run

CONDITIONAL = ["--config.model.num_classes=2", "--config.training.n_iters=20"]
CLASSIFIER = ["--config.classifier.n_iters=20", "--config.classifier.batch_size=64"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("conditional")
    run("train", workdir, *CONDITIONAL)
    return workdir


def test_a_class_conditional_network_trains_and_samples_each_class_with_guidance(conditional_run):
    weights = torch.load(conditional_run / "checkpoints" / "checkpoint_1.pth", weights_only=True)["model"]
    assert weights["class_embed.weight"].shape == (3, 32)  # two classes and the null class
    run("sample", conditional_run, *CONDITIONAL, "--config.sampling.class_label=all",
        "--config.sampling.guidance=1.0", "--config.eval.batch_size=10")
    saved = np.load(conditional_run / "samples" / "samples.npz")
    assert saved["labels"].tolist() == [0] * 5 + [1] * 5
    assert saved["samples"].shape == (10, 2) and np.isfinite(saved["samples"]).all()
    produced_by = json.loads((conditional_run / "samples" / "samples.json").read_text())["produced_by"]
    assert produced_by["sampler"]["guidance"] == 1.0 and produced_by["sampler"]["class_label"] == "all"


def test_guidance_of_an_unconditional_network_is_refused_before_sampling(tmp_path):
    result = run("sample", tmp_path, "--config.sampling.class_label=1", "--config.sampling.guidance=1.0",
                 check=False)
    assert result.returncode != 0
    needs = "sampling.guidance=1.0: classifier-free guidance needs a class-conditional network"
    assert needs in result.stderr


def test_the_classifier_trains_resumes_and_guides_an_unconditional_network(tmp_path):
    run("train", tmp_path, "--config.training.n_iters=20")
    first = run("train_classifier", tmp_path, *CLASSIFIER)
    folder = tmp_path / "classifier"
    assert (folder / "checkpoints-meta" / "checkpoint.pth").is_file()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model"]["name"] == "noise_classifier" and saved["model"]["num_classes"] == 2
    accuracy = json.loads((folder / "accuracy.json").read_text())
    assert accuracy["step"] == 20 and set(accuracy["accuracy_at_t"]) == {"0.01", "0.25", "0.5", "0.75", "1"}
    assert "held-out accuracy" in first.stdout
    resumed = run("train_classifier", tmp_path, "--config.classifier.n_iters=30",
                  "--config.classifier.batch_size=64")
    assert "resuming from step 20" in resumed.stdout
    assert json.loads((folder / "accuracy.json").read_text())["step"] == 30
    run("sample", tmp_path, "--config.sampling.class_label=0", f"--config.sampling.classifier={tmp_path}",
        "--config.eval.batch_size=8")
    saved = np.load(tmp_path / "samples" / "samples.npz")
    assert saved["labels"].tolist() == [0] * 8 and np.isfinite(saved["samples"]).all()
    # a classifier trained for another SDE is refused before sampling, naming the knob
    other = run("sample", tmp_path, "--config.sampling.class_label=0",
                f"--config.sampling.classifier={folder}", "--config.model.beta_max=10.0", check=False)
    assert other.returncode != 0
    assert "trained with model.beta_max=20.0, the model samples with 10.0" in other.stderr


def test_train_classifier_refuses_data_without_labels(tmp_path):
    result = run("train_classifier", tmp_path, "--config.data.dataset=checkerboard", check=False)
    assert result.returncode != 0 and "carries no class labels" in result.stderr
    assert not (tmp_path / "classifier").exists()


def test_load_samples_a_class_conditional_network_by_class(conditional_run):
    import score_sde

    model = score_sde.load(conditional_run, device="cpu")
    assert model.config.model.num_classes == 2
    labels = torch.tensor([0, 0, 1, 1])
    gen = torch.Generator().manual_seed(0)
    x = model.sample(4, method="fast", steps=4, labels=labels, guidance=1.0, generator=gen)
    assert x.shape == (4, 2) and torch.isfinite(x).all()
    # w = 0 is the conditional score itself: the same as the network called with the labels
    direct, _ = score_sde.fast_sample(model.sde, lambda x, t: model.score_fn(x, t, labels), (4, 2), steps=4,
                                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.sample(4, method="fast", steps=4, labels=labels,
                                    generator=torch.Generator().manual_seed(0)), direct)


def test_eval_reports_the_accuracy_of_each_requested_class(conditional_run):
    run("eval", conditional_run, *CONDITIONAL, "--config.sampling.class_label=all",
        "--config.sampling.guidance=2.0", "--config.eval.enable_sampling=True",
        "--config.eval.enable_loss=True", "--config.eval.num_samples=200", "--config.eval.begin_ckpt=1",
        "--config.eval.end_ckpt=1")
    results = json.loads((conditional_run / "eval" / "results.json").read_text())["checkpoint_1"]
    samples = results["samples"]
    assert set(samples["per_class_accuracy"]) == {"0", "1"}
    accuracies = list(samples["per_class_accuracy"].values())
    assert all(0 <= a <= 1 for a in accuracies)
    assert samples["class_accuracy"] == pytest.approx(sum(accuracies) / 2)  # 100 samples of each class
    assert np.isfinite(results["test_loss"])
