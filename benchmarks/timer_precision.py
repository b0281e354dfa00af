"""How late (or early) timers fire: 1,000 overlapping call_later timers per loop.

The timers get random (seeded) delays between 1 and 20 ms, so their deadlines interleave
densely, as timeouts do in a busy server. They are scheduled a few at a time, each handful from
its own callback: a callback that scheduled all of them at once would itself hold the loop
past the earliest deadlines (a millisecond or more), and we would be measuring that, not the
loop's timers. Inside each timer's callback we take ``time.monotonic()`` and subtract the
deadline we meant, computed on the same clock just before the ``call_later`` call. We do not
use ``loop.time()``: uvloop's is a millisecond clock cached once per iteration, and rloop's
counts from the loop's creation, so neither compares across loops. Lateness < 0 means "fired
early".

Every (loop, round) runs in a fresh interpreter, with its start-up objects frozen out of the
collector; loops are interleaved round by round and the table reports, per loop, the median
over rounds of each statistic.

    python -m benchmarks.timer_precision [--rounds 5] [--loops epolloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from time import monotonic

from ._loops import LoopFactory, add_common_arguments, median, print_table, rotated, select_loops

TIMERS = 1_000
PER_CALLBACK = 10  # timers scheduled by one callback: a few microseconds of work
MIN_DELAY, MAX_DELAY = 0.001, 0.020
WARMUP_TIMERS = 100

STATS = ("p50", "p99", "max", "min", "early")


def _lateness(factory: LoopFactory, timers: int, seed: int) -> list[float]:
    """Seconds each timer fired after its intended deadline, on a fresh loop (warmed up)."""
    loop = factory()
    try:
        _run_timers(loop, WARMUP_TIMERS, random.Random(-seed - 1))
        return _run_timers(loop, timers, random.Random(seed))
    finally:
        loop.close()


def _run_timers(loop: asyncio.AbstractEventLoop, timers: int, rng: random.Random) -> list[float]:
    delays = [rng.uniform(MIN_DELAY, MAX_DELAY) for _ in range(timers)]
    lateness: list[float] = []
    done = loop.create_future()
    call_later = loop.call_later

    def fire(deadline: float) -> None:
        lateness.append(monotonic() - deadline)
        if len(lateness) == timers:
            done.set_result(None)

    def schedule(start: int) -> None:
        for delay in delays[start : start + PER_CALLBACK]:
            # The argument is evaluated first, so our deadline is never later than the loop's.
            call_later(delay, fire, monotonic() + delay)
        if start + PER_CALLBACK < timers:
            loop.call_soon(schedule, start + PER_CALLBACK)

    loop.call_soon(schedule, 0)
    loop.run_until_complete(done)
    return lateness


def _summary(lateness: list[float]) -> dict[str, float]:
    ordered = sorted(lateness)

    def percentile(p: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {
        "p50": percentile(0.50) * 1e6,
        "p99": percentile(0.99) * 1e6,
        "max": ordered[-1] * 1e6,
        "min": ordered[0] * 1e6,
        "early": sum(1 for x in ordered if x < 0) / len(ordered),
    }


def _child(name: str, seed: int, timers: int) -> None:
    factory = select_loops(name, [name] if ":" in name else [])[name]
    # A fresh interpreter's first collections walk everything the imports left behind (over
    # a millisecond here): move that out of the collector's sight, so the tail we measure is
    # the loop's and not interpreter start-up's. The loop's own garbage is still collected.
    gc.collect()
    gc.freeze()
    stats = _summary(_lateness(factory, timers, seed))
    print(json.dumps(stats))


def _run_in_subprocess(name: str, seed: int, timers: int) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.timer_precision", "--child", name]
    command += ["--seed", str(seed), "--timers", str(timers)]
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.timer_precision", description=__doc__.split("\n")[0]
    )
    add_common_arguments(parser, rounds=5)
    parser.add_argument("--timers", type=int, default=TIMERS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", metavar="LOOP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.seed, args.timers)
        return

    names = list(select_loops(args.loops, args.loop))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        # Same seed for every loop within a round: all see the same delays.
        seed = args.seed + round_index
        for name in rotated(names, round_index):
            results[name].append(_run_in_subprocess(name, seed, args.timers))

    print(
        f"{args.timers} timers, delays {MIN_DELAY * 1e3:g}-{MAX_DELAY * 1e3:g} ms, "
        f"{PER_CALLBACK} scheduled per callback; lateness in µs, "
        f"median of {args.rounds} rounds (fresh interpreter each)"
    )
    rows = []
    for name in names:
        runs = results[name]
        stat = {key: median([run[key] for run in runs]) for key in STATS}
        rows.append(
            [
                name,
                f"{stat['p50']:.0f}",
                f"{stat['p99']:.0f}",
                f"{stat['max']:.0f}",
                f"{stat['min']:.0f}",
                f"{stat['early'] * 100:.1f}%",
            ]
        )
    print_table(["loop", "p50 µs", "p99 µs", "max µs", "min µs", "early"], rows)


if __name__ == "__main__":
    main()
