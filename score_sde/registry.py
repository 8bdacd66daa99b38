"""Choosing an implementation by name from a plain dict, with an error that lists the choices."""
from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")


def lookup(table: Mapping[str, V], name: str, what: str) -> V:
    """table[name], or a ValueError naming the unknown `what` and the known names."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]
