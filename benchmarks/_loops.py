"""The loops compared, by name: which exist here, how a measuring process makes one, and the
environment it must be started with.

Every measurement runs in a fresh child process (see ``_child``), so a loop is chosen by name
and the driver never imports the loops it compares. "epolloop-pure" is epolloop with
``EPOLLOOP_NO_EXTENSIONS=1``: the pure-Python core, whatever the default core is.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import statistics
from collections.abc import Callable, Sequence

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: The C ceiling is measured beside the loops where a workload has one; it is not a loop.
CEILING = "C ceiling"

# name -> (module to import, attribute, extra environment)
_KNOWN: dict[str, tuple[str, str, dict[str, str]]] = {
    "epolloop": ("epolloop", "new_event_loop", {}),
    "epolloop-pure": ("epolloop", "new_event_loop", {"EPOLLOOP_NO_EXTENSIONS": "1"}),
    "asyncio": ("asyncio", "SelectorEventLoop", {}),  # epoll through selectors on Linux
    "uvloop": ("uvloop", "new_event_loop", {}),
    "rloop": ("rloop", "new_event_loop", {}),
}


def available_loops() -> list[str]:
    """Every known loop importable here, epolloop first, stock asyncio (the reference) next."""
    return [name for name, (module, _, _) in _KNOWN.items() if importlib.util.find_spec(module)]


def select_loops(names: str | None) -> list[str]:
    """The loops in a comma-separated list (all available ones if empty); a "module:callable"
    entry adds any other loop factory, named by its spec."""
    if not names:
        return available_loops()
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if ":" not in name and name not in available_loops()]
    if unknown:
        raise SystemExit(
            f"unknown or unavailable loops: {', '.join(unknown)} "
            f"(available: {', '.join(available_loops())}, or module:callable)"
        )
    return wanted


def environment(name: str) -> dict[str, str]:
    """Variables the measuring process of loop *name* is started with."""
    return _KNOWN[name][2] if name in _KNOWN else {}


def factory(name: str) -> LoopFactory:
    """The loop factory of *name*: called in the measuring process only."""
    module_name, attribute = _KNOWN[name][:2] if name in _KNOWN else name.split(":", 1)
    made = getattr(importlib.import_module(module_name), attribute)
    if not callable(made):
        raise SystemExit(f"{name}: {made!r} is not callable")
    return made


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """Round r runs the loops starting from the r-th: A B C D, B C D A, ... so no loop always
    runs first (cold caches) or last (a machine warmed by the others)."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
