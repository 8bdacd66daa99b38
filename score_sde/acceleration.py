"""The opt-in switches that make training and sampling fast on a GPU: reduced precision and torch.compile.

Both are chosen by name in the config (`training.precision` / `.compile`, `sampling.compile`,
`eval.bpd_precision` / `.bpd_compile`) and turned into objects here, once. Compilation is lazy, so its
cost lands on the first call; `Compiled` times that call and reports it, since compile time (tens of
seconds to minutes) is a cost users feel.
"""
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from score_sde.registry import lookup

# fp32: plain float32. tf32: float32 tensors, matrix products and convolutions on NVIDIA tensor cores with
# 10-bit mantissas (a no-op elsewhere: CPUs have no TF32). bf16: autocast, products and convolutions in
# bfloat16 (8-bit mantissas); weights and optimizer state stay float32 in every case.
PRECISIONS = {"fp32": None, "tf32": "tf32", "bf16": torch.bfloat16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

log = logging.getLogger(__name__)


def check_precision(precision: str) -> None:
    """ValueError unless precision is one of PRECISIONS."""
    lookup(PRECISIONS, precision, "precision")


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """A context running its operations in `precision` (a PRECISIONS name) on the device's type."""
    dtype = lookup(PRECISIONS, precision, "precision")
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == "tf32":
        return tf32()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def tf32(enabled: bool = True) -> Iterator[None]:
    """TF32 matrix products and convolutions switched on (or off) inside the block, as they were after it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_compile_mode(mode: str | None) -> None:
    """ValueError unless mode is None (eager) or one of COMPILE_MODES."""
    if mode is not None:
        lookup(dict.fromkeys(COMPILE_MODES), mode, "compile mode")


def compile_in_place(model: torch.nn.Module, mode: str | None) -> None:
    """Compile the network's forward with fullgraph=True in `mode` (nothing when mode is None), in place:
    its state-dict keys stay those of the eager network, so checkpoints are interchangeable."""
    check_compile_mode(mode)
    if mode is not None:
        model.compile(fullgraph=True, mode=mode)


class Compiled:
    """fn compiled with torch.compile(fullgraph=True, mode=mode): one graph, no silent fallback to Python;
    the first call (where compilation happens) is timed and logged, and its seconds kept in `first_call_s`.
    """

    def __init__(self, fn: Callable, mode: str = "default", name: str | None = None):
        check_compile_mode(mode)
        self.fn = torch.compile(fn, fullgraph=True, mode=mode)
        self.mode = mode
        self.name = name or getattr(fn, "__name__", "function")
        self.first_call_s = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.first_call_s is not None:
            return self.fn(*args, **kwargs)
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.first_call_s = time.perf_counter() - start
        log.warning("torch.compile(mode=%r) of %s: first call took %.1f s (compilation included)",
                    self.mode, self.name, self.first_call_s)
        return out


def compiled(fn: Callable, mode: str | None, name: str | None = None) -> Callable:
    """fn itself when mode is None, else Compiled(fn, mode, name)."""
    return fn if mode is None else Compiled(fn, mode, name)
