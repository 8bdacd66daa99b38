"""The command line's work: train, sample, likelihood and evaluate, each on a config and a work directory.

This is the only module that reads a ConfigDict (with create_model): here it becomes an SDE, a network, a
training state and keyword arguments, once. Workdir layout (DESIGN.md): config.json, checkpoints/
checkpoint_<n>.pth every snapshot_freq steps, checkpoints-meta/checkpoint.pth (the resume point, written
atomically every snapshot_freq_for_preemption steps), samples/, likelihood/, eval/.
"""
import contextlib
import datetime
import hashlib
import itertools
import json
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import preflight
from preflight import ConfigError
from score_sde import acceleration, data, distributed, evaluation, noise_classifier
from score_sde import train as training
from score_sde.api import (
    SAMPLERS,
    SDES,
    class_labels,
    classifier_config,
    data_kind,
    guided_score_fn,
    latest_checkpoint,
    load_classifier,
    meta_checkpoint,
    sample_shape,
    sampler_kwargs,
    sde_from_config,
    train_state,
)
from score_sde.api import score_fn_from_config as model_score_fn
from score_sde.configs import num_channels, objective_knobs
from score_sde.controllable import conditional_sample
from score_sde.features import InceptionFeatures, MNISTFeatures, data_to_uint8, inception_weights
from score_sde.files import atomic_write, exclusive_lock, save_npz_atomic, write_json_atomic
from score_sde.likelihood import drift_and_divergence, log_likelihood
from score_sde.observations import MASKS, Colorization, Inpainting, SuperResolution
from score_sde.plots import image_grid_png
from score_sde.sampling import probability_flow_drift
from score_sde.sampling.fast import resolve_settings

# ---- config -> objects ----


def build_sde(config):
    """The training SDE (api.sde_from_config); a bad name or coefficient is a ConfigError naming its knob."""
    if str(config.training.sde).lower() not in SDES:
        raise ConfigError(f"config.training.sde={config.training.sde!r}: expected one of {sorted(SDES)}")
    with preflight.knobs("config.model"):
        return sde_from_config(config)


device = distributed.device


def build_state(config, parallel=False):
    """A fresh TrainState on the device: network, EMA, optimizer and the training generator (seeded alike on
    every rank); with `parallel` under several processes, the network's DistributedDataParallel wrapper."""
    torch.manual_seed(config.seed)  # the network's initialisation
    state = train_state(config, device())
    if parallel and distributed.shard().world_size > 1:
        state.ddp = torch.nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device()] if device().index is not None else None)
    return state


def loss_kwargs(config, train):
    t = config.training
    return dict(continuous=t.continuous, reduce_mean=t.reduce_mean,
                likelihood_weighting=t.likelihood_weighting, train=train, shard=distributed.shard(),
                num_classes=config.model.num_classes, class_dropout=t.class_dropout,
                **objective_knobs(config))


def labelled(config):
    """Whether training and its losses see the data's class labels: a class-conditional network, or the
    noise-conditional classifier (whose classifier_config sets model.num_classes too)."""
    return config.get("model", {}).get("num_classes", 0) > 0  # a data-only config has no model section


def dataset_options(config, split):
    """config.data's image dataset as data.image_dataset's arguments, for a split ('train' or 'test')."""
    d = config.data
    return dict(name=d.dataset, root=d.get("root", data.DEFAULT_ROOT), split=split, image_size=d.image_size,
                num_channels=num_channels(d), category=d.get("category"), download=d.get("download", False))


def data_options(config, split, shard=distributed.ONE_PROCESS):
    """data.batches' arguments for a split, but the generator and epochs: the dataset (config.data), this
    rank's share of the batch size (config.training.batch_size for 'train', else config.eval.batch_size),
    and for images the augmentation and scaling knobs (config.data)."""
    d = config.data
    batch_size = _per_rank(*_batch_size(config, split), shard.world_size)
    options = dict(split=split, batch_size=batch_size, shard=shard, labels=labelled(config))
    if d.dataset in data.TOYS:
        return options | dict(name=d.dataset, dim=d.get("dim", 2))
    return options | dataset_options(config, split) | dict(
        random_flip=d.random_flip, uniform_dequantization=d.uniform_dequantization, centered=d.centered,
        num_workers=d.get("num_workers"))


def draw_samples(config, sde, model, batch_size, generator, progress=True, labels=None, classifier_fn=None):
    """Samples in data space (inverse scaler applied) from the model's score, by the configured sampler; of
    the classes `labels` [batch_size] when given, guided as api.guided_score_fn says."""
    score_fn = guided_score_fn(config, sde, model, labels, classifier_fn)
    kwargs = sampler_kwargs(config)  # checks the method's name
    sampler = SAMPLERS[config.sampling.method]  # every sampler runs under no_grad itself
    x, nfe = sampler(sde, score_fn, sample_shape(config, batch_size), generator=generator,
                     device=device(), progress=progress, **kwargs)
    return data_kind(config).to_data_space(x), nfe


class NonFiniteResult(RuntimeError):
    """Samples, likelihoods or a loss that are NaN or infinite: never written or reported as results."""


def count_non_finite(values):
    """How many of the items values [N, ...] hold a NaN or an infinity (one host read)."""
    return int((~torch.isfinite(values.reshape(len(values), -1)).all(1)).sum())


def require_finite(values, what):
    """NonFiniteResult saying how many of the items values [N, ...] hold a NaN or an infinity."""
    bad = count_non_finite(values)
    if bad:
        raise NonFiniteResult(f"{bad} of {len(values)} {what} are not finite (NaN or infinite); nothing was "
                              "written: the weights or the sampler's settings diverge")


# ---- before the first step: every object built from the config, and tried once ----


def check_network(config, sde, model):
    """One forward of a one-item batch: config.data (image_size, num_channels, dim) against the network."""
    shape = sample_shape(config, 1)
    score_fn = model_score_fn(config, sde, model)
    x = torch.zeros(shape, device=device())
    try:
        with torch.no_grad():
            out = score_fn(x, torch.full((1,), 0.5, device=device()))
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"config.model.name={config.model.name!r} cannot take data of shape {shape[1:]} "
                          f"(config.data): {str(error).splitlines()[0]}") from error
    if out.shape != x.shape:
        raise ConfigError(f"config.model.name={config.model.name!r} maps data of shape {shape[1:]} "
                          f"(config.data) to {tuple(out.shape[1:])}")


def check_loss(config, state, loss_fn):
    """The configured loss of the network on a two-item batch (config.training: continuous, the SDE's
    discrete loss, weighting), without gradients or any effect on the training state."""
    gen = torch.Generator(device()).manual_seed(0)
    labels = torch.zeros(2, dtype=torch.long, device=device()) if labelled(config) else None
    with preflight.knobs("config.training"), torch.no_grad():
        loss_fn(state, torch.zeros(sample_shape(config, 2), device=device()), gen, labels)


def check_data(config, splits):
    """Open each split's batch stream: a missing dataset or a batch larger than the data fails now."""
    shard = distributed.shard()
    for split in splits:
        with preflight.knobs("config.data"):
            data.batches(**data_options(config, split, shard),
                         generator=torch.Generator(device()).manual_seed(0))


def dry_run_sampler(config, sde, model, labels=None, classifier_fn=None):
    """One real step of the configured sampler with the network (guided towards `labels` [2] as it will
    be), on a two-sample batch (eager, whatever sampling.compile says), so that a setting which would fail
    at the first snapshot fails now."""
    s = config.sampling
    one_step = {"pc": s.n_steps_each + 1, "ode": 7, "fast": 2}[s.method]  # evaluations in a first step
    with preflight.knobs("config.sampling"):
        score_fn = guided_score_fn(config, sde, model, labels, classifier_fn)
    kwargs = {key: value for key, value in sampler_kwargs(config).items() if key != "compile_mode"}
    try:
        with preflight.knobs(f"config.sampling (method {s.method!r})"):
            SAMPLERS[s.method](sde, preflight.stop_after(score_fn, one_step), sample_shape(config, 2),
                               generator=torch.Generator(device()).manual_seed(0), device=device(),
                               **kwargs)
    except preflight.DryRunDone:
        pass


def dry_run_likelihood(config, sde, model):
    """One drift-and-divergence evaluation of the likelihood's ODE, at eval.bpd_precision, on two items."""
    score_fn = model_score_fn(config, sde, model)
    drift_fn = probability_flow_drift(sde, score_fn)
    x = torch.zeros(sample_shape(config, 2), device=device())
    with acceleration.autocast(device(), config.eval.bpd_precision):
        drift_and_divergence(drift_fn, x, torch.full((2,), 0.5, device=device()), torch.ones_like(x))


def prepare_training(config):
    """(sde, state, loss_fn, eval_loss_fn), each built from the config and tried once: values,
    network, loss, data and the snapshot sampler. Writes nothing; a bad setting is a ConfigError."""
    preflight.check_values(config, "train", distributed.shard().world_size)
    sde = build_sde(config)
    with preflight.knobs("config.model"):
        state = build_state(config, parallel=True)
    with preflight.knobs("config.training"):
        loss_fn = training.make_loss(sde, **loss_kwargs(config, train=True))
        eval_loss_fn = training.make_loss(sde, **loss_kwargs(config, train=False))
    check_network(config, sde, state.model)
    check_loss(config, state, eval_loss_fn)
    check_data(config, ("train", "test"))
    if config.training.snapshot_sampling:
        dry_run_sampler(config, sde, state.model, snapshot_labels(config, 2))
    return sde, state, loss_fn, eval_loss_fn


# ---- workdir ----


def write_config(config, workdir):
    text = config.to_json_best_effort(indent=2)
    atomic_write(workdir / "config.json", lambda f: f.write(text.encode()))


def workdir_lock(workdir, mode):
    """On rank 0, the workdir's lock for `mode` (train or eval; each one run at a time, but an evaluation
    may run beside training); LockHeld at once, naming the holder, if another process has it."""
    if not distributed.is_main():
        return contextlib.nullcontext()
    return exclusive_lock(workdir / f"{mode}.lock", f"workdir {workdir} ({mode})")


def checkpoint_identity(path, step):
    """What identifies a checkpoint in the results computed from it: its path, step, size and SHA-256."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return dict(path=str(path), step=int(step), bytes=path.stat().st_size, sha256=digest.hexdigest())


def load_trained_state(config, workdir, checkpoint=None):
    """(TrainState, path) from our checkpoint (the latest in workdir, or `checkpoint`; written on any kind
    of device), or from a checkpoint of the original implementation (a dict with 'model' and 'ema' in its
    format: the optimizer state stays fresh)."""
    path = Path(checkpoint) if checkpoint else latest_checkpoint(workdir)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return training.load_into(training.read_checkpoint(path), build_state(config), path, with_rng=False,
                              original_ok=True), path


def load_for_inference(config, workdir, checkpoint=None):
    """(the network with its EMA weights in eval mode, checkpoint path); see load_trained_state."""
    state, path = load_trained_state(config, workdir, checkpoint)
    return inference_model(state), path


def inference_model(state):
    """The state's network carrying its EMA weights, in eval mode."""
    state.ema.copy_to(state.model)
    return state.model.eval()


# ---- logging ----


class Logger:
    """wandb (offline unless WANDB_API_KEY or WANDB_MODE says otherwise) plus a JSON-lines log in workdir."""

    def __init__(self, config, workdir):
        import wandb  # imported here: it is slow to import and only the logging modes need it

        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(project="score_sde", dir=str(workdir), config=config.to_dict(), mode=mode,
                              resume="allow", id=_run_id(workdir))
        self.wandb = wandb
        self.path = workdir / "log.jsonl"

    def scalars(self, step, **values):
        self.run.log(values, step=step)
        with self.path.open("a") as f:
            f.write(json.dumps(dict(step=step, **values)) + "\n")

    def image(self, step, name, path):
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self):
        self.run.finish()


class SilentLogger:
    """The logger of ranks other than 0: logs nothing."""

    def scalars(self, step, **values):
        pass

    def image(self, step, name, path):
        pass

    def close(self):
        pass


def _run_id(workdir):
    """A stable wandb run id per workdir, so a resumed run continues its curves."""
    path = workdir / "wandb_id.txt"
    if not path.is_file():
        path.write_text(os.urandom(6).hex())
    return path.read_text().strip()


# ---- modes ----


def train(config, workdir, allow_config_change=False):
    """Train from scratch or resume from the workdir's resume point; checkpoints, samples and logs there.

    Everything is built from the config and tried once before the workdir is touched (prepare_training); a
    restart may not change a knob of the model, SDE, loss or data unless allow_config_change. A non-finite
    loss or weight stops training (TrainingDiverged) before anything non-finite is written: the last good
    resume point stays. Under torchrun every rank trains on its shard of each global batch
    (config.training.batch_size in all) through DistributedDataParallel; rank 0 alone writes.
    """
    workdir = Path(workdir)
    sde, state, loss_fn, eval_loss_fn = prepare_training(config)
    preflight.check_workdir_writable(workdir)
    with workdir_lock(workdir, "train"):
        _resume(config, workdir, state, allow_config_change)
        accelerate(config, state.model)
        logger = Logger(config, workdir) if distributed.is_main() else SilentLogger()
        try:
            _train_loop(config, workdir, sde, state, loss_fn, eval_loss_fn, logger)
        finally:
            logger.close()
    distributed.barrier()  # the other ranks wait for rank 0's last checkpoint
    return state


def train_classifier(config, workdir, allow_config_change=False):
    """Train the noise-conditional classifier of classifier guidance on the data's labels, perturbed by the
    SDE's kernel, into <workdir>/classifier/ (its own config.json, checkpoints and resume point, and a lock
    of its own, so it may train beside the score model). It trains under api.classifier_config(config) with
    the same loop as train: resumable, checked before the first step, stopped on divergence. Finally the
    held-out accuracy at a few noise levels goes to classifier/accuracy.json."""
    folder = Path(workdir) / "classifier"
    with preflight.knobs("config.classifier"):
        classifier_settings = classifier_config(config)
    preflight.check_values(classifier_settings, "train", distributed.shard().world_size)
    sde = build_sde(classifier_settings)
    shard = distributed.shard()
    with preflight.knobs("config.classifier"):
        state = build_state(classifier_settings, parallel=True)
    loss_fn = noise_classifier.make_classifier_loss(sde, train=True, shard=shard)
    eval_loss_fn = noise_classifier.make_classifier_loss(sde, train=False, shard=shard)
    with preflight.knobs("config.classifier"):
        check_loss(classifier_settings, state, eval_loss_fn)
    check_data(classifier_settings, ("train", "test"))
    preflight.check_workdir_writable(folder)
    with workdir_lock(folder, "train"):
        _resume(classifier_settings, folder, state, allow_config_change)
        logger = Logger(classifier_settings, folder) if distributed.is_main() else SilentLogger()
        try:
            _train_loop(classifier_settings, folder, sde, state, loss_fn, eval_loss_fn, logger)
        finally:
            logger.close()
    if distributed.is_main():
        _classifier_accuracy(classifier_settings, sde, state, folder)
    distributed.barrier()
    return state


CLASSIFIER_REPORT_TIMES = (0.01, 0.25, 0.5, 0.75, 1.0)  # fractions of T


def _classifier_accuracy(config, sde, state, folder):
    """The EMA classifier's accuracy on the first eval.batch_size test items perturbed to a few times."""
    x, labels = next(iter(data.batches(**data_options(config, "test"), epochs=1,
                                       generator=torch.Generator(device()).manual_seed(config.seed))))
    gen = torch.Generator(device()).manual_seed(config.seed)
    with state.ema.average_parameters(state.model):
        result = {f"{fraction * sde.T:g}": noise_classifier.accuracy(state.model, sde, x, labels,
                                                                     fraction * sde.T, gen)
                  for fraction in CLASSIFIER_REPORT_TIMES}
    write_json_atomic(folder / "accuracy.json", dict(step=state.step, num_items=len(x), accuracy_at_t=result))
    print("held-out accuracy at t = " + ", ".join(f"{t}: {a:.3f}" for t, a in result.items()), flush=True)


def _resume(config, workdir, state, allow_config_change):
    """Refuse a config whose protected knobs changed, restore the resume point (saying so), then record
    the config in config.json (a replaced one is kept as config.replaced-<time>.json)."""
    meta = meta_checkpoint(workdir)
    has_checkpoints = meta.is_file() or any(workdir.glob("checkpoints/checkpoint_*.pth"))
    changes = preflight.check_config_change(config, workdir, has_checkpoints, allow_config_change)
    training.restore_checkpoint(meta, state, missing_ok=True)
    if not distributed.is_main():
        return
    if state.step:
        print(f"resuming from step {state.step} ({meta})", flush=True)
    if changes:
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        os.replace(workdir / "config.json", workdir / f"config.replaced-{stamp}.json")
        print(f"config changed (--allow_config_change): {'; '.join(changes)}", flush=True)
    write_config(config, workdir)


def accelerate(config, model):
    """Check training.precision, and compile the network in place (state-dict keys unchanged) when
    training.compile names a mode; the first training step then pays for the compilation."""
    acceleration.check_precision(config.training.precision)
    acceleration.compile_in_place(model, config.training.compile)


def _start_segment(config, split, step):
    """The data stream from `step` on, seeded by (seed, step), the same on every rank, and the global RNG
    (dropout) seeded by (seed, step, rank): a run resumed at a preemption checkpoint draws exactly what the
    uninterrupted run drew, because both reseed at those steps; each rank drops out its own units."""
    shard = distributed.shard()
    torch.manual_seed((config.seed * 1_000_003 + step) * 4099 + shard.rank)
    gen = torch.Generator(device()).manual_seed(config.seed * 1_000_003 + step)
    return data.batches(**data_options(config, split, shard), generator=gen)


def _train_loop(config, workdir, sde, state, loss_fn, eval_loss_fn, logger):
    t, shard = config.training, distributed.shard()
    eval_gen = torch.Generator(device()).manual_seed(config.seed + 1)
    eval_batches = data.batches(**data_options(config, "test", shard),
                                generator=torch.Generator(device()).manual_seed(config.seed))
    # (an endless stream: the evaluation loss is a running check, one batch every eval_freq steps)
    monitor = training.DivergenceMonitor(state.step, device())
    resumed_from = state.step if meta_checkpoint(workdir).is_file() else None
    bar = tqdm(total=t.n_iters, initial=state.step, desc="training", unit="step", disable=shard.rank > 0)
    try:
        while state.step < t.n_iters:
            for batch in _start_segment(config, "train", state.step):
                _step(config, state, *split_batch(batch), loss_fn, monitor, logger, bar)
                if state.step % t.eval_freq == 0:
                    monitor.check()  # a diverged training loss is the better message
                    _eval_loss(state, *split_batch(next(eval_batches)), eval_loss_fn, eval_gen, logger)
                if _checkpoint_due(config, state.step):
                    monitor.check(state)  # nothing non-finite is ever written
                    resumed_from = _write_checkpoints(config, workdir, sde, state, logger, resumed_from)
                    if resumed_from == state.step:
                        break  # reseed the data stream at every resume point
    except training.TrainingDiverged as error:
        where = (f"the resume point {meta_checkpoint(workdir)} (step {resumed_from}) is kept" if resumed_from
                 is not None else "no resume point had been written")
        raise training.TrainingDiverged(f"training diverged: {error}; nothing non-finite was written, "
                                        f"{where}. Lower optim.lr or raise optim.warmup, then rerun to "
                                        "resume") from None
    finally:
        bar.close()


def split_batch(batch):
    """(x, class labels or None) of a batch of data.batches, with or without labels."""
    return batch if isinstance(batch, tuple) else (batch, None)


def _step(config, state, batch, labels, loss_fn, monitor, logger, bar):
    """One training step; the loss is read back (and checked) every log_freq steps only."""
    t = config.training
    started = time.perf_counter()
    loss = training.train_step(state, batch, loss_fn, config.optim.lr, config.optim.warmup,
                               config.optim.grad_clip, t.precision, labels)
    monitor.observe(loss)  # on the device: no host read
    if t.compile is not None and state.step == monitor.start + 1:
        logging.warning("first training step took %.1f s (torch.compile mode %r included)",
                        time.perf_counter() - started, t.compile)
    bar.update(1)
    if state.step % t.log_freq == 0:
        monitor.check()
        value = distributed.mean(loss).item()  # the one host read, every log_freq steps
        bar.set_postfix(loss=f"{value:.4f}")
        logger.scalars(state.step, training_loss=value)


def _eval_loss(state, batch, labels, eval_loss_fn, generator, logger):
    value = distributed.mean(training.eval_step(state, batch, eval_loss_fn, generator, labels)).item()
    if not math.isfinite(value):
        raise training.TrainingDiverged(f"the evaluation loss of the EMA weights is {value} at step "
                                        f"{state.step}")
    logger.scalars(state.step, eval_loss=value)


def _resume_point_due(config, step):
    t = config.training
    return step % t.snapshot_freq_for_preemption == 0 or step == t.n_iters


def _snapshot_due(config, step):
    t = config.training
    return step % t.snapshot_freq == 0 or step == t.n_iters


def _checkpoint_due(config, step):
    return _resume_point_due(config, step) or _snapshot_due(config, step)


def _write_checkpoints(config, workdir, sde, state, logger, resumed_from):
    """The resume point (when due) first, as the original: a run killed while snapshot samples are drawn
    resumes from this step. Then the numbered checkpoint and its samples (when due). Returns the step of
    the latest resume point (None if none yet)."""
    if _resume_point_due(config, state.step):
        if distributed.is_main():
            training.save_checkpoint(meta_checkpoint(workdir), state)
        resumed_from = state.step
    if _snapshot_due(config, state.step):
        _snapshot(config, workdir, sde, state, logger)
    return resumed_from


def _snapshot(config, workdir, sde, state, logger):
    """On rank 0: a numbered checkpoint and, if configured, samples drawn with the EMA weights."""
    if not distributed.is_main():
        return
    number = state.step // config.training.snapshot_freq
    training.save_checkpoint(workdir / "checkpoints" / f"checkpoint_{number}.pth", state)
    if not config.training.snapshot_sampling:
        return
    gen = torch.Generator(device()).manual_seed(config.seed + state.step)
    with state.ema.average_parameters(state.model):
        kind = data_kind(config)
        num = kind.snapshot_size(config.training.batch_size)
        samples, _ = draw_samples(config, sde, state.model, num, gen, progress=False,
                                  labels=snapshot_labels(config, num))
    bad = count_non_finite(samples)
    if bad:  # the weights are finite (checked), but their samples are not: worth a word, not a stop
        logging.warning("step %d: %d of %d snapshot samples are not finite", state.step, bad, len(samples))
    path = workdir / "samples" / f"iter_{state.step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    kind.save_picture(path, samples)
    logger.image(state.step, "samples", path)


def rank_generator(config):
    """A generator seeded by (seed, rank): each rank's samples and estimator noise are its own."""
    return torch.Generator(device()).manual_seed(config.seed + 7919 * distributed.shard().rank)


def _batch_size(config, split):
    """(the global batch size of a split, its knob): training's for train, eval's for test."""
    return ((config.training.batch_size, "training.batch_size") if split == "train"
            else (config.eval.batch_size, "eval.batch_size"))


def _per_rank(total, what, world_size=None):
    """This process's share of `total` (a batch size named `what`), which must split evenly."""
    world_size = world_size or distributed.shard().world_size
    if total % world_size:
        raise ValueError(f"{what} = {total} does not split evenly over {world_size} processes")
    return total // world_size


def sample(config, workdir, checkpoint=None):
    """Draw config.eval.batch_size samples with the EMA weights (split over the ranks under torchrun); rank 0
    writes a PNG and an .npz of them all, with what produced them. Non-finite samples are refused. With
    sampling.class_label, the samples are of those classes (guided: docs/guidance.md), one class to a row of
    the PNG, and the .npz holds their labels."""
    workdir = Path(workdir)
    preflight.check_values(config, "sample", distributed.shard().world_size)
    sde = build_sde(config)
    state, path = load_trained_state(config, workdir, checkpoint)
    model = inference_model(state)
    check_network(config, sde, model)
    classifier, classifier_fn = sampling_classifier(config, sde)
    dry_run_sampler(config, sde, model, _rank_labels(config, 2), classifier_fn)
    preflight.check_workdir_writable(workdir)
    num = _per_rank(config.eval.batch_size, "eval.batch_size")
    labels = _rank_labels(config, num)
    samples, nfe = draw_samples(config, sde, model, num, rank_generator(config),
                                progress=distributed.is_main(), labels=labels, classifier_fn=classifier_fn)
    samples = torch.cat([part.to(samples.device) for part in distributed.gather(samples.cpu())])
    if not distributed.is_main():
        return samples
    require_finite(samples, "samples")
    out = workdir / "samples"
    kind = data_kind(config)
    labels = class_labels(config, len(samples))
    if labels is None or not kind.judged_by_features:
        kind.save_picture(out / "sample.png", samples)
    else:
        image_grid_png(out / "sample.png", *rows_by_class(samples, labels))
    arrays = dict(samples=samples.cpu().numpy()) | ({} if labels is None else dict(labels=labels.numpy()))
    atomic_write(out / "samples.npz", lambda f: np.savez_compressed(f, **arrays))
    produced_by = dict(checkpoint=checkpoint_identity(path, state.step),
                       sampler=sampler_settings(config, sde), num_samples=len(samples), nfe=nfe,
                       classifier=None if classifier is None else str(classifier))
    quality = kind.quality(samples, config.seed)  # toys' exact log-density; images are judged by eval
    write_json_atomic(out / "samples.json", dict(quality, produced_by=produced_by))
    print(f"{len(samples)} samples from {path} ({nfe} score evaluations) -> {out}")
    if quality:
        print(f"exact mean log-density of the samples {quality['samples_nats']:.3f} nats, "
              f"of data {quality['data_nats']:.3f} nats")
    return samples


def _rank_labels(config, num):
    """This rank's part of the class labels of a global batch of num · world_size samples (contiguous, so
    the gathered samples keep their order), on the device; None without sampling.class_label."""
    shard = distributed.shard()
    with preflight.knobs("config.sampling"):
        labels = class_labels(config, num * shard.world_size)
    return None if labels is None else labels[shard.rank * num:(shard.rank + 1) * num].to(device())


def snapshot_labels(config, num):
    """The classes of training's snapshot samples: sampling.class_label's for a class-conditional network
    (with sampling.guidance), else none: the classifier of classifier guidance is trained after."""
    return _rank_labels(config, num) if labelled(config) else None


def sampling_classifier(config, sde):
    """(checkpoint path, log-probability function) of sampling.classifier, checked against the model's SDE
    and data and tried once; (None, None) when unset."""
    if not config.sampling.classifier:
        return None, None
    with preflight.knobs("config.sampling.classifier"):
        _, classifier_fn = load_classifier(config.sampling.classifier, config, device())
        x = torch.zeros(sample_shape(config, 1), device=device())
        classifier_fn(x, torch.full((1,), 0.5, device=device()))
    return Path(config.sampling.classifier), classifier_fn


def rows_by_class(images, labels):
    """(images [N, C, H, W], row length): the images one class to a row, in the order of the classes;
    shorter rows are padded with blank images."""
    classes = labels.unique(sorted=True)
    per_row = max(int((labels == k).sum()) for k in classes)
    rows = []
    for k in classes:
        chosen = images[labels == k]
        rows += [chosen, torch.zeros((per_row - len(chosen), *images.shape[1:]), dtype=images.dtype)]
    return torch.cat(rows), per_row


def sampler_settings(config, sde):
    """What the samples depend on besides the weights: the SDE, the sampler and its knobs, eps, the seed."""
    m, name = config.model, str(config.training.sde).lower()
    knobs = ("sigma_min", "sigma_max") if name == "vesde" else ("beta_min", "beta_max")
    o = objective_knobs(config)
    s = config.sampling
    classes = dict(class_label=s.class_label, guidance=s.guidance, classifier=s.classifier,
                   classifier_scale=s.classifier_scale) if s.class_label is not None else {}
    return dict(sde=name, num_scales=m.num_scales, continuous=config.training.continuous,
                **{knob: m[knob] for knob in knobs}, preconditioning=o["preconditioning"],
                sigma_data=o["sigma_data"], method=config.sampling.method, eps=sde.sampling_eps,
                seed=config.seed, **resolved_sampler_kwargs(config, sde), **classes)


def resolved_sampler_kwargs(config, sde):
    """sampler_kwargs with a fast sampler's "auto" solver and schedule resolved: records name what ran."""
    kwargs = sampler_kwargs(config)
    if config.sampling.method == "fast":
        solver, schedule, options = resolve_settings(sde, kwargs["steps"], kwargs.pop("solver"),
                                                     kwargs.pop("schedule"), {})
        kwargs.update(solver=solver, schedule=schedule, **options)
    return kwargs


# ---- conditional sampling: inpainting, colorization, super-resolution (docs/controllable.md) ----

def controllable(config, workdir, checkpoint=None, task="inpaint"):
    """Complete sampling.num_inputs images of sampling.inputs (a split of config.data, or a folder of PNGs)
    observed by `task` (sampling.mask, sampling.superres_factor; sampling.sigma_y noise added to the
    observation), with sampling.conditional_method ('smc' with sampling.particles and sampling.smc_steps, or
    the paper's 'replacement' on the config's PC sampler). Rank 0 writes workdir/<task>/: grid.png (rows:
    inputs, observations, samples), samples.npz and summary.json with what produced them."""
    workdir = Path(workdir)
    preflight.check_values(config, task)
    sde = build_sde(config)
    state, path = load_trained_state(config, workdir, checkpoint)
    model = inference_model(state)
    check_network(config, sde, model)
    kind, gen = data_kind(config), rank_generator(config)
    with preflight.knobs("config.sampling"):
        images = controllable_inputs(config).to(device())
        observation = observe(config, task, kind.to_model_space(images), gen)
    preflight.check_workdir_writable(workdir)
    if not distributed.is_main():  # one process completes the few inputs
        return None
    s = config.sampling
    options = (dict(particles=s.particles, steps=s.smc_steps) if s.conditional_method == "smc" else
               dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr, n_steps=s.n_steps_each,
                    probability_flow=s.probability_flow, denoise=s.noise_removal))
    score_fn = model_score_fn(config, sde, model)
    first_step = 1 if s.conditional_method == "smc" else s.n_steps_each + 2  # a whole first step and more
    try:  # one real step on the real inputs: a setting that would fail mid-way fails now
        with preflight.knobs(f"config.sampling (conditional_method {s.conditional_method!r})"):
            conditional_sample(sde, preflight.stop_after(score_fn, first_step), images.shape, observation,
                               s.conditional_method, generator=torch.Generator(device()).manual_seed(0),
                               device=device(), **options)
    except preflight.DryRunDone:
        pass
    x, nfe = conditional_sample(sde, score_fn, images.shape, observation, s.conditional_method, generator=gen,
                                device=device(), progress=True, **options)
    samples = kind.to_data_space(x)
    require_finite(samples, "samples")
    shown = kind.to_data_space(observation.pseudo_inverse())
    out = workdir / task
    out.mkdir(parents=True, exist_ok=True)
    image_grid_png(out / "grid.png", torch.cat([images, shown, samples]), nrow=len(images))
    arrays = dict(inputs=images, observations=shown, samples=samples)
    atomic_write(out / "samples.npz", lambda f: np.savez_compressed(
        f, **{name: v.cpu().numpy() for name, v in arrays.items()}))
    settings = dict(task=task, **{k: s[k] for k in CONTROLLABLE_KNOBS}, seed=config.seed)
    write_json_atomic(out / "summary.json", dict(num_samples=len(samples), nfe=nfe, produced_by=dict(
        checkpoint=checkpoint_identity(path, state.step), settings=settings)))
    print(f"{task}: {len(samples)} samples by {s.conditional_method} ({nfe} score evaluations each) -> {out}")
    return samples


CONTROLLABLE_KNOBS = ("inputs", "num_inputs", "mask", "superres_factor", "sigma_y", "conditional_method",
                      "particles", "smc_steps")


def controllable_inputs(config):
    """The first sampling.num_inputs images [B, C, H, W] in data space: of config.data's split when
    sampling.inputs is 'train' or 'test', else of the folder of image files it names (sorted, at the
    config's image size and channels exactly: nothing is resized)."""
    s, d = config.sampling, config.data
    if s.inputs in data.SPLITS:
        dataset = data.image_dataset(**dataset_options(config, s.inputs))
    else:
        dataset = data.PILImages(data.ImageFiles(Path(s.inputs).expanduser()), _exact_size, d.image_size,
                                 num_channels(d))
    if len(dataset) < s.num_inputs:
        raise ValueError(f"inputs={s.inputs!r} holds {len(dataset)} images, fewer than num_inputs="
                         f"{s.num_inputs}")
    return torch.stack([dataset[i][0] for i in range(s.num_inputs)])


def _exact_size(x, image_size):
    if tuple(x.shape[1:]) != (image_size, image_size):
        raise ValueError(f"an input image is {x.shape[2]} × {x.shape[1]} pixels; the model takes "
                         f"{image_size} × {image_size} (data.image_size): resize the inputs first")
    return x


def observe(config, task, x, generator):
    """The task's observation of model-space images x [B, C, H, W], noised by sampling.sigma_y."""
    s = config.sampling
    if task == "inpaint":
        known = _mask(s.mask, x.shape[-1]).to(x.device).expand_as(x)
        return Inpainting(known, _noisy(x, s.sigma_y, generator), s.sigma_y)
    if task == "colorize":
        return Colorization(_noisy(x.mean(1, keepdim=True), s.sigma_y, generator), s.sigma_y)
    factor = s.superres_factor
    return SuperResolution(_noisy(torch.nn.functional.avg_pool2d(x, factor), s.sigma_y, generator), factor,
                           s.sigma_y)


def _noisy(y, sigma_y, generator):
    return y + sigma_y * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)


def _mask(mask, size):
    """A built-in mask (observations.MASKS) or a PNG file (nonzero: known), as bool [1, 1, size, size]."""
    if mask in MASKS:
        return MASKS[mask](size)[None, None]
    from PIL import Image

    path = Path(mask).expanduser()
    if not path.is_file():
        raise ValueError(f"mask={mask!r} is neither a built-in mask {sorted(MASKS)} nor a PNG file")
    known = torch.from_numpy(np.array(Image.open(path).convert("L"))) > 0
    if tuple(known.shape) != (size, size):
        raise ValueError(f"mask {path} is {known.shape[1]} × {known.shape[0]} pixels; the images are "
                         f"{size} × {size}")
    return known[None, None]


def likelihood(config, workdir, checkpoint=None):
    """Log-likelihood of the config.eval.bpd_dataset split through the probability-flow ODE: bits/dim for
    images (dequantized, as the original), nats per point for toy data; mean ± standard error, and an .npz
    of the per-item values, with what produced them. Non-finite values are refused."""
    workdir = Path(workdir)
    e = config.eval
    preflight.check_values(config, "likelihood")
    sde = build_sde(config)
    state, path = load_trained_state(config, workdir, checkpoint)
    model = inference_model(state)
    check_network(config, sde, model)
    dry_run_likelihood(config, sde, model)
    batches = _likelihood_batches(config)  # opens the data now
    preflight.check_workdir_writable(workdir)
    acceleration.compile_in_place(model, e.bpd_compile)
    score_fn = model_score_fn(config, sde, model)
    kind = data_kind(config)
    points, values, gen = [], [], rank_generator(config)  # one stream: each batch draws its own probes
    for batch in tqdm(batches, desc="likelihood", unit="batch", disable=not distributed.is_main()):
        points.append(batch)
        with acceleration.autocast(device(), e.bpd_precision):
            logp, _, _ = log_likelihood(sde, score_fn, batch, generator=gen)
        values.append(kind.from_log_likelihood(logp, batch))
    # Rank r evaluated items r, r + world_size, ... of the split: interleaving restores the split's order.
    values = distributed.interleave(distributed.gather(torch.cat(values).double().cpu()))
    points = distributed.interleave(distributed.gather(torch.cat(points).cpu()))
    if not distributed.is_main():
        return None
    require_finite(values, "log-likelihoods")
    unit = kind.unit
    summary = dict(checkpoint=str(path), unit=unit, count=len(values), mean=values.mean().item(),
                   stderr=values.std().item() / math.sqrt(len(values)))
    exact = kind.density()
    if exact is not None:  # the same held-out points' true log-density, to compare with
        summary["exact_mean"] = exact.log_prob(points.double()).mean().item()
    summary["produced_by"] = dict(checkpoint=checkpoint_identity(path, state.step),
                                  settings=likelihood_settings(config))
    out = workdir / "likelihood"
    atomic_write(out / "values.npz", lambda f: np.savez_compressed(f, values=values.numpy()))
    write_json_atomic(out / "summary.json", summary)
    exact_text = f"; exact {summary['exact_mean']:.4f} {unit}" if "exact_mean" in summary else ""
    print(f"{config.eval.bpd_dataset}: {summary['mean']:.4f} ± {summary['stderr']:.4f} {unit} "
          f"over {len(values)} items{exact_text} ({path})")
    return summary


def likelihood_settings(config):
    """What bits/dim depend on besides the weights."""
    e = config.eval
    return dict(bpd_dataset=e.bpd_dataset, bpd_num_items=e.bpd_num_items,
                bpd_num_repeats=e.get("bpd_num_repeats", 1), bpd_precision=e.bpd_precision,
                bpd_compile=e.bpd_compile, batch_size=e.batch_size,
                train_batch_size=config.training.batch_size, seed=config.seed, dataset=config.data.dataset,
                sde=str(config.training.sde).lower())


def _likelihood_batches(config):
    """This rank's batches of the config.eval.bpd_dataset split, dequantized if images: bits/dim is defined
    on dequantized pixels (docs/likelihood.md), eval.bpd_num_repeats passes over it with fresh dequantization
    noise (the original made 5 over the test split). Toy data never end: one batch of fresh points per pass
    is the held-out set."""
    kind, shard = data_kind(config), distributed.shard()
    split = "test" if config.eval.bpd_dataset == "test" else "train"
    options = data_options(config, split, shard) | kind.likelihood_options
    limit = config.eval.get("bpd_num_items")  # checked by preflight.check_likelihood

    def one_pass(repeat):
        generator = torch.Generator(device()).manual_seed(config.seed + repeat)
        batches = data.batches(**options, generator=generator, epochs=1)
        if kind.endless:
            return itertools.islice(batches, 1)
        if limit is None:
            return batches
        return _first_items(batches, len(range(shard.rank, limit, shard.world_size)))

    return itertools.chain.from_iterable(one_pass(r) for r in range(config.eval.get("bpd_num_repeats", 1)))


def _first_items(batches, num):
    """The batches cut after `num` items in all."""
    for batch in batches:
        if num <= 0:
            return
        yield batch[:num]
        num -= len(batch)


def evaluate(config, workdir, checkpoint=None, eval_folder="eval"):
    """For each checkpoint numbered eval.begin_ckpt..eval.end_ckpt in the workdir (or the given one): the
    test loss, bits/dim and eval.num_samples samples with their quality, as config.eval enables, written
    under workdir/eval_folder (the original's --eval_folder).

    Every setting is checked and tried first (prepare_evaluation). Each result and each round of samples is
    saved as it finishes (eval/ckpt_<n>/) with what produced it (the checkpoint's identity and the settings),
    so an interrupted evaluation resumes where it stopped, and a rerun with other settings or another file
    under the same number recomputes instead of reporting old numbers. With eval.wait_s > 0, each checkpoint
    of the range is waited for, as beside a running training job.
    """
    workdir = Path(workdir)
    if not eval_folder or Path(eval_folder).is_absolute() or ".." in Path(eval_folder).parts:
        raise ValueError(f"--eval_folder={eval_folder!r}: must be a folder name inside the workdir")
    judge = prepare_evaluation(config, workdir)
    preflight.check_workdir_writable(workdir)
    all_results, out = {}, workdir / eval_folder
    with workdir_lock(workdir, "eval"):
        for number, path in checkpoints_to_evaluate(config, workdir, checkpoint):
            folder = out / f"ckpt_{number}"
            all_results[f"checkpoint_{number}"] = _evaluate_checkpoint(config, workdir, number, path, folder,
                                                                       judge)
            if distributed.is_main():
                write_json_atomic(out / "results.json", all_results)
    if distributed.is_main():  # what produced them is in the files; the printout keeps to the numbers
        print(json.dumps(_numbers_only(all_results), indent=2))
    return all_results


def _numbers_only(results):
    """results without their 'produced_by' records, at any depth."""
    if not isinstance(results, dict):
        return results
    return {key: _numbers_only(value) for key, value in results.items() if key != "produced_by"}


def prepare_evaluation(config, workdir):
    """Check and try every part evaluation enables, on a freshly initialised network (the checkpoints may
    not exist yet); returns the sample judge: (feature network, reference statistics), or None for toys or
    without sampling."""
    preflight.check_values(config, "eval", distributed.shard().world_size)
    e = config.eval
    sde = build_sde(config)
    with preflight.knobs("config.model"):
        state = build_state(config)
    check_network(config, sde, state.model)
    if e.enable_loss:
        with preflight.knobs("config.training"):
            check_loss(config, state, training.make_loss(sde, **loss_kwargs(config, train=False)))
        check_data(config, ("test",))
    if e.enable_bpd:
        dry_run_likelihood(config, sde, state.model)
    if e.enable_bpd or e.get("enable_bound"):
        _likelihood_batches(config)  # opens the data
    if not e.enable_sampling:
        return None
    dry_run_sampler(config, sde, state.model, _rank_labels(config, 2), sampling_classifier(config, sde)[1])
    if not data_kind(config).judged_by_features:
        return None
    with preflight.knobs("config.eval"):
        return feature_network(config), evaluation.load_statistics(stats_path(config, workdir))


def checkpoints_to_evaluate(config, workdir, checkpoint=None):
    """(number, path) pairs: the given checkpoint, or the workdir's checkpoint_<n>.pth with n in
    [eval.begin_ckpt, eval.end_ckpt]. With eval.wait_s > 0 each number of the range in turn, waited for
    up to wait_s seconds (FileNotFoundError past that); without, those that exist (FileNotFoundError naming
    the range and what exists if none)."""
    if checkpoint:
        numbers = re.findall(r"\d+", Path(checkpoint).stem)
        yield int(numbers[-1]) if numbers else 0, Path(checkpoint)
        return
    e = config.eval
    if e.get("wait_s", 0) > 0:
        for number in range(e.begin_ckpt, e.end_ckpt + 1):
            yield number, wait_for_checkpoint(workdir / "checkpoints" / f"checkpoint_{number}.pth", e.wait_s)
        return
    found = {int(re.findall(r"\d+", p.stem)[-1]): p for p in workdir.glob("checkpoints/checkpoint_*.pth")}
    chosen = sorted((n, p) for n, p in found.items() if e.begin_ckpt <= n <= e.end_ckpt)
    if not chosen:
        raise FileNotFoundError(f"no checkpoint numbered {e.begin_ckpt}..{e.end_ckpt} (eval.begin_ckpt, "
                                f"eval.end_ckpt) in {workdir / 'checkpoints'}; there are {sorted(found)} "
                                "(set eval.wait_s to wait for a running training job's checkpoints)")
    yield from chosen


def wait_for_checkpoint(path, wait_s, poll_s=1.0):
    """path once it exists (checkpoints appear whole: they are renamed into place), polling every poll_s
    seconds for up to wait_s seconds, as the original's evaluation loop waits for training's."""
    deadline = time.monotonic() + wait_s
    if not path.is_file() and distributed.is_main():
        print(f"waiting up to {wait_s:g} s for {path}", flush=True)
    while not path.is_file():
        if time.monotonic() >= deadline:
            raise FileNotFoundError(f"{path} did not appear within eval.wait_s={wait_s:g} s; the results of "
                                    "the checkpoints before it are saved")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    return path


def _evaluate_checkpoint(config, workdir, number, path, folder, judge):
    """One checkpoint's results: each enabled part read from folder/results.json when it was produced by
    this very checkpoint file and these settings, else computed (and saved at once)."""
    results_path = folder / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    produced_by = results.setdefault("produced_by", {})
    state, path = load_trained_state(config, None, path)
    identity = checkpoint_identity(path, state.step)
    parts = [("test_loss", config.eval.enable_loss, lambda: _test_loss(config, state)),
             ("likelihood", config.eval.enable_bpd, lambda: likelihood(config, workdir, path)),
             ("bound", config.eval.get("enable_bound", False),
              lambda: _bound(config, inference_model(state), folder)),
             ("samples", config.eval.enable_sampling,
              lambda: _sample_quality(config, number, inference_model(state), identity, folder, judge))]
    for name, enabled, compute in parts:
        signature = _as_json(dict(checkpoint=identity, settings=_part_settings(config, name)))
        if not enabled or (name in results and produced_by.get(name) == signature):
            continue
        if name in results and distributed.is_main():
            print(f"checkpoint {number}: recomputing {name}, saved for another checkpoint file or settings",
                  flush=True)
        results[name], produced_by[name] = compute(), signature
        if distributed.is_main():
            write_json_atomic(results_path, results)
    return results


def _as_json(value):
    """value as it reads back from JSON (tuples become lists), so that saved and new compare equal."""
    return json.loads(json.dumps(value))


def _part_settings(config, name):
    """The settings an evaluation part depends on besides the checkpoint."""
    e = config.eval
    if name == "test_loss":
        t = config.training
        return dict(sde=str(t.sde).lower(), continuous=t.continuous, reduce_mean=t.reduce_mean,
                    likelihood_weighting=t.likelihood_weighting, batch_size=e.batch_size, seed=config.seed,
                    dataset=config.data.dataset, **objective_knobs(config))
    if name == "likelihood":
        return likelihood_settings(config)
    if name == "bound":
        return dict(likelihood_settings(config), num_times=e.bound_num_times,
                    quantity=data_kind(config).bound_quantity)
    return dict(_round_settings(config, build_sde(config)), num_samples=e.num_samples)


def _round_settings(config, sde):
    """What a round of evaluation samples depends on besides the checkpoint and its index and size."""
    e = config.eval
    judge = None if not data_kind(config).judged_by_features else dict(
        features=e.features, weights=e.inception_weights if e.features == "inception" else e.mnist_classifier)
    return dict(sampler=sampler_settings(config, sde), round_size=e.batch_size, judge=judge)


def _sample_quality(config, number, model, identity, folder, judge):
    """eval.num_samples samples in rounds of eval.batch_size (split over the ranks): FID / KID / IS against
    the reference statistics for images, the exact mean log-density for toys."""
    kind, sde = data_kind(config), build_sde(config)
    classifier_fn = sampling_classifier(config, sde)[1]

    def draw_round(index, size):
        gen = torch.Generator(device()).manual_seed(evaluation.round_seed(config.seed, number, index) * 7919
                                                     + distributed.shard().rank)
        num = _per_rank(size, "each round's size")
        labels = _rank_labels(config, num)
        samples, nfe = draw_samples(config, sde, model, num, gen, progress=False, labels=labels,
                                    classifier_fn=classifier_fn)
        require_finite(samples, f"samples of round {index} (checkpoint {number})")
        arrays = kind.round_arrays(samples, judge)
        arrays["nfe"] = np.full(len(samples), nfe)  # score evaluations per sample
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy()
        parts = distributed.gather(arrays)
        return {name: np.concatenate([p[name] for p in parts]) for name in arrays}

    signature = _as_json(dict(checkpoint=identity, **_round_settings(config, sde)))
    rounds = evaluation.sample_rounds(draw_round, config.eval.num_samples, config.eval.batch_size, folder,
                                      signature, main=distributed.is_main(), progress=distributed.is_main())
    samples = torch.from_numpy(rounds["samples"])
    kind.save_picture(folder / "samples.png", samples[:kind.snapshot_size(len(samples))])
    quality = kind.rounds_quality(rounds, judge, config.seed)
    if "labels" in rounds:
        quality |= class_accuracy(config, rounds)
    if "samples_nats" in quality and distributed.is_main():
        print(f"exact mean log-density of {len(samples)} samples {quality['samples_nats']:.3f} nats, "
              f"of as many data points {quality['data_nats']:.3f} nats")
    return dict(quality, num_samples=len(samples), nfe=int(rounds["nfe"].max()))


def class_accuracy(config, rounds):
    """How often samples asked for class k are judged to be of class k, per class and on average: by the
    judge's classifier for images (eval.features 'mnist'; the Inception's ImageNet classes are not the
    data's, so none is reported for it), by the exact mixture's most responsible component for the
    'gaussian_mixture' toy."""
    kind = data_kind(config)
    if kind.judged_by_features and config.eval.features != "mnist":
        return {}
    predicted = kind.predicted_classes(rounds)
    if predicted is None:
        return {}
    labels = torch.from_numpy(rounds["labels"])
    per_class = {str(int(k)): float((predicted[labels == k] == k).double().mean()) for k in labels.unique()}
    return dict(class_accuracy=float((predicted == labels).double().mean()), per_class_accuracy=per_class)


# No graph: without no_grad every draw's activations were kept, and a U-Net's bound on 500 images ran out of
# memory (a score function that needs gradients opens enable_grad itself).
@torch.no_grad()
def _bound(config, model, folder):
    """The DSM bound (score_sde/bound.py) over the items bits/dim uses: for images, bits/dim of a bound on
    −log P of the pixels (the reconstruction term included); for toys, nats of a bound on the model's
    −log p_eps; mean ± standard error. The per-item values, in the split's order, go to
    folder/bound_values.npz, so that two checkpoints can be compared item by item (a paired difference)."""
    sde = build_sde(config)
    score_fn = model_score_fn(config, sde, model)
    kind, values, gen = data_kind(config), [], rank_generator(config)
    for batch in tqdm(_likelihood_batches(config), desc="bound", unit="batch",
                      disable=not distributed.is_main()):
        values.append(kind.bound(sde, score_fn, batch, config.eval.bound_num_times, gen))
    values = distributed.interleave(distributed.gather(torch.cat(values).double().cpu()))
    if not distributed.is_main():
        return None
    require_finite(values, "bound values")
    atomic_write(folder / "bound_values.npz", lambda f: np.savez_compressed(f, values=values.numpy()))
    return dict(unit=kind.unit, count=len(values), mean=values.mean().item(),
                stderr=values.std().item() / math.sqrt(len(values)))


def feature_network(config):
    """The eval.features network: 'inception' (the FID Inception, eval.inception_weights) or 'mnist' (our
    classifier, eval.mnist_classifier)."""
    e = config.eval
    if e.features == "inception":
        return InceptionFeatures(inception_weights(e.inception_weights, download=e.download), device())
    if e.features == "mnist":
        return MNISTFeatures(path=e.mnist_classifier, device=device())
    raise ValueError(f"unknown eval.features {e.features!r}; expected one of ['inception', 'mnist']")


def stats_path(config, workdir):
    """eval.stats, or by default workdir/stats/<dataset>_<image_size>_<features>_<split>.npz."""
    e, d = config.eval, config.data
    if e.stats:
        return Path(e.stats).expanduser()
    return Path(workdir) / "stats" / f"{d.dataset}_{d.image_size}_{e.features}_{e.stats_split}.npz"


def stats(config, workdir, checkpoint=None):
    """Reference statistics of the eval.stats_split split with the eval.features network, written to
    stats_path: uint8 images in 0–255, every image of the split in order, no flip, no dequantization."""
    preflight.check_values(config, "stats")
    path = stats_path(config, workdir)
    if not distributed.is_main():  # one process reads the split; the others have nothing to do
        return path
    with preflight.knobs("config.data"):
        dataset = data.image_dataset(**dataset_options(config, config.eval.stats_split))
    batches = data.plain_batches(dataset, config.eval.batch_size)
    with preflight.knobs("config.eval"):
        features = feature_network(config)
    result = evaluation.dataset_statistics((data_to_uint8(b) for b in batches), features,
                                           keep_features=config.eval.stats_features)
    save_npz_atomic(path, **result)
    print(f"statistics of {int(result['count'])} {config.data.dataset} {config.eval.stats_split} images "
          f"({config.eval.features} features) -> {path}")
    return path


def _test_loss(config, state):
    """The EMA weights' loss over the test split, as the original's evaluation; NonFiniteResult if it is not
    finite."""
    sde = build_sde(config)
    loss_fn = training.make_loss(sde, **loss_kwargs(config, train=False))
    gen = torch.Generator(device()).manual_seed(config.seed)
    shard = distributed.shard()
    batches = data.batches(**data_options(config, "test", shard), generator=gen, epochs=1)
    total, count = 0.0, 0
    for batch in tqdm(batches, desc="test loss", unit="batch", disable=not distributed.is_main()):
        batch, labels = split_batch(batch)
        # weighted by the batch size, so that a short last batch counts as much as its items
        total += training.eval_step(state, batch, loss_fn, gen, labels).item() * len(batch)
        count += len(batch)
    totals = distributed.gather((total, count))
    loss = sum(t for t, _ in totals) / sum(c for _, c in totals)
    if not math.isfinite(loss):
        raise NonFiniteResult(f"the test loss of checkpoint step {state.step} is {loss}; nothing was written")
    return loss
