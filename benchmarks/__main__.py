"""python -m benchmarks: every benchmark, side by side, with its default settings.

Options given here (--rounds, --loops, --loop) go to each benchmark. Run one alone with
``python -m benchmarks.timer_precision``, ``python -m benchmarks.loop_internals`` or
``python -m benchmarks.unix_transports``.
"""

from __future__ import annotations

import sys

from . import loop_internals, timer_precision, unix_transports


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    for benchmark in (timer_precision, loop_internals, unix_transports):
        print(f"\n== {benchmark.__name__.removeprefix('benchmarks.')}", flush=True)
        benchmark.main(argv)


if __name__ == "__main__":
    main()
