"""--mode stats and --mode eval: reference statistics by the published conventions, sample rounds that
survive an interruption, clear errors."""
import json

import numpy as np
import pytest
import torch

import configs
import run_lib
from score_sde import data, evaluation, metrics
from score_sde.features import MNISTFeatures, data_to_uint8
from score_sde.mnist_classifier import MNISTClassifier


def tiny_image_config(tmp_path):
    """A tiny DDPM++ on synthetic 28×28 grey images judged by a random MNIST classifier (its file in
    tmp_path): 4 steps, fast sampling in 4 steps."""
    torch.manual_seed(0)
    classifier = tmp_path / "classifier.pth"
    torch.save(MNISTClassifier().state_dict(), classifier)
    config = configs.load_config("vp_mnist_ddpmpp_continuous")
    config.data.dataset = "synthetic"
    m, t, e = config.model, config.training, config.eval
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.num_scales = 8, (1, 2), 1, (14,), 10
    t.batch_size, t.n_iters, t.snapshot_freq, t.snapshot_freq_for_preemption = 4, 4, 2, 2
    t.snapshot_sampling = False
    e.batch_size, e.num_samples, e.begin_ckpt, e.end_ckpt = 4, 8, 2, 2
    e.enable_loss, e.enable_sampling, e.stats_features = False, True, True
    e.mnist_classifier, e.features = str(classifier), "mnist"
    config.sampling.method, config.sampling.steps = "fast", 4
    return config


@pytest.fixture()
def tiny_image_run(tmp_path, monkeypatch):
    """tiny_image_config trained, and reference statistics with features: (config, workdir)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = tiny_image_config(tmp_path)
    workdir = tmp_path / "run"
    run_lib.train(config, workdir)
    run_lib.stats(config, workdir)
    return config, workdir


def test_stats_are_those_of_every_training_image_as_uint8(tiny_image_run):
    config, workdir = tiny_image_run
    saved = evaluation.load_statistics(run_lib.stats_path(config, workdir))
    dataset = data.image_dataset("synthetic", "unused", "train", 28, 1)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # all 1,024, in order, unflipped
    features, _ = MNISTFeatures(path=config.eval.mnist_classifier)(data_to_uint8(images))
    mu, sigma = metrics.feature_statistics(features)
    assert int(saved["count"]) == len(dataset)
    np.testing.assert_allclose(saved["mu"], mu, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(saved["sigma"], sigma, rtol=1e-5, atol=1e-8)


def test_interrupted_eval_resumes_at_the_next_round_and_ends_with_the_same_numbers(tiny_image_run):
    config, workdir = tiny_image_run
    straight = run_lib.evaluate(config, workdir)["checkpoint_2"]["samples"]
    folder = workdir / "eval" / "ckpt_2"
    # the state a run killed after its first round leaves: round 0 saved, no round 1, no result yet
    first_round = (folder / "round_0.npz").stat().st_mtime_ns
    (folder / "round_1.npz").unlink()
    results = json.loads((folder / "results.json").read_text())
    del results["samples"]
    (folder / "results.json").write_text(json.dumps(results))
    resumed = run_lib.evaluate(config, workdir)["checkpoint_2"]["samples"]
    assert resumed == straight
    assert (folder / "round_0.npz").stat().st_mtime_ns == first_round  # read back, not redrawn
    assert straight["num_samples"] == 8 and np.isfinite(straight["fid"]) and "kid" in straight
    assert sum(straight["predicted_classes"]) == 8 and straight["nfe"] == 5  # 4 steps + the denoising
    assert json.loads((workdir / "eval" / "results.json").read_text())["checkpoint_2"]["samples"] == straight


def test_missing_stats_unknown_features_and_empty_ranges_fail_clearly(tiny_image_run, tmp_path):
    config, workdir = tiny_image_run
    config.eval.stats = str(tmp_path / "none.npz")
    with pytest.raises(FileNotFoundError, match=r"config.eval: no reference statistics .*--mode stats"):
        run_lib.evaluate(config, workdir)
    config.eval.stats, config.eval.features = None, "resnet"
    with pytest.raises(ValueError, match=r"config.eval.features='resnet': expected one of \['inception'"):
        run_lib.stats(config, workdir)
    config.eval.features, config.eval.begin_ckpt, config.eval.end_ckpt = "mnist", 7, 9
    with pytest.raises(FileNotFoundError, match=r"no checkpoint numbered 7..9.*\[1, 2\]"):
        run_lib.evaluate(config, workdir)
    config.eval.begin_ckpt, config.eval.stats_split = 2, "validation"
    with pytest.raises(ValueError, match="stats_split"):
        run_lib.stats(config, workdir)


def test_bpd_num_repeats_passes_again_with_fresh_dequantization():
    config = configs.load_config("vp_mnist_ddpmpp_continuous")
    config.data.dataset, config.eval.batch_size, config.eval.bpd_num_items = "synthetic", 4, 6
    once = torch.cat(list(run_lib._likelihood_batches(config)))
    config.eval.bpd_num_repeats = 3
    thrice = torch.cat(list(run_lib._likelihood_batches(config)))
    assert once.shape[0] == 6 and thrice.shape[0] == 18
    assert torch.equal(thrice[:6], once)  # the first pass is the default's, numbers unchanged
    for later in (thrice[6:12], thrice[12:]):  # the same pixels, dequantized afresh (one bin = 2/256)
        assert not torch.equal(later, once) and (later - once).abs().max() < 2 / 256


def test_class_conditional_images_sample_one_class_to_a_row_and_eval_judges_each_class(tmp_path, monkeypatch):
    """A tiny class-conditional DDPM++ on synthetic images (10 classes): --mode sample with labels writes a
    grid with one class to a row and the labels; eval adds the judge's per-class accuracy."""
    from PIL import Image

    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = tiny_image_config(tmp_path)
    config.model.num_classes, config.training.n_iters = 10, 2
    e = config.eval
    e.batch_size, e.num_samples, e.begin_ckpt, e.end_ckpt, e.enable_loss = 6, 6, 1, 1, True
    config.sampling.steps, config.sampling.class_label, config.sampling.guidance = 2, "3,7", 1.0
    workdir = tmp_path / "run"
    run_lib.train(config, workdir)
    run_lib.sample(config, workdir)
    saved = np.load(workdir / "samples" / "samples.npz")
    assert saved["labels"].tolist() == [3, 3, 3, 7, 7, 7]
    with Image.open(workdir / "samples" / "sample.png") as grid:  # two rows of three 28-pixel images
        assert grid.size == (3 * 30 + 2, 2 * 30 + 2)
    run_lib.stats(config, workdir)
    samples = run_lib.evaluate(config, workdir)["checkpoint_1"]["samples"]
    assert set(samples["per_class_accuracy"]) == {"3", "7"} and 0 <= samples["class_accuracy"] <= 1
