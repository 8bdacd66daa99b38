"""MNIST's idx files, gzipped or not, read without torchvision: the reader and where to find the files."""
import gzip
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def read_idx(path: str | Path) -> torch.Tensor:
    """An idx file (MNIST's format: 0, 0, type 0x08, rank, big-endian int32 sizes, uint8 payload).

    Args:
        path: the file; a name ending in .gz is read through gzip.
    Returns:
        uint8 tensor of the file's shape, e.g. [N, 28, 28] for images and [N] for labels.
    Raises:
        ValueError: the file is not a whole idx file (truncated, not gzip-compressed though named .gz,
            corrupt, or of another type). The message names the file: gzip's own errors (a bare EOFError
            for a truncated download) name none, and a data root may hold several candidates.
    """
    refetch = f"replace it with a fresh copy (MNIST's idx files are at {MNIST_URL})"
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except EOFError as error:  # the deflate stream stops early: an interrupted download or copy
        raise ValueError(f"cannot read {path}: the gzip data end early (truncated file?); {refetch}") \
            from error
    except gzip.BadGzipFile as error:  # the magic bytes, or the trailer's CRC or length
        if str(error).startswith("Not a gzipped file"):
            what = "not gzip-compressed, though its name ends in .gz (name a plain idx file without .gz)"
        else:
            what = f"corrupt gzip data ({error}); {refetch}"
        raise ValueError(f"cannot read {path}: {what}") from error
    except zlib.error as error:
        raise ValueError(f"cannot read {path}: corrupt gzip data ({error}); {refetch}") from error
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        found = f"header {data[:4].hex()}"
        if len(data) < 4:
            found = f"only {len(data)} byte(s): empty or truncated"
        elif data[:2] == b"\x1f\x8b":
            found += ": gzip-compressed, so its name must end in .gz"
        raise ValueError(f"cannot read {path}: not an idx file of unsigned bytes ({found})")
    rank = data[3]
    if len(data) < 4 + 4 * rank:
        raise ValueError(f"cannot read {path}: the header announces {rank} sizes but the file ends after "
                         f"{len(data)} bytes (truncated file?); {refetch}")
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    payload = data[4 + 4 * rank:]
    if len(payload) != math.prod(shape):
        hint = f" (truncated file?); {refetch}" if len(payload) < math.prod(shape) else ""
        raise ValueError(f"cannot read {path}: the header says {shape}, but the payload has {len(payload)} "
                         f"bytes{hint}")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(shape)


def find_idx_file(folders: Sequence[Path], name: str) -> Path | None:
    """The first of folder/name, folder/name.gz over the folders, or None."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None
