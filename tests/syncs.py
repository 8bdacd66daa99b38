"""Counting the operations that would make a GPU wait: what the sync-free tests measure on the CPU."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import score_sde.sde

# Operations whose result the host must read (each a device synchronisation on a GPU).
HOST_READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "equal", "masked_select"}


# Operations that make a tensor from Python data: on a GPU, a host-to-device copy (and a wait) each time.
HOST_DATA = {"lift_fresh", "lift_fresh_copy"}


class CountHostSyncs(TorchDispatchMode):
    """Counts host reads and device-to-host copies made under it, by name in `names`, and tensors made from
    host data in `uploads`."""

    def __init__(self):
        super().__init__()
        self.names = []
        self.uploads = []

    @property
    def count(self):
        return len(self.names)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__.split(".")[0]
        if name in HOST_READS or _copies_to_host(name, args, kwargs):
            self.names.append(name)
        if name in HOST_DATA:
            self.uploads.append(name)
        return func(*args, **kwargs)


def _copies_to_host(name, args, kwargs):
    """A copy from an accelerator's tensor to the CPU (never true in a CPU-only run, counted on a GPU)."""
    if name not in ("_to_copy", "copy_") or not args or not torch.is_tensor(args[0]):
        return False
    if name == "copy_":
        source, target = args[1].device, args[0].device
    else:
        source, target = args[0].device, torch.device(kwargs.get("device") or args[0].device)
    return source.type != "cpu" and target.type == "cpu"


def as_on_a_gpu(monkeypatch):
    """Turn off the time-range check that only CPU tensors get (score_sde.sde.RANGE_CHECKED_DEVICES), so
    that a CPU run makes exactly the host reads a GPU run would."""
    monkeypatch.setattr(score_sde.sde, "RANGE_CHECKED_DEVICES", ())
