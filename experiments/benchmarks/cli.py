"""A benchmark's integer flags, read off its measuring function: one `--<name>` flag per int
argument with a default, whose default is the argument's and whose help is the argument's line
in the function's `Args:` docstring section (so the defaults are written once).

    if __name__ == "__main__":      # in the benchmark; measure(batch: int = 1024, ...)
        cli.define_int_flags(measure)
        app.run(lambda argv: print(report(measure(**cli.int_flag_values(measure)))))
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping

from absl import flags


def int_args(fn: Callable, skip: Iterable[str] = ()) -> dict[str, int]:
    """`{argument: default}` for `fn`'s int arguments with a default, except those in `skip`."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if type(p.default) is int and name not in set(skip)}


def arg_helps(fn: Callable) -> dict[str, str]:
    """`{argument: text}` from the `Args:` section of `fn`'s docstring (`name: text` lines,
    continuation lines indented further)."""
    doc = inspect.getdoc(fn) or ""
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    helps: dict[str, str] = {}
    name = None
    for line in section.splitlines()[1:]:
        if not line.strip():
            break
        m = re.match(r"^ {2}(\w+): (.*)$", line)
        if m:
            name, text = m.groups()
            helps[name] = text
        elif name and line.startswith("    "):
            helps[name] += " " + line.strip()
        else:
            break
    return helps


def define_int_flags(fn: Callable, names: Mapping[str, str] | None = None,
                     skip: Iterable[str] = ()) -> None:
    """Defines an integer flag for each of `int_args(fn, skip)`, named `names.get(arg, arg)`."""
    names = names or {}
    helps = arg_helps(fn)
    # Declared by fn's module, so that `--help` lists them (absl names the main module by its
    # path, sys.argv[0]).
    module = sys.argv[0] if fn.__module__ == "__main__" else fn.__module__
    for arg, default in int_args(fn, skip).items():
        if arg not in helps:
            raise ValueError(f"{fn.__name__}: argument {arg!r} has no line in the docstring's "
                             "Args: section (its flag's help)")
        flags.DEFINE_integer(names.get(arg, arg), default, helps[arg], module_name=module)


def int_flag_values(fn: Callable, names: Mapping[str, str] | None = None) -> dict[str, int]:
    """`fn`'s int arguments from the parsed flags of `define_int_flags` (shared flags too)."""
    names = names or {}
    return {arg: flags.FLAGS[names.get(arg, arg)].value for arg in int_args(fn)}
