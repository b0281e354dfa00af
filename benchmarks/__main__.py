"""python -m benchmarks: every benchmark, side by side, with its default settings.

Options given here (--rounds, --loops, --loop) go to each benchmark. Run one alone with
``python -m benchmarks.timer_precision`` or ``python -m benchmarks.loop_internals``.
"""

from __future__ import annotations

import sys

from . import loop_internals, timer_precision


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    for benchmark in (timer_precision, loop_internals):
        print(f"\n== {benchmark.__name__.removeprefix('benchmarks.')}", flush=True)
        benchmark.main(argv)


if __name__ == "__main__":
    main()
