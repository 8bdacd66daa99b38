"""Loading checkpoints written by the original score_sde_pytorch, with restricted unpickling.

The original's `utils.save_checkpoint` writes {'model': DataParallel state dict (keys 'module.…'),
'ema': {'decay', 'num_updates', 'shadow_params': positional list}, 'optimizer': Adam state dict, 'step'}.
Here every translation is explicit: the prefix is removed key by key, key sets and shapes are compared
before a strict load, and the positional EMA list is paired with parameter names.
"""
import dataclasses
import os
import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from score_sde.models.ema import ExponentialMovingAverage

PREFIX = "module."


def _numpy_scalar_reconstructor():
    try:  # numpy >= 2
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar
    return scalar


def numpy_safe_globals() -> list[Callable | tuple[Callable, str]]:
    """The allow-list for the original's checkpoints: its training loop leaves a numpy.float64 learning rate
    in the optimizer state, pickled as scalar(dtype('float64'), bytes). The reconstructor is listed under its
    numpy 1.x and 2.x names, so files written under either load under either."""
    scalar = _numpy_scalar_reconstructor()
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        type(np.dtype(np.float64)),  # numpy.dtypes.Float64DType: the pickled dtype is rebuilt as one
    ]


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True, allowing only the numpy types the original's checkpoints hold.

    Anything else a pickle names (a function, a class) is refused and never called.

    Raises:
        pickle.UnpicklingError: the file references a global outside the allow-list.
    """
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f"refused to load {path}: it holds objects other than tensors, containers and numpy float64 "
            f"scalars, and unpickling them could run arbitrary code. Details: {error}"
        ) from error


@dataclasses.dataclass
class ReferenceCheckpoint:
    """A published checkpoint translated to this package: the network with the checkpoint's weights, its
    EMA (shadows by name), the optimizer state with parameter indices in `model.parameters()` order, and
    the training step."""

    model: nn.Module
    ema: ExponentialMovingAverage
    optimizer_state: dict | None
    step: int | None


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """The state dict with `prefix` removed from every key; ValueError naming keys that lack it."""
    lacking = [k for k in state_dict if not k.startswith(prefix)]
    if lacking:
        raise ValueError(f"checkpoint 'model' keys must all start with {prefix!r} (a DataParallel state "
                         f"dict); {len(lacking)} do not, e.g. {lacking[:5]}")
    return {k[len(prefix):]: v for k, v in state_dict.items()}


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """ValueError naming missing keys, unexpected keys and shape mismatches of state_dict against model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    problems = [f"{what} ({len(keys)}): {keys[:10]}{' …' if len(keys) > 10 else ''}"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("shape mismatches", shapes)) if keys]
    if problems:
        raise ValueError("the checkpoint does not fit the model: " + "; ".join(problems))


def ema_names(model: nn.Module, checkpoint_keys: Iterable[str]) -> list[str]:
    """Names for the checkpoint's positional EMA list: the checkpoint's keys that are trainable parameters of
    model, in checkpoint order (the original model's parameters() order)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return [k for k in checkpoint_keys if k in trainable]


def reference_ema(model: nn.Module, ema_state: Mapping, checkpoint_keys: Iterable[str]
                  ) -> ExponentialMovingAverage:
    """An ExponentialMovingAverage of model filled from the original's {'decay', 'num_updates',
    'shadow_params': list} state."""
    names = ema_names(model, checkpoint_keys)
    shadows = ema_state["shadow_params"]
    if len(shadows) != len(names):
        raise ValueError(f"the checkpoint's EMA holds {len(shadows)} shadow parameters, but the model has "
                         f"{len(names)} trainable parameters: the EMA cannot be paired with them")
    return ExponentialMovingAverage.from_state_dict(model, {
        "decay": ema_state["decay"], "num_updates": ema_state["num_updates"],
        "shadow_params": dict(zip(names, shadows))})


def remap_optimizer_state(optimizer_state: dict | None, model: nn.Module, checkpoint_keys: Iterable[str]
                          ) -> dict | None:
    """The optimizer state renumbered from the checkpoint's parameter order to model.parameters() order (the
    same order unless the network registers its modules differently), for an optimizer built over
    model.parameters() as the original's is."""
    if not optimizer_state:
        return optimizer_state
    ours = [name for name, _ in model.named_parameters()]
    own = set(ours)
    theirs = [k for k in checkpoint_keys if k in own]
    indices = [i for group in optimizer_state["param_groups"] for i in group["params"]]
    if sorted(indices) != list(range(len(ours))):
        raise ValueError(f"the checkpoint's optimizer state covers {len(indices)} parameter indices, but the "
                         f"model has {len(ours)} parameters (frozen ones included)")
    if theirs == ours:
        return optimizer_state
    new_index = {i: ours.index(name) for i, name in enumerate(theirs)}
    # Optimizer.load_state_dict pairs a group's saved indices with its parameters by position, so each
    # group lists its (renumbered) indices in model.parameters() order.
    groups = [{**g, "params": sorted(new_index[i] for i in g["params"])}
              for g in optimizer_state["param_groups"]]
    state = {new_index[int(i)]: s for i, s in optimizer_state["state"].items()}
    return {"state": state, "param_groups": groups}


def is_reference_format(checkpoint: object) -> bool:
    """Whether a loaded checkpoint dict is in the original's format: its EMA's 'shadow_params' is a positional
    list, where ours keys the shadow weights by parameter name."""
    ema = checkpoint.get("ema") if isinstance(checkpoint, dict) else None
    return isinstance(ema, dict) and isinstance(ema.get("shadow_params"), list | tuple)


def load_reference_checkpoint(checkpoint: Mapping, model: nn.Module) -> ReferenceCheckpoint:
    """Load a checkpoint of the original score_sde_pytorch into this package's network.

    Args:
        checkpoint: the dict the original's `save_checkpoint` wrote, as `train.read_checkpoint` (or
            `safe_torch_load`) reads it.
        model: the network to load into, built by `create_model(config)` from the checkpoint's config (its
            device and dtype are kept).

    Returns:
        ReferenceCheckpoint(model, ema, optimizer_state, step), model weights loaded (strict), EMA shadows
        named after the model's parameters.

    Raises:
        ValueError: the checkpoint is not such a dict, or it does not fit the model (the message names the
            missing or unexpected keys, shape mismatches, or the EMA count). Everything is checked before the
            model's weights are changed: on a ValueError the model is as it was.
    """
    absent = [k for k in ("model", "ema") if k not in checkpoint]
    if absent:
        raise ValueError(f"not a score_sde checkpoint: no {absent} entry; it has {sorted(checkpoint)}")
    state_dict = strip_prefix(checkpoint["model"])
    check_state_dict(model, state_dict)
    keys = list(state_dict)
    ema = reference_ema(model, checkpoint["ema"], keys)
    optimizer_state = remap_optimizer_state(checkpoint.get("optimizer"), model, keys)
    model.load_state_dict(state_dict, strict=True)  # the one change, after every check
    return ReferenceCheckpoint(model, ema, optimizer_state, checkpoint.get("step"))
