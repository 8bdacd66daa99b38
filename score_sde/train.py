"""One optimisation step of a score network, and the training state that checkpoints save and restore.

Follows the original score_sde (losses.py: `get_optimizer`, `optimization_manager`, `get_step_fn`; utils.py:
`save_checkpoint`, `restore_checkpoint`), with the training randomness drawn from a generator kept in the
state, so that a run resumed from a checkpoint continues the same random stream.
"""
import dataclasses
import os
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from score_sde.acceleration import autocast
from score_sde.distributed import ONE_PROCESS, Shard
from score_sde.files import atomic_write
from score_sde.losses import get_loss_fn
from score_sde.models import ExponentialMovingAverage, get_model_fn, get_score_fn
from score_sde.models.checkpoints import (
    check_state_dict,
    is_reference_format,
    load_reference_checkpoint,
    safe_torch_load,
)
from score_sde.registry import lookup
from score_sde.sde import SDE

OPTIMIZERS = {"Adam": torch.optim.Adam}
STATE_KEYS = ("model", "ema", "optimizer", "step", "rng")
RNG_KEYS = ("generator", "torch", "cuda")
# How this process runs its optimizer, not what it learned: kept from the optimizer restored into rather than
# taken from the file, so a run saved with fused CUDA Adam resumes on a CPU and back.
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable")


def make_optimizer(params: Iterable[nn.Parameter], lr: float, beta1: float = 0.9, eps: float = 1e-8,
                   weight_decay: float = 0.0, optimizer: str = "Adam") -> torch.optim.Optimizer:
    """The original's optimizer: Adam with betas (beta1, 0.999), fused when every parameter is on a GPU.

    Args:
        params: all the network's parameters, frozen ones included (as the original, so optimizer states
            index `model.parameters()`); those without gradients are skipped by the step.
        lr, beta1, eps, weight_decay: `config.optim.lr`, `.beta1`, `.eps`, `.weight_decay`.
        optimizer: `config.optim.optimizer`; one of OPTIMIZERS.
    """
    optimizer_class = lookup(OPTIMIZERS, optimizer, "optimizer")
    params = list(params)
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return optimizer_class(params, lr=lr, betas=(beta1, 0.999), eps=eps, weight_decay=weight_decay,
                           fused=fused or None)


def learning_rate(step: int, lr: float, warmup: int) -> float:
    """The learning rate of the step numbered `step` (0 for the first): linear warm-up over `warmup` steps,
    lr·min(step / warmup, 1), as the original's optimize_fn; `lr` throughout when warmup <= 0.

    The first step (step 0) of a warmed-up run thus has learning rate 0, as in the original.
    """
    if warmup <= 0:
        return lr
    return lr * min(step / warmup, 1.0)


def optimize(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], step: int, lr: float,
             warmup: int, grad_clip: float) -> torch.Tensor | None:
    """Set the warmed-up learning rate, clip the gradients' global norm to grad_clip (when >= 0) and step.

    Returns:
        the gradients' global norm before clipping, a 0-d tensor on their device (no host sync), or None
        when grad_clip < 0.
    """
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, lr, warmup)
    norm = None
    if grad_clip >= 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip)
    optimizer.step()
    return norm


@dataclasses.dataclass
class TrainState:
    """What training carries from step to step, and what a checkpoint holds.

    Attributes:
        model: the score network.
        ema: the exponential moving average of its trainable parameters.
        optimizer: built over `model.parameters()`.
        step: the number of optimisation steps taken.
        generator: the source of the training losses' randomness (times, noise levels, noise), on the
            batches' device; None draws from torch's global generator. Under several processes it is in
            the same state on every rank (draws are made for the global batch; score_sde.distributed).
        ddp: under several processes, the model wrapped in DistributedDataParallel, which the training loss
            calls so that the ranks' gradients are averaged; None in one process. Not checkpointed.
    """

    model: nn.Module
    ema: ExponentialMovingAverage
    optimizer: torch.optim.Optimizer
    step: int = 0
    generator: torch.Generator | None = None
    ddp: nn.Module | None = None

    def state_dict(self) -> dict:
        """{'model', 'ema', 'optimizer', 'step', 'rng'}: tensors, numbers and containers only, so
        `torch.load(weights_only=True)` reads them."""
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": int(self.step), "rng": self.rng_state()}

    def rng_state(self) -> dict:
        """The training generator's state and torch's global ones, which dropout draws from: the CPU one,
        and the CUDA one of the model's device when it is a GPU."""
        device = model_device(self.model)
        return {"generator": None if self.generator is None else self.generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}

    def load_state_dict(self, state_dict: Mapping, with_rng: bool = True) -> None:
        """Load a `state_dict()` strictly: every part is checked before anything is overwritten.

        The global CUDA generator is restored only when both the checkpoint and the model are on a GPU: a
        run moved between CPU and GPU cannot repeat its dropout masks anyway.

        Args:
            with_rng: restore the generators too (resuming training). Without (sampling, evaluation), a
                checkpoint written on another kind of device loads as well.

        Raises:
            ValueError: naming missing or unexpected keys, shape mismatches or RNG states that do not fit;
                the state is then as it was.
        """
        problem = _keys_problem("the checkpoint", state_dict, STATE_KEYS)
        if problem:
            raise ValueError(problem + " (a checkpoint of the original implementation is read by "
                             "score_sde.models.load_reference_checkpoint)")
        if not isinstance(state_dict["model"], Mapping):
            raise ValueError(f"'model' must be a state dict, got {type(state_dict['model']).__name__}")
        check_state_dict(self.model, state_dict["model"])
        try:
            ema = ExponentialMovingAverage.from_state_dict(self.model, state_dict["ema"])  # checked, apart
        except ValueError as error:
            raise ValueError(f"'ema': {error}") from error
        check_optimizer_state(self.optimizer, state_dict["optimizer"])
        if not isinstance(state_dict["step"], int):
            raise ValueError(f"'step' must be an int, got {type(state_dict['step']).__name__}")
        if with_rng:
            check_rng_state(self, state_dict["rng"])
        # Every part fits: only now is anything changed.
        self.model.load_state_dict(state_dict["model"], strict=True)
        self.ema = ema
        self.optimizer.load_state_dict(keep_implementation(self.optimizer, state_dict["optimizer"]))
        self.step = state_dict["step"]
        if with_rng:
            self.load_rng_state(state_dict["rng"])

    def load_rng_state(self, rng: Mapping) -> None:
        if self.generator is not None:
            self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        device = model_device(self.model)
        if rng["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


def keep_implementation(optimizer: torch.optim.Optimizer, optimizer_state: Mapping) -> dict:
    """optimizer_state with each parameter group's IMPLEMENTATION_FLAGS taken from `optimizer`."""
    groups = [{**saved, **{k: own[k] for k in IMPLEMENTATION_FLAGS if k in own}}
              for saved, own in zip(optimizer_state["param_groups"], optimizer.param_groups)]
    return {**optimizer_state, "param_groups": groups}


def _keys_problem(what, got, expected):
    """A message naming the missing and unexpected keys of a mapping, or None when they agree."""
    if not isinstance(got, Mapping):
        return f"{what} must be a dict, got {type(got).__name__}"
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected), key=str)
    if missing or unexpected:
        return f"{what}: missing keys {missing}, unexpected keys {unexpected}"
    return None


def _check_keys(what, got, expected):
    problem = _keys_problem(what, got, expected)
    if problem:
        raise ValueError(problem)


def check_optimizer_state(optimizer: torch.optim.Optimizer, optimizer_state: Mapping) -> None:
    """ValueError when the saved parameter groups or per-parameter state do not fit the optimizer."""
    _check_keys("'optimizer'", optimizer_state, ("state", "param_groups"))
    saved, own = optimizer_state["param_groups"], optimizer.param_groups
    sizes, own_sizes = [len(g["params"]) for g in saved], [len(g["params"]) for g in own]
    if sizes != own_sizes:
        raise ValueError(f"'optimizer' parameter groups hold {sizes} parameters, the optimizer's {own_sizes}")
    params = {i: p for s, g in zip(saved, own) for i, p in zip(s["params"], g["params"])}
    unknown = sorted(set(optimizer_state["state"]) - set(params), key=str)
    if unknown:
        raise ValueError(f"'optimizer' state for unknown parameter indices {unknown}")
    wrong = [f"{i}.{k}: checkpoint {tuple(v.shape)} vs parameter {tuple(params[i].shape)}"
             for i, entry in optimizer_state["state"].items() for k, v in entry.items()
             if torch.is_tensor(v) and v.ndim > 0 and v.shape != params[i].shape]
    if wrong:
        raise ValueError(f"'optimizer' state shape mismatches: {wrong}")


def check_rng_state(state: TrainState, rng: Mapping) -> None:
    """ValueError when the saved generator states cannot be set: the training generator present in one and
    not the other, or of another kind (a CPU generator's state does not fit a CUDA one)."""
    _check_keys("'rng'", rng, RNG_KEYS)
    expected = {"generator": None if state.generator is None else state.generator.get_state(),
                "torch": torch.get_rng_state()}
    for name, own in expected.items():
        saved = rng[name]
        if (own is None) != (saved is None):
            raise ValueError(f"'rng' {name}: the checkpoint has {'no' if saved is None else 'a'} state, the "
                             f"training state {'none' if own is None else 'one'}")
        if own is not None and (not torch.is_tensor(saved) or saved.shape != own.shape
                                or saved.dtype != own.dtype):
            raise ValueError(f"'rng' {name}: the saved state is not a {own.dtype} tensor of shape "
                             f"{tuple(own.shape)} (a generator on another kind of device?)")


def make_loss(sde: SDE, continuous: bool = True, reduce_mean: bool = False,
              likelihood_weighting: bool = False, eps: float | None = None, train: bool = True,
              shard: Shard = ONE_PROCESS, preconditioning: str = "none", num_classes: int = 0,
              class_dropout: float = 0.0, **objective: str | float | None) -> Callable[..., torch.Tensor]:
    """The training objective as loss_fn(state, batch, generator=None, class_labels=None) -> scalar, as the
    original's get_step_fn builds it: `get_loss_fn` applied to the network as a score function (continuous;
    see get_score_fn) or as the raw network (x, integer labels) of the discrete SMLD / DDPM losses.

    Args:
        sde: the forward SDE; discrete training needs a VESDE (SMLD) or a VPSDE (DDPM).
        continuous, reduce_mean, likelihood_weighting, eps: `config.training.continuous`, `.reduce_mean`,
            `.likelihood_weighting` and the smallest training time (default: sde.likelihood_eps, the
            original's 1e-5).
        train: run the network in train mode (dropout on), through state.ddp when there is one; evaluation
            uses train=False and the plain model.
        shard: which items of the global batch this process's batches are (score_sde.distributed).
        preconditioning: `config.model.preconditioning` (get_score_fn); its sigma_data is objective's.
        num_classes, class_dropout: a class-conditional network's `config.model.num_classes` and
            `config.training.class_dropout`: with train, each item's label is replaced by the null class
            (index num_classes) with that probability, so that one network learns the conditional and the
            unconditional score (classifier-free guidance, Ho & Salimans 2022).
        objective: t_sampling, weighting, lognormal_mean, lognormal_std, sigma_data for get_loss_fn.
    """
    objective_fn = get_loss_fn(sde, continuous, reduce_mean, likelihood_weighting, eps, **objective)
    sigma_data = objective.get("sigma_data", 0.5)
    if not 0 <= class_dropout <= 1:
        raise ValueError(f"class_dropout must lie in [0, 1], got {class_dropout}")

    def loss_fn(state, batch, generator=None, class_labels=None):
        network = state.ddp if train and state.ddp is not None else state.model
        if continuous:
            network_fn = get_score_fn(sde, network, continuous=True, train=train,
                                      preconditioning=preconditioning, sigma_data=sigma_data)
        else:
            network_fn = get_model_fn(network, train=train)
        if class_labels is not None and train and class_dropout > 0:
            class_labels = drop_classes(class_labels, num_classes, class_dropout, generator, shard)
        return objective_fn(network_fn, batch, generator, shard, class_labels)

    return loss_fn


def drop_classes(class_labels: torch.Tensor, num_classes: int, probability: float,
                 generator: torch.Generator | None = None, shard: Shard = ONE_PROCESS) -> torch.Tensor:
    """Each label replaced by the null class num_classes with `probability`; the coin flips are drawn for the
    global batch and sharded, as the losses' noise is, so any number of ranks drops what one process does."""
    flips = torch.rand(shard.global_size(len(class_labels)), generator=generator, device=class_labels.device)
    return torch.where(shard.of(flips) < probability, num_classes, class_labels)


def train_step(state: TrainState, batch: torch.Tensor, loss_fn: Callable[..., torch.Tensor], lr: float,
               warmup: int = 0, grad_clip: float = -1.0, precision: str = "fp32",
               class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """One optimisation step on batch [B, ...] (with class_labels [B]: of a class-conditional network),
    drawing its randomness from state.generator.

    Nothing here reads a value back to the host: the caller decides when to look at the loss.

    Args:
        loss_fn: from `make_loss(..., train=True)`.
        lr, warmup, grad_clip: `config.optim.lr`, `.warmup` (steps), `.grad_clip` (global norm; < 0: none).
        precision: `config.training.precision`: "fp32", or "bf16" to run the forward pass under bf16
            autocast (acceleration.PRECISIONS); weights, gradients and optimizer state stay float32.

    Returns:
        the loss before the step, a detached 0-d float32 tensor on the batch's device.
    """
    state.optimizer.zero_grad(set_to_none=True)
    with autocast(batch.device, precision):
        loss = loss_fn(state, batch, state.generator, class_labels)
    loss.backward()
    optimize(state.optimizer, state.model.parameters(), state.step, lr, warmup, grad_clip)
    state.step += 1
    state.ema.update(state.model)
    return loss.detach()


@torch.no_grad()
def eval_step(state: TrainState, batch: torch.Tensor, loss_fn: Callable[..., torch.Tensor],
              generator: torch.Generator | None = None, class_labels: torch.Tensor | None = None
              ) -> torch.Tensor:
    """The loss on batch [B, ...] (with class_labels [B] for a class-conditional network) of the EMA weights
    (as the original evaluates), without gradients.

    Args:
        loss_fn: from `make_loss(..., train=False)`.
        generator: evaluation randomness, kept apart from the training stream.
    """
    with state.ema.average_parameters(state.model):
        return loss_fn(state, batch, generator, class_labels)


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; nothing non-finite was written."""


class DivergenceMonitor:
    """Watches the training loss for a non-finite value without reading it back every step.

    `observe(loss)` runs on the loss's device and never waits for it: it keeps whether a non-finite loss has
    been seen, the last finite loss before it and how many steps had passed then. `check(...)` reads those
    three numbers back (one host sync): call it at each log step and before every checkpoint write.
    """

    def __init__(self, step: int, device: torch.device | str):
        self.start = step  # the step count when observation began
        self.diverged = torch.zeros((), dtype=torch.bool, device=device)
        self.last_finite = torch.full((), float("nan"), device=device)
        self.finite_steps = torch.zeros((), dtype=torch.long, device=device)

    def observe(self, loss: torch.Tensor) -> None:
        """Record one step's loss, a 0-d tensor."""
        self.diverged |= ~torch.isfinite(loss)
        self.last_finite = torch.where(self.diverged, self.last_finite, loss.float())
        self.finite_steps += (~self.diverged).long()

    def check(self, state: TrainState | None = None) -> None:
        """TrainingDiverged naming the first step with a non-finite loss and the last finite loss; with
        `state`, also when a weight, EMA weight or optimizer moment is non-finite (what a checkpoint would
        hold)."""
        if bool(self.diverged):
            first_bad = self.start + int(self.finite_steps) + 1
            raise TrainingDiverged(f"the training loss is not finite at step {first_bad} (last finite loss "
                                   f"{self.last_finite.item():.6g} at step {first_bad - 1})")
        if state is not None and not state_is_finite(state):
            raise TrainingDiverged(f"the weights are not finite at step {state.step} although every loss "
                                   "was: the last update overflowed")


def state_is_finite(state: TrainState) -> bool:
    """Whether every floating tensor a checkpoint of state would hold is finite (one host read)."""
    tensors = [*state.model.state_dict().values(), *state.ema.shadow.values(),
               *(v for entry in state.optimizer.state.values() for v in entry.values() if torch.is_tensor(v))]
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def save_checkpoint(path: str | os.PathLike, state: TrainState) -> Path:
    """Write state.state_dict() to path atomically (files.atomic_write): an interruption leaves the previous
    checkpoint whole, and two processes never share a temp file. Creates the parent directories."""
    state_dict = state.state_dict()
    return atomic_write(path, lambda f: torch.save(state_dict, f))


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored at path, ours or the original's, read once by safe_torch_load (weights only, plus
    the numpy scalars the original's hold); ValueError naming the file if unreadable. Every checkpoint the
    package opens is opened here."""
    try:
        return safe_torch_load(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except pickle.UnpicklingError as error:
        raise ValueError(f"cannot read checkpoint {path}: it is corrupt, or holds objects other than "
                         f"tensors, numbers and containers. Details: {error}") from error
    except Exception as error:  # torch.load reports a damaged file as RuntimeError, OSError, EOFError, ...
        raise ValueError(f"cannot read checkpoint {path} (corrupt or truncated?): "
                         f"{type(error).__name__}: {error}") from error


def restore_checkpoint(path: str | os.PathLike, state: TrainState, missing_ok: bool = False,
                       with_rng: bool = True) -> TrainState:
    """Load the checkpoint at path into state (strictly) and return it.

    Args:
        missing_ok: return state unchanged when there is no file at path (a run that starts afresh).
        with_rng: restore the generators (see TrainState.load_state_dict); False to sample or evaluate.

    Raises:
        FileNotFoundError: no file at path and not missing_ok.
        ValueError: the file is unreadable or does not fit state; the message names the file, and state is
            left as it was.
    """
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return state
        raise FileNotFoundError(f"no checkpoint at {path}")
    return load_into(read_checkpoint(path), state, path, with_rng)


def load_into(checkpoint: Mapping, state: TrainState, path: Path, with_rng: bool = True,
              original_ok: bool = False) -> TrainState:
    """A read checkpoint into state: ours strictly (TrainState.load_state_dict), or with original_ok one of
    the original implementation's (its network and EMA; the optimizer state stays fresh). ValueError naming
    the file when it does not fit; state is then left as it was."""
    if original_ok and is_reference_format(checkpoint):
        state.ema = load_reference_checkpoint(checkpoint, state.model).ema
        return state
    try:
        state.load_state_dict(checkpoint, with_rng)
    except ValueError as error:
        raise ValueError(f"checkpoint {path} does not fit the training state: {error}") from error
    return state
