"""Exponential moving average of a network's trainable parameters, paired with them by name."""
import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

STATE_KEYS = ("decay", "num_updates", "shadow_params")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs of the parameters that train, in model.parameters() order."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


class ExponentialMovingAverage:
    """Shadow copies s of the trainable parameters p, updated as s ← s − (1 − decay)·(s − p).

    As in the original score_sde (and TensorFlow's ExponentialMovingAverage), with use_num_updates the
    decay is warmed up: the n-th update uses min(decay, (1 + n) / (10 + n)), so early averages are not
    dominated by the initial weights. Frozen parameters (the Fourier `W` of NCSN++) and buffers are not
    averaged: they always come from the model.

    Args:
        model: the network whose trainable parameters are averaged; the shadows start as their copies.
        decay: in [0, 1]; the config's `model.ema_rate`.
        use_num_updates: apply the warm-up above.
    """

    def __init__(self, model: nn.Module, decay: float, use_num_updates: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.num_updates = 0 if use_num_updates else None
        self.shadow = {name: p.detach().clone() for name, p in trainable_parameters(model)}
        self._stored = None

    def _paired(self, model):
        """The shadows and the model's trainable parameters as two lists in the same (name) order."""
        params = dict(trainable_parameters(model))
        if params.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - params.keys())
            extra = sorted(params.keys() - self.shadow.keys())
            raise ValueError(f"the model's trainable parameters do not match the EMA's: the model lacks "
                             f"{missing}, the EMA lacks {extra}")
        return list(self.shadow.values()), [params[name] for name in self.shadow]

    def current_decay(self) -> float:
        """The decay the next update will use (the warm-up applied)."""
        if self.num_updates is None:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step; call it after each optimizer step. Runs on the device, without a host sync."""
        decay = self.current_decay()
        if self.num_updates is not None:
            self.num_updates += 1
        shadows, params = self._paired(model)
        # lerp(s, p, w) = s + w·(p − s) = s − (1 − decay)·(s − p) with w = 1 − decay.
        torch._foreach_lerp_(shadows, params, 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's trainable parameters with the averages."""
        shadows, params = self._paired(model)
        torch._foreach_copy_(params, shadows)

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        """Keep a copy of the model's current trainable parameters, for `restore` after `copy_to`."""
        _, params = self._paired(model)
        self._stored = [p.detach().clone() for p in params]

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put back the parameters saved by `store`."""
        if self._stored is None:
            raise ValueError("restore() needs a preceding store()")
        _, params = self._paired(model)
        torch._foreach_copy_(params, self._stored)
        self._stored = None

    @contextlib.contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block, the model carries the averaged weights; its own weights come back after."""
        self.store(model)
        self.copy_to(model)
        try:
            yield model
        finally:
            self.restore(model)

    def state_dict(self) -> dict:
        """{'decay', 'num_updates', 'shadow_params': {parameter name: tensor}}."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state_dict: Mapping) -> None:
        """Load a `state_dict()` of this class; names and shapes must match exactly. Everything is checked
        before anything is copied: on a ValueError the EMA is as it was.

        The original's positional `shadow_params` lists are translated by `load_reference_checkpoint`.
        """
        if not isinstance(state_dict, Mapping) or state_dict.keys() != set(STATE_KEYS):
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"an EMA state has the keys {list(STATE_KEYS)}, got {got}")
        shadow = state_dict["shadow_params"]
        if not isinstance(shadow, Mapping):
            raise ValueError("shadow_params must map parameter names to tensors; a positional list (the "
                             "original's format) is translated by score_sde.models.load_reference_checkpoint")
        if shadow.keys() != self.shadow.keys():
            raise ValueError(f"EMA names differ: missing {sorted(self.shadow.keys() - shadow.keys())}, "
                             f"unexpected {sorted(shadow.keys() - self.shadow.keys())}")
        wrong = [f"{k}: {tuple(v.shape)} vs {tuple(self.shadow[k].shape)}" for k, v in shadow.items()
                 if v.shape != self.shadow[k].shape]
        if wrong:
            raise ValueError(f"EMA shape mismatches (given vs expected): {wrong}")
        decay = state_dict["decay"]
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
        self.decay = decay
        self.num_updates = state_dict["num_updates"]

    @classmethod
    def from_state_dict(cls, model: nn.Module, state_dict: Mapping) -> "ExponentialMovingAverage":
        """A new EMA of model's trainable parameters holding state_dict (a `state_dict()` of this class),
        checked by load_state_dict; nothing else changes, so a checkpoint's EMA can be tried before the
        checkpoint is applied."""
        ema = cls(model, 0.0)
        ema.load_state_dict(state_dict)
        return ema
