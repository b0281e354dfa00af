"""Which event loops exist here and how to make one; plus the few helpers every benchmark
shares (interleaving order, medians, the common command-line options)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
from collections.abc import Callable, Sequence

import epolloop

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# Third-party loops, compared when importable; each module offers new_event_loop().
_OPTIONAL = ("uvloop", "rloop")


def available_loops() -> dict[str, LoopFactory]:
    """Every loop importable here, epolloop first, stock asyncio (the reference) second."""
    loops: dict[str, LoopFactory] = {
        "epolloop": epolloop.new_event_loop,
        "asyncio": asyncio.SelectorEventLoop,  # epoll through the selectors module on Linux
    }
    for name in _OPTIONAL:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        loops[name] = module.new_event_loop
    return loops


def load_factory(spec: str) -> LoopFactory:
    """A loop factory from "module:callable" (as the test suite's --loop option takes it)."""
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise SystemExit(f"--loop expects module:callable, got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise SystemExit(f"--loop {spec}: {factory!r} is not callable")
    return factory


def select_loops(names: str | None, extra: Sequence[str] = ()) -> dict[str, LoopFactory]:
    """The loops named in a comma-separated list (all available ones if None), plus any
    "module:callable" factories in *extra*, named by their spec."""
    loops = available_loops()
    for spec in extra:
        loops[spec] = load_factory(spec)
    if not names:
        return loops
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in loops]
    if unknown:
        raise SystemExit(f"unknown or unavailable loops: {', '.join(unknown)}")
    return {name: loops[name] for name in wanted}


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """Round r runs the loops starting from the r-th: A B C D, B C D A, ... so no loop always
    runs first (cold caches) or last (a heap grown by the others)."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def add_common_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    parser.add_argument(
        "--rounds", type=int, default=rounds, help=f"interleaved rounds (default {rounds})"
    )
    parser.add_argument(
        "--loops",
        default=None,
        metavar="NAME,...",
        help=f"compare only these (available: {', '.join(available_loops())}, or a --loop spec)",
    )
    parser.add_argument(
        "--loop",
        action="append",
        default=[],
        metavar="MODULE:CALLABLE",
        help="also compare this loop factory (repeatable), e.g. a prototype or another core",
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table, first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(cell) for cell in cells)
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
