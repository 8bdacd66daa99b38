"""Choosing an implementation by name from a plain dict, with an error that lists the choices."""


def lookup(table, name, what):
    """table[name], or a ValueError naming the unknown `what` and the known names."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]
