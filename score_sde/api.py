"""`score_sde.load`: a trained model from one of our checkpoints or workdirs, or one of the original's, ready
to sample from a notebook (docs/api.md).

This is the package's own edge: like run_lib (the CLI's modes), it turns a config into objects, and run_lib
takes the SDE, the score function, the sampler's keyword arguments and a fresh TrainState from here,
so that the two agree.
"""
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_collections
import torch
from torch import nn

from score_sde import configs, data
from score_sde.data_kind import Images, ToyPoints
from score_sde.guidance import ClassifierFn, classifier_free_guidance, classifier_guidance
from score_sde.models import create_model, get_score_fn
from score_sde.models.ema import ExponentialMovingAverage
from score_sde.noise_classifier import classifier_log_prob_fn
from score_sde.sampling import ode_sample, pc_sample
from score_sde.sampling.fast import fast_sample
from score_sde.sde import SDE, SDES, VESDE, ScoreFn
from score_sde.train import TrainState, load_into, make_optimizer, read_checkpoint

SAMPLERS = {"pc": pc_sample, "ode": ode_sample, "fast": fast_sample}
# config.sampling knobs a named fast solver takes ("auto" takes its options from fast.RECOMMENDED)
SOLVER_KNOBS = {"ddim": ("eta",), "heun_churn": ("churn",),
                "adams_pc": ("order", "prediction", "lower_order_final", "damping")}


def sde_from_config(config: ml_collections.ConfigDict) -> SDE:
    """The training SDE of config.training.sde with config.model's coefficients and num_scales."""
    name, m = str(config.training.sde).lower(), config.model
    if name not in SDES:
        raise ValueError(f"config.training.sde={config.training.sde!r}: expected one of {sorted(SDES)}")
    if name == "vesde":
        return VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
    return SDES[name](beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)


def score_fn_from_config(config: ml_collections.ConfigDict, sde: SDE, model: nn.Module) -> Callable:
    """The network (eval mode) as a score function, by the config's conventions (continuous time and
    preconditioning)."""
    knobs = configs.objective_knobs(config)
    return get_score_fn(sde, model, continuous=config.training.continuous, train=False,
                        preconditioning=knobs["preconditioning"], sigma_data=knobs["sigma_data"])


def num_classes(config: ml_collections.ConfigDict) -> int:
    """The classes samples can be asked for: the class-conditional network's (model.num_classes), else the
    data's labels' (for classifier guidance of an unconditional network); 0 when neither has classes."""
    return config.model.get("num_classes", 0) or data.num_classes(config.data.dataset)


def class_labels(config: ml_collections.ConfigDict, n: int) -> torch.Tensor | None:
    """sampling.class_label for n samples as int64 labels [n] in order (so a grid row holds one class):
    None when unset (unconditional samples); one class index for all; 'a,b,...' or 'all' spread evenly.

    Raises:
        ValueError naming sampling.class_label: a value that is not a class index of num_classes(config).
    """
    spec = config.sampling.get("class_label")
    if spec is None:
        return None
    count = num_classes(config)
    text = str(spec).strip()
    try:
        classes = list(range(count)) if text == "all" else [int(part) for part in text.split(",")]
    except ValueError:
        classes = []
    if not classes or any(not 0 <= k < count for k in classes):
        none = "" if count else " (neither the network nor its data has classes)"
        raise ValueError(f"sampling.class_label={spec!r}: expected a class in [0, {count}), a list "
                         f"'a,b,...' of them, or 'all'{none}")
    return torch.tensor(classes)[torch.arange(n) * len(classes) // n]


def guided_score_fn(config: ml_collections.ConfigDict, sde: SDE, model: nn.Module,
                    labels: torch.Tensor | None = None, classifier_fn: ClassifierFn | None = None) -> ScoreFn:
    """The score the samplers follow (docs/guidance.md): unconditional without labels (a class-conditional
    network's null class); with labels, classifier guidance of the score by classifier_fn at
    sampling.classifier_scale, or classifier-free guidance of a class-conditional network with weight
    sampling.guidance."""
    score_fn = score_fn_from_config(config, sde, model)
    s = config.sampling
    if labels is None:
        if classifier_fn is not None:
            raise ValueError("sampling.classifier guides towards sampling.class_label, which is unset")
        return score_fn
    if classifier_fn is not None:
        return classifier_guidance(score_fn, classifier_fn, labels, s.classifier_scale)
    if not config.model.get("num_classes", 0):
        raise ValueError(f"sampling.class_label={s.class_label!r} asks for classes, but the network is "
                         "unconditional (model.num_classes=0): set sampling.classifier for classifier "
                         "guidance, or train a class-conditional network")
    return classifier_free_guidance(score_fn, labels, s.guidance)


def classifier_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config the noise-conditional classifier trains under (--mode train_classifier): config's SDE,
    data and training knobs, with model.* describing the classifier (config.classifier's width and EMA rate,
    the data's classes), classifier.n_iters / batch_size / lr for training's and optim's, no warm-up and no
    snapshot samples."""
    c = ml_collections.ConfigDict(config.to_dict())
    classes = data.num_classes(c.data.dataset)
    if not classes:
        raise ValueError(f"data.dataset={c.data.dataset!r} carries no class labels to train a classifier on")
    k = c.classifier
    c.model.update(name="noise_classifier", nf=k.nf, num_classes=classes, ema_rate=k.ema_rate,
                   preconditioning="none")
    c.training.update(n_iters=k.n_iters, batch_size=k.batch_size, snapshot_sampling=False)
    c.optim.update(lr=k.lr, warmup=0)
    return c


CLASSIFIER_MUST_MATCH = ("training.sde", "model.beta_min", "model.beta_max", "model.sigma_min",
                         "model.sigma_max", "data.image_size", "data.num_channels", "data.centered",
                         "data.dataset", "data.dim")


def load_classifier(path_or_workdir: str | Path, config: ml_collections.ConfigDict,
                    device: torch.device) -> tuple[nn.Module, ClassifierFn]:
    """The noise-conditional classifier of --mode train_classifier (EMA weights, eval mode) and its log-
    probability function, for sampling with `config`.

    Args:
        path_or_workdir: a classifier checkpoint, its folder (<workdir>/classifier), or the score model's
            workdir holding that folder.
    Raises:
        FileNotFoundError: no classifier there; ValueError: it was trained for another SDE or data
            (CLASSIFIER_MUST_MATCH), naming the knob.
    """
    path = Path(path_or_workdir).expanduser()
    if path.is_dir() and (path / "classifier").is_dir():
        path = path / "classifier"
    path = latest_checkpoint(path) if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no classifier checkpoint at {path}: train one with --mode train_classifier")
    saved = _config_for(path, None)
    if saved.model.name != "noise_classifier":
        raise ValueError(f"{path} holds a {saved.model.name!r} network, not a noise-conditional classifier")
    for knob in CLASSIFIER_MUST_MATCH:
        section, name = knob.split(".")
        ours, theirs = config[section].get(name), saved[section].get(name)
        if str(ours).lower() != str(theirs).lower():
            raise ValueError(f"the classifier {path} was trained with {knob}={theirs!r}, the model samples "
                             f"with {ours!r}")
    state = load_into(read_checkpoint(path), train_state(saved, device), path, with_rng=False)
    state.ema.copy_to(state.model)
    return state.model.eval(), classifier_log_prob_fn(state.model)


def sampler_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """config.sampling's knobs as the keyword arguments of its method's sampler, in one place."""
    s = config.sampling
    if s.method != "pc" and s.compile is not None:
        raise ValueError(f"sampling.compile={s.compile!r} compiles the PC sampler's step; sampling.method is "
                         f"{s.method!r}: unset sampling.compile or use method 'pc'")
    if s.method == "pc":
        return dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr, n_steps=s.n_steps_each,
                    probability_flow=s.probability_flow, denoise=s.noise_removal, compile_mode=s.compile)
    if s.method == "ode":
        return dict(denoise=s.noise_removal)
    if s.method == "fast":
        options = {knob: s[knob] for knob in SOLVER_KNOBS.get(s.solver, ())}
        return dict(solver=s.solver, steps=s.steps, schedule=s.schedule, denoise=s.noise_removal, **options)
    raise ValueError(f"unknown sampling.method {s.method!r}; expected one of {sorted(SAMPLERS)}")


def data_kind(config: ml_collections.ConfigDict) -> ToyPoints | Images:
    """config.data as a data kind (score_sde/data_kind.py): the one place that tells toys from images."""
    d = config.data
    if d.dataset in data.TOYS:
        return ToyPoints(d.dataset, d.get("dim", 2))
    return Images(configs.num_channels(d), d.image_size, d.centered)


def sample_shape(config: ml_collections.ConfigDict, batch_size: int) -> tuple[int, ...]:
    return data_kind(config).shape(batch_size)


def latest_checkpoint(workdir: str | Path) -> Path:
    """The newest checkpoints/checkpoint_<n>.pth, else the resume point; FileNotFoundError if neither."""
    workdir = Path(workdir)
    numbered = sorted(workdir.glob("checkpoints/checkpoint_*.pth"),
                      key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    if numbered:
        return numbered[-1]
    if meta_checkpoint(workdir).is_file():
        return meta_checkpoint(workdir)
    raise FileNotFoundError(f"no checkpoint in {workdir}: train first (--mode train) or pass --checkpoint")


def meta_checkpoint(workdir: str | Path) -> Path:
    return Path(workdir) / "checkpoints-meta" / "checkpoint.pth"


def _config_for(path: Path, config) -> ml_collections.ConfigDict:
    """config as given (a ConfigDict or dict, the original's included, or a name or file for
    configs.load_config), else the config.json that training wrote in the checkpoint's workdir; knobs it
    lacks take default.py's values."""
    if isinstance(config, ml_collections.ConfigDict | dict):
        return configs.with_defaults(config)
    if config is not None:
        return configs.load_config(config)
    saved = path.parent.parent / "config.json"  # workdir/checkpoints*/<file>
    if not saved.is_file():
        raise FileNotFoundError(f"no config for {path}: {saved} is missing (a checkpoint of the original "
                                "needs its config): pass config=NAME or a ConfigDict")
    return configs.with_defaults(json.loads(saved.read_text()))


def train_state(config: ml_collections.ConfigDict, device: torch.device) -> TrainState:
    """A fresh TrainState on `device`: the network (channels_last if config.model says), its EMA, the
    optimizer of config.optim, and the training generator seeded with config.seed."""
    memory_format = torch.channels_last if config.model.channels_last else torch.preserve_format
    model = create_model(config).to(device, memory_format=memory_format)
    o = config.optim
    optimizer = make_optimizer(model.parameters(), o.lr, o.beta1, o.eps, o.weight_decay, o.optimizer)
    return TrainState(model, ExponentialMovingAverage(model, config.model.ema_rate), optimizer, 0,
                      torch.Generator(device).manual_seed(config.seed))


@dataclass
class ScoreModel:
    """What `load` returns: the network with its EMA weights (eval mode), the SDE, the score function, the
    data kind (shape, scalers, likelihood unit), the config and the checkpoint it came from."""

    config: ml_collections.ConfigDict
    network: nn.Module
    sde: SDE
    score_fn: Callable
    kind: ToyPoints | Images
    checkpoint: Path
    step: int | None
    device: torch.device

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data space ([0, 1] images; toy points as they are) -> the network's input range."""
        return self.kind.to_model_space(x)

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        return self.kind.to_data_space(x)

    @torch.no_grad()
    def sample(self, n: int, method: str | None = None, generator: torch.Generator | None = None,
               progress: bool = False, labels: torch.Tensor | None = None, guidance: float = 0.0,
               **options: Any) -> torch.Tensor:
        """n samples in data space by `method` ('pc', 'ode' or 'fast'; default the config's
        sampling.method). The config's sampling knobs apply when method is the config's own, as in
        --mode sample; `options` (the sampler's keyword arguments: steps=10, denoise=False, ...) override.
        With labels [n] (a class-conditional network), samples of those classes by classifier-free guidance
        of weight `guidance` (docs/guidance.md)."""
        method = method or self.config.sampling.method
        if method not in SAMPLERS:
            raise ValueError(f"unknown method {method!r}; expected one of {sorted(SAMPLERS)}")
        kwargs = sampler_kwargs(self.config) if method == self.config.sampling.method else {}
        kwargs.update(options)
        score_fn = self.score_fn
        if labels is not None:
            if not self.config.model.get("num_classes", 0):
                raise ValueError("labels: this network is unconditional (model.num_classes=0); guide it with "
                                 "guidance.classifier_guidance and a noise-conditional classifier")
            score_fn = classifier_free_guidance(self.score_fn, labels.to(self.device), guidance)
        x, _ = SAMPLERS[method](self.sde, score_fn, self.kind.shape(n), generator=generator,
                                device=self.device, progress=progress, **kwargs)
        return self.to_data_space(x)


def load(path_or_workdir: str | Path, config: ml_collections.ConfigDict | str | None = None,
         device: str | torch.device | None = None) -> ScoreModel:
    """A trained model, ready to sample: `load("runs/x").sample(8)`.

    Args:
        path_or_workdir: a checkpoint file (ours, or the original's), or a workdir of --mode train (its
            newest numbered checkpoint, else its resume point).
        config: a ConfigDict, or a config name or file for configs.load_config (the original's config
            paths too); default: the config.json beside the checkpoints, which training writes.
        device: where the network runs (default: CUDA when available, else the CPU).
    """
    path = Path(path_or_workdir).expanduser()
    path = latest_checkpoint(path) if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file or workdir at {path}")
    config = _config_for(path, config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint = read_checkpoint(path)
    state = load_into(checkpoint, train_state(config, device), path, with_rng=False, original_ok=True)
    state.ema.copy_to(state.model)
    network, sde = state.model.eval(), sde_from_config(config)
    return ScoreModel(config, network, sde, score_fn_from_config(config, sde, network), data_kind(config),
                      path, checkpoint.get("step"), device)
