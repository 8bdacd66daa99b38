"""The checks every mode makes before its first step: the config's values, and the workdir it will write.

A bad value is a `ConfigError`: one line naming the knob, its value and what is allowed. run_lib calls
`check_values` first, then builds the SDE, network, loss, data and sampler and runs each once on a tiny batch
(run_lib.prepare_*), and only then touches the workdir; so a setting that cannot work costs seconds, not
the 50,000 steps before the first snapshot, and leaves nothing behind.
"""
import contextlib
import json
import math
import numbers
import os
import tempfile
from pathlib import Path

from score_sde import acceleration, data
from score_sde.configs import num_channels, objective_knobs
from score_sde.controllable import METHODS as CONDITIONAL_METHODS
from score_sde.controllable import TASKS
from score_sde.losses import WEIGHTINGS
from score_sde.models.score_fn import PRECONDITIONINGS
from score_sde.observations import MASKS
from score_sde.sampling.correctors import CORRECTORS
from score_sde.sampling.fast import AUTO
from score_sde.sampling.predictors import PREDICTORS
from score_sde.sampling.schedules import SCHEDULES
from score_sde.sampling.solvers import ADAMS_ORDERS, SOLVERS
from score_sde.sde import SDES
from score_sde.time_sampling import T_SAMPLINGS
from score_sde.train import OPTIMIZERS

METHODS = ("pc", "ode", "fast")
MODES = ("train", "sample", "likelihood", "eval", "stats")


class ConfigError(ValueError):
    """A setting that cannot work, found before any work: one line naming the knob and what is allowed."""


def require(ok: bool, knob: str, value, allowed: str) -> None:
    """ConfigError 'config.<knob>=<value>: <allowed>' unless ok."""
    if not ok:
        raise ConfigError(f"config.{knob}={value!r}: {allowed}")


@contextlib.contextmanager
def knobs(what: str):
    """Turn a ValueError raised while building an object from the config into a ConfigError naming `what`
    (the knobs it was built from): library code raises ValueError naming its arguments, not config keys. A
    FileNotFoundError (missing data or weights) stays one, with `what` in front: `config.data: … pass
    download=True` reads as the knob config.data.download."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{what}: {error}") from error
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{what}: {error}") from error


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def require_count(config, knob: str, minimum: int = 1) -> None:
    value = _get(config, knob)
    require(_is_int(value) and value >= minimum, knob, value, f"must be a whole number >= {minimum}")


def require_divisible(config, knob: str, world_size: int) -> None:
    require_count(config, knob)
    value = _get(config, knob)
    require(value % world_size == 0, knob, value, f"must split evenly over the {world_size} processes")


def _get(config, knob: str):
    section, name = knob.rsplit(".", 1) if "." in knob else ("", knob)
    node = config
    for part in filter(None, section.split(".")):
        node = node[part]
    return node.get(name) if hasattr(node, "get") else node[name]


def require_name(config, knob: str, table) -> None:
    value = _get(config, knob)
    require(value in table, knob, value, f"expected one of {sorted(table)}")


def check_values(config, mode: str, world_size: int = 1) -> None:
    """ConfigError for the first knob that `mode` would read and that cannot work.

    Args:
        mode: one of MODES; each checks what it uses (training reads the sampling knobs when it samples at
            its snapshots, evaluation the sampling and likelihood knobs it enables).
        world_size: the number of processes batch sizes are split over.
    """
    check_sde(config)
    dataset = config.data.dataset
    require(dataset in data.TOYS or dataset in data.IMAGE_DATASETS, "data.dataset", dataset,
            f"expected a toy {sorted(data.TOYS)} or images {sorted(data.IMAGE_DATASETS)}")
    if mode == "train":
        check_training(config, world_size)
        if config.training.snapshot_sampling:
            check_sampling(config)
    elif mode == "sample":
        require_divisible(config, "eval.batch_size", world_size)
        check_sampling(config)
    elif mode == "likelihood":
        check_likelihood(config)
    elif mode == "eval":
        check_eval(config, world_size)
    elif mode in TASKS:
        check_controllable(config, mode)
    elif mode == "stats":
        require(config.data.dataset not in data.TOYS, "data.dataset", config.data.dataset,
                "--mode stats is for image datasets; toys are judged by their exact density")
        require_name(config, "eval.stats_split", data.SPLITS)
        require_count(config, "eval.batch_size")
        require_name(config, "eval.features", ("inception", "mnist"))
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)}")


def check_sde(config) -> None:
    """training.sde and its parameters (the constructors say what is allowed; here the knobs are named)."""
    sde = config.training.sde
    require(isinstance(sde, str) and sde.lower() in SDES, "training.sde", sde,
            f"expected one of {sorted(SDES)}")
    require_count(config, "model.num_scales")
    m = config.model
    if sde.lower() == "vesde":
        for knob in ("sigma_min", "sigma_max"):
            require(_is_number(m[knob]), f"model.{knob}", m[knob], "must be a finite number")
        require(0 < m.sigma_min < m.sigma_max, "model.sigma_min", m.sigma_min,
                f"need 0 < sigma_min < sigma_max (model.sigma_max={m.sigma_max})")
    else:
        for knob in ("beta_min", "beta_max"):
            require(_is_number(m[knob]), f"model.{knob}", m[knob], "must be a finite number")
        require(m.beta_min >= 0, "model.beta_min", m.beta_min, "must be >= 0")
        require(m.beta_max > m.beta_min, "model.beta_max", m.beta_max,
                f"must exceed model.beta_min={m.beta_min}")


def check_training(config, world_size: int) -> None:
    """Run length, frequencies, batch size, optimizer, EMA, precision and compile mode."""
    require_divisible(config, "training.batch_size", world_size)
    require_count(config, "training.n_iters")
    for knob in ("snapshot_freq", "log_freq", "eval_freq", "snapshot_freq_for_preemption"):
        require_count(config, f"training.{knob}")
    require_divisible(config, "eval.batch_size", world_size)  # the running evaluation loss's batches
    o = config.optim
    require_name(config, "optim.optimizer", OPTIMIZERS)
    require(_is_number(o.lr) and o.lr >= 0, "optim.lr", o.lr, "must be a finite number >= 0")
    require(_is_number(o.beta1) and 0 <= o.beta1 < 1, "optim.beta1", o.beta1, "must lie in [0, 1)")
    require(_is_number(o.eps) and o.eps > 0, "optim.eps", o.eps, "must be a finite number > 0")
    require(_is_number(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay,
            "must be a finite number >= 0")
    require(_is_int(o.warmup) and o.warmup >= 0, "optim.warmup", o.warmup, "must be a whole number >= 0")
    require(_is_number(o.grad_clip), "optim.grad_clip", o.grad_clip,
            "must be a finite number (< 0: no clipping)")
    check_objective(config)
    check_classes(config)
    ema_rate = config.model.get("ema_rate")
    require(_is_number(ema_rate) and 0 <= ema_rate <= 1, "model.ema_rate", ema_rate, "must lie in [0, 1]")
    with knobs("config.training.precision"):
        acceleration.check_precision(config.training.precision)
    with knobs("config.training.compile"):
        acceleration.check_compile_mode(config.training.compile)


CONDITIONAL_MODELS = ("ddpm", "ncsnpp", "mlp", "noise_classifier")


def check_classes(config) -> None:
    """A class-conditional network's classes, against its family and the data's labels, and its dropout."""
    m, dataset = config.model, config.data.dataset
    count = m.get("num_classes", 0)
    require(_is_int(count) and count >= 0, "model.num_classes", count, "must be a whole number >= 0")
    if count:
        require(m.name in CONDITIONAL_MODELS, "model.num_classes", count,
                f"model {m.name!r} is unconditional; class-conditional families: {list(CONDITIONAL_MODELS)}")
        require(data.num_classes(dataset) > 0, "model.num_classes", count,
                f"data.dataset={dataset!r} carries no class labels to condition on")
        require(count == data.num_classes(dataset), "model.num_classes", count,
                f"data.dataset={dataset!r} has {data.num_classes(dataset)} classes")
    dropout = config.training.get("class_dropout", 0.0)
    require(_is_number(dropout) and 0 <= dropout <= 1, "training.class_dropout", dropout,
            "must lie in [0, 1]")


def check_guidance(config) -> None:
    """sampling.class_label, guidance, classifier and classifier_scale (the labels themselves are checked
    against the classes as they are made, api.class_labels)."""
    s, count = config.sampling, config.model.get("num_classes", 0)
    guidance, scale = s.get("guidance", 0.0), s.get("classifier_scale", 1.0)
    require(_is_number(guidance) and guidance >= 0, "sampling.guidance", guidance,
            "must be a finite number >= 0")
    require(_is_number(scale), "sampling.classifier_scale", scale, "must be a finite number")
    if s.get("class_label") is None:
        require(guidance == 0, "sampling.guidance", guidance,
                "guides towards sampling.class_label, which is unset")
        require(not s.get("classifier"), "sampling.classifier", s.get("classifier"),
                "guides towards sampling.class_label, which is unset")
        return
    require(guidance == 0 or count > 0, "sampling.guidance", guidance,
            "classifier-free guidance needs a class-conditional network (model.num_classes > 0)")
    require(not (s.get("classifier") and count), "sampling.classifier", s.get("classifier"),
            "classifier guidance is for an unconditional network; this one is class-conditional "
            "(model.num_classes > 0): use sampling.guidance")
    require(count > 0 or bool(s.get("classifier")), "sampling.class_label", s.class_label,
            "the network is unconditional (model.num_classes=0): set sampling.classifier (classifier "
            "guidance) or train a class-conditional network")


def check_objective(config) -> None:
    """The training objective's density, weighting and preconditioning (docs/training.md)."""
    t, o = config.training, objective_knobs(config)
    t_sampling, weighting = o["t_sampling"], o["weighting"]
    mean, std = o["lognormal_mean"], o["lognormal_std"]
    preconditioning, sigma_data = o["preconditioning"], o["sigma_data"]
    require(t_sampling in T_SAMPLINGS, "training.t_sampling", t_sampling,
            f"expected one of {sorted(T_SAMPLINGS)}")
    require(weighting is None or weighting in WEIGHTINGS, "training.weighting", weighting,
            f"expected one of {list(WEIGHTINGS)}, or unset")
    require(not (t.likelihood_weighting and weighting not in (None, "likelihood")), "training.weighting",
            weighting, "contradicts training.likelihood_weighting=True")
    require(_is_number(std) and std > 0, "training.lognormal_std", std, "must be a finite number > 0")
    require(_is_number(mean), "training.lognormal_mean", mean, "must be finite")
    require(preconditioning in PRECONDITIONINGS, "model.preconditioning", preconditioning,
            f"expected one of {list(PRECONDITIONINGS)}")
    require(_is_number(sigma_data) and sigma_data > 0, "model.sigma_data", sigma_data,
            "must be a finite number > 0")
    if not t.continuous:
        require(t_sampling == "uniform" and weighting in (None, "score_matching")
                and preconditioning == "none", "training.continuous", t.continuous,
                "the discrete SMLD / DDPM losses take no t_sampling, weighting or preconditioning")


def check_sampling(config) -> None:
    """The sampler's names, their combination and its numbers."""
    s = config.sampling
    require(s.method in METHODS, "sampling.method", s.method, f"expected one of {sorted(METHODS)}")
    check_guidance(config)
    with knobs("config.sampling.compile"):
        acceleration.check_compile_mode(s.compile)
    require(s.compile is None or s.method == "pc", "sampling.compile", s.compile,
            f"compiles the PC sampler's step; sampling.method is {s.method!r}: unset it or use method 'pc'")
    if s.method == "pc":
        require_name(config, "sampling.predictor", PREDICTORS)
        require_name(config, "sampling.corrector", CORRECTORS)
        require(not (s.predictor == "none" and s.corrector == "none"), "sampling.predictor", s.predictor,
                "predictor and corrector are both 'none': the sampler would return prior noise")
        require(_is_number(s.snr) and s.snr > 0, "sampling.snr", s.snr, "must be a finite number > 0")
        require_count(config, "sampling.n_steps_each", minimum=0)
    elif s.method == "fast":
        require_name(config, "sampling.solver", [AUTO, *SOLVERS])
        require_name(config, "sampling.schedule", [AUTO, *SCHEDULES])
        require_count(config, "sampling.steps")
        check_solver_knobs(s)


def check_solver_knobs(s) -> None:
    """The options of the named fast solver, refused here rather than when it first samples."""
    if s.solver == "ddim":
        require(_is_number(s.eta) and 0 <= s.eta <= 1, "sampling.eta", s.eta, "must lie in [0, 1]")
    elif s.solver == "heun_churn":
        require(_is_number(s.churn) and s.churn >= 0, "sampling.churn", s.churn, "must be a number >= 0")
    elif s.solver == "adams_pc":
        require(s.order in ADAMS_ORDERS, "sampling.order", s.order, f"expected one of {ADAMS_ORDERS}")
        require(s.prediction in ("data", "noise"), "sampling.prediction", s.prediction,
                "expected 'data' or 'noise'")
        require(isinstance(s.lower_order_final, bool), "sampling.lower_order_final", s.lower_order_final,
                "expected True or False")
        require(_is_number(s.damping) and s.damping >= 0, "sampling.damping", s.damping,
                "must be a number >= 0")


def check_controllable(config, task: str) -> None:
    """The knobs of --mode inpaint / colorize / superres (the inputs themselves are checked as they load)."""
    s, d = config.sampling, config.data
    require(d.dataset not in data.TOYS, "data.dataset", d.dataset, f"--mode {task} is for image models")
    require_name(config, "sampling.conditional_method", CONDITIONAL_METHODS)
    if s.conditional_method == "replacement":
        check_sampling(config)  # the PC sampler's knobs
        require(s.method == "pc", "sampling.method", s.method, "the replacement method runs the PC sampler")
    else:
        require_count(config, "sampling.particles")
        require(s.smc_steps is None or (_is_int(s.smc_steps) and s.smc_steps >= 1), "sampling.smc_steps",
                s.smc_steps, "must be a whole number >= 1, or unset for the SDE's num_scales")
    require_count(config, "sampling.num_inputs")
    require(_is_number(s.sigma_y) and s.sigma_y >= 0, "sampling.sigma_y", s.sigma_y,
            "must be a finite number >= 0")
    require(s.inputs in data.SPLITS or Path(s.inputs).expanduser().is_dir(), "sampling.inputs", s.inputs,
            f"expected a split {list(data.SPLITS)} of config.data or a folder of image files")
    if task == "colorize":
        require(num_channels(d) == 3, "data.num_channels", num_channels(d),
                "colorization needs a 3-channel (colour) model")
    if task == "superres":
        f = s.superres_factor
        require(_is_int(f) and f >= 2 and d.image_size % f == 0, "sampling.superres_factor", f,
                f"must be a whole number >= 2 dividing data.image_size={d.image_size}")
    if task == "inpaint":
        require(s.mask in MASKS or Path(s.mask).expanduser().is_file(), "sampling.mask", s.mask,
                f"expected a built-in mask {sorted(MASKS)} or a PNG file")


def check_likelihood(config) -> None:
    e = config.eval
    require_name(config, "eval.bpd_dataset", data.SPLITS)
    require(e.bpd_num_items is None or (_is_int(e.bpd_num_items) and e.bpd_num_items >= 1),
            "eval.bpd_num_items", e.bpd_num_items,
            "must be a whole number >= 1, or unset for the whole split")
    repeats = e.get("bpd_num_repeats", 1)  # a config written for the original lacks it
    require(_is_int(repeats) and repeats >= 1, "eval.bpd_num_repeats", repeats, "must be a whole number >= 1")
    with knobs("config.eval.bpd_precision"):
        acceleration.check_precision(e.bpd_precision)
    with knobs("config.eval.bpd_compile"):
        acceleration.check_compile_mode(e.bpd_compile)


def check_eval(config, world_size: int) -> None:
    """The checkpoint range, the waiting time and every part evaluation enables."""
    e = config.eval
    require_count(config, "eval.begin_ckpt", minimum=0)
    require_count(config, "eval.end_ckpt", minimum=0)
    require(e.begin_ckpt <= e.end_ckpt, "eval.end_ckpt", e.end_ckpt,
            f"must be >= eval.begin_ckpt={e.begin_ckpt}")
    wait_s = e.get("wait_s", 0)
    require(_is_number(wait_s) and wait_s >= 0, "eval.wait_s", wait_s,
            "must be a finite number of seconds >= 0 (0: fail at once when a checkpoint is missing)")
    if e.enable_loss:
        require_divisible(config, "eval.batch_size", world_size)
    if e.enable_bpd or e.get("enable_bound"):
        check_likelihood(config)
    if e.get("enable_bound"):
        require_count(config, "eval.bound_num_times")
    if e.enable_sampling:
        require_divisible(config, "eval.batch_size", world_size)
        require_count(config, "eval.num_samples")
        if config.data.dataset not in data.TOYS:
            require_name(config, "eval.features", ("inception", "mnist"))
        check_sampling(config)


# ---- the workdir ----


class WorkdirError(ValueError):
    """A workdir that cannot be used: a file, or a place this process cannot write."""


def check_workdir_writable(workdir: Path) -> None:
    """WorkdirError unless workdir is, or can be made as, a directory this process can write into.

    Nothing is left behind: a missing workdir is not created (its nearest existing parent is probed), and
    the probe file is removed at once.
    """
    workdir = Path(workdir)
    existing = workdir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == workdir else f"lies under {existing}, which is a file"
        raise WorkdirError(f"workdir {workdir} {what}: choose a directory (--workdir)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        where = "" if existing == workdir else f" (it would be made inside {existing})"
        raise WorkdirError(f"workdir {workdir} cannot be written{where}: {error.strerror}") from error
    for sub in ("checkpoints", "checkpoints-meta", "samples", "eval", "likelihood"):
        path = workdir / sub
        if path.exists() and not (path.is_dir() and os.access(path, os.W_OK)):
            raise WorkdirError(f"{path} is not a writable directory")


# ---- a restart's config against the saved one ----

# Knobs that change what the checkpoints are of: the model, the SDE, the loss or the data. A restart may not
# change them silently (--allow_config_change). Run length, frequencies, sampling and evaluation may change.
PROTECTED = ("model.", "data.", "training.sde", "training.continuous", "training.reduce_mean",
             "training.likelihood_weighting", "training.weighting", "training.lognormal_mean",
             "training.lognormal_std", "training.batch_size", "seed")  # not t_sampling: it moves no objective
UNPROTECTED = ("model.channels_last", "data.root", "data.download", "data.num_workers")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: a config's knobs by their dotted names."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _protected(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in PROTECTED) and \
        key not in UNPROTECTED


def config_differences(saved: dict, config: dict) -> list[str]:
    """'knob: saved -> new' for each protected knob whose value differs (a knob only one side has too)."""
    old, new = flatten(saved), flatten(config)
    missing = "(absent)"
    return [f"{key}: {old.get(key, missing)!r} -> {new.get(key, missing)!r}"
            for key in sorted(old.keys() | new.keys())
            if _protected(key) and old.get(key, missing) != new.get(key, missing)]


def config_as_saved(config) -> dict:
    """The config as config.json holds it (tuples become lists), so the two compare equal when unchanged."""
    return json.loads(config.to_json_best_effort())


def check_config_change(config, workdir: Path, has_checkpoints: bool, allow: bool = False) -> list[str]:
    """ConfigError listing the protected knobs that differ from workdir/config.json when the workdir holds
    checkpoints of that config and `allow` is False; returns the differences (empty when none)."""
    path = Path(workdir) / "config.json"
    if not (path.is_file() and has_checkpoints):
        return []
    try:
        saved = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}): restore it, or move it away to start "
                          "over") from error
    differences = config_differences(saved, config_as_saved(config))
    if differences and not allow:
        raise ConfigError(f"the config differs from the one the checkpoints in {workdir} were trained with, "
                          f"in {'; '.join(differences)}. Use another workdir, or pass --allow_config_change "
                          "to continue with the new values")
    return differences


# ---- one real step before the run ----


class DryRunDone(Exception):
    """Raised by `stop_after` once the wanted evaluations are done: the dry run ends there."""


def stop_after(score_fn, evaluations: int):
    """score_fn that makes `evaluations` calls and raises DryRunDone at the next one, so that a sampler
    runs one real step (every line of it, with the real network) and no more."""
    calls = 0

    def limited(x, t):
        nonlocal calls
        if calls >= evaluations:
            raise DryRunDone
        calls += 1
        return score_fn(x, t)

    return limited
