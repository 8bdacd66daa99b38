"""Class-conditional training's plumbing (issue 18): labels through the data stream, class dropout, the
label knob and the checks made before any work."""
import pytest
import torch

from preflight import ConfigError, check_values
from score_sde import api, configs, data
from score_sde.distributed import Shard
from score_sde.train import drop_classes, make_loss


def test_labelled_image_batches_are_the_same_images_with_the_datasets_labels():
    options = dict(name="synthetic", split="test", batch_size=32, image_size=8, num_channels=1, epochs=1)
    plain = list(data.batches(**options, generator=torch.Generator().manual_seed(0)))
    labelled = list(data.batches(**options, generator=torch.Generator().manual_seed(0), labels=True))
    dataset = data.image_dataset("synthetic", "~", "test", 8, 1)
    assert len(plain) == len(labelled) == 8
    for i, (x, (x2, y)) in enumerate(zip(plain, labelled)):
        assert torch.equal(x, x2)
        assert y.dtype == torch.int64
        assert y.tolist() == [dataset[j][1] for j in range(32 * i, 32 * (i + 1))]


def test_toy_labels_are_the_mixture_components_and_sharding_keeps_pairs():
    gen = torch.Generator().manual_seed(3)
    x, y = next(data.batches("gaussian_mixture", "train", 4000, gen, labels=True))
    mixture = data.toy_distribution("gaussian_mixture")
    # the components are 10 stds apart: the label is the nearest mean, and the weights are 0.2 / 0.8
    assert torch.equal(mixture.responsibilities(x.double()).argmax(1), y)
    assert abs(y.double().mean().item() - 0.8) < 0.02
    whole = next(data.batches("gaussian_mixture", "train", 8, torch.Generator().manual_seed(5), labels=True))
    halves = [next(data.batches("gaussian_mixture", "train", 4, torch.Generator().manual_seed(5),
                                shard=Shard(rank, 2), labels=True)) for rank in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]).sort(0).values, whole[0].sort(0).values)
    assert sorted(torch.cat([h[1] for h in halves]).tolist()) == sorted(whole[1].tolist())


def test_labels_are_refused_for_data_without_classes():
    with pytest.raises(ValueError, match="'checkerboard' carry no class labels"):
        data.batches("checkerboard", "train", 8, labels=True)
    assert data.num_classes("MNIST") == 10 and data.num_classes("CELEBA") == 0


def test_class_dropout_replaces_labels_by_the_null_class_at_its_rate_and_shards_alike():
    labels = torch.arange(20000) % 10
    dropped = drop_classes(labels, 10, 0.25, torch.Generator().manual_seed(0))
    changed = dropped != labels
    assert torch.all(dropped[changed] == 10)
    assert abs(changed.double().mean().item() - 0.25) < 0.01
    for rank in range(2):  # each rank holds every second item of the global batch
        part = drop_classes(labels[rank::2], 10, 0.25, torch.Generator().manual_seed(0), Shard(rank, 2))
        assert torch.equal(part, dropped[rank::2])
    with pytest.raises(ValueError, match="class_dropout must lie in"):
        make_loss(api.sde_from_config(configs.load_config("vp_toy")), class_dropout=1.5)


def config_with(**knobs):
    config = configs.load_config("vp_toy")
    for key, value in knobs.items():
        section, name = key.split("__")
        config[section][name] = value
    return config


@pytest.mark.parametrize("spec, expected", [("1", [1] * 6), ("0,1", [0, 0, 0, 1, 1, 1]),
                                            ("all", [0, 0, 0, 1, 1, 1]), (1, [1] * 6)])
def test_class_label_knob_spreads_the_classes_in_order(spec, expected):
    config = config_with(model__num_classes=2, sampling__class_label=str(spec))
    assert api.class_labels(config, 6).tolist() == expected


def test_class_label_knob_refuses_classes_that_do_not_exist():
    assert api.class_labels(configs.load_config("vp_toy"), 4) is None
    for spec in ("2", "-1", "x", "0,,1"):
        with pytest.raises(ValueError, match=r"sampling.class_label=.*expected a class in \[0, 2\)"):
            api.class_labels(config_with(model__num_classes=2, sampling__class_label=spec), 4)


@pytest.mark.parametrize("knobs, mode, message", [
    (dict(model__num_classes=3), "train", r"model.num_classes=3: data.dataset='gaussian_mixture' has 2"),
    (dict(model__num_classes=2, data__dataset="checkerboard"), "train", "carries no class labels"),
    (dict(model__num_classes=-1), "train", "model.num_classes=-1: must be a whole number"),
    (dict(model__num_classes=2, training__class_dropout=1.5), "train", "training.class_dropout=1.5"),
    (dict(sampling__class_label="1", sampling__guidance=1.0), "sample",
     r"sampling.guidance=1.0: classifier-free guidance needs a class-conditional network"),
    (dict(sampling__class_label="1"), "sample", "the network is unconditional"),
    (dict(sampling__guidance=2.0), "sample", "sampling.guidance=2.0: guides towards sampling.class_label"),
    (dict(model__num_classes=2, sampling__class_label="1", sampling__guidance=-1.0), "sample",
     "sampling.guidance=-1.0: must be a finite number >= 0"),
    (dict(model__num_classes=2, sampling__class_label="1", sampling__classifier="runs/x"), "sample",
     "classifier guidance is for an unconditional network"),
    (dict(sampling__classifier="runs/x"), "sample", "sampling.classifier='runs/x': guides towards"),
])
def test_bad_class_settings_are_refused_naming_their_knob(knobs, mode, message):
    with pytest.raises(ConfigError, match=message):
        check_values(config_with(**knobs), mode)


def test_unconditional_families_refuse_classes():
    config = configs.load_config("ve_ncsn")
    config.model.num_classes, config.data.dataset = 10, "CIFAR10"
    with pytest.raises(ConfigError, match="model 'ncsn' is unconditional"):
        check_values(config, "train")


class ExactClassifier(torch.nn.Module):
    """The mixture's exact noisy classifier log p_t(k | x) as a network (x, t) -> logits, evaluated at
    time_scale·t (1: exact)."""

    def __init__(self, mixture, sde, time_scale=1.0):
        super().__init__()
        self.log_prob_fn, self.time_scale = mixture.classifier_log_prob_fn(sde), time_scale

    def forward(self, x, t):
        return self.log_prob_fn(x, t * self.time_scale)


@pytest.mark.parametrize("sde_name", ["vpsde", "vesde"])
def test_the_classifier_loss_is_minimised_by_the_exact_noisy_classifier(sde_name):
    """The loss perturbs the data with the SDE's kernel: the exact p_t(k | x) scores lower than the same
    classifier read at the wrong time, on the same draws."""
    from score_sde.analytic import GaussianMixture
    from score_sde.noise_classifier import make_classifier_loss
    from score_sde.train import TrainState

    config = configs.load_config("vp_toy" if sde_name == "vpsde" else "ve_toy")
    sde = api.sde_from_config(config)
    mixture = GaussianMixture([0.5, 0.3, 0.2], [[-2.0, 0.0], [0.0, 2.0], [2.0, -1.0]], [1.0, 0.7, 1.3])
    gen = torch.Generator().manual_seed(0)
    x = mixture.sample(20000, gen)
    labels = mixture.responsibilities(x).multinomial(1, generator=gen).squeeze(1)  # drawn from p(k | x)
    loss_fn = make_classifier_loss(sde, train=False)
    losses = {}
    for scale in (1.0, 0.5, 2.0):
        state = TrainState(ExactClassifier(mixture, sde, scale), None, None)
        losses[scale] = loss_fn(state, x, torch.Generator().manual_seed(1), labels).item()
    assert losses[1.0] < losses[0.5] and losses[1.0] < losses[2.0]
    with pytest.raises(ValueError, match="labelled batches"):
        loss_fn(TrainState(ExactClassifier(mixture, sde), None, None), x, None)


def test_rows_by_class_puts_one_class_to_a_row():
    import run_lib

    images = torch.arange(5.0).reshape(5, 1, 1, 1)
    grid, per_row = run_lib.rows_by_class(images, torch.tensor([2, 0, 2, 2, 0]))
    assert per_row == 3
    assert grid.flatten().tolist() == [1.0, 4.0, 0.0, 0.0, 2.0, 3.0]


def test_mnist_batches_carry_the_idx_labels():
    from score_sde.data.idx import read_idx
    from tests.shared import require_mnist

    folder = require_mnist()
    x, y = next(data.batches("MNIST", "test", 100, torch.Generator().manual_seed(0), root=folder,
                             image_size=28, num_channels=1, labels=True))
    expected = read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:100].long()
    assert torch.equal(y, expected)  # the test split in order
    assert x.shape == (100, 1, 28, 28)
