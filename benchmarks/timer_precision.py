"""How late (or early) timers fire: 1,000 overlapping call_later timers per loop.

The timers get random (seeded) delays between 1 and 20 ms, so their deadlines interleave
densely, as timeouts do in a busy server. They are scheduled a few at a time, each handful from
its own callback: a callback that scheduled all of them at once would itself hold the loop
past the earliest deadlines (a millisecond or more), and we would be measuring that, not the
loop's timers. Inside each timer's callback we take ``time.monotonic()`` and subtract the
deadline we meant, computed on the same clock just before the ``call_later`` call. We do not
use ``loop.time()``: uvloop's is a millisecond clock cached once per iteration, and rloop's
counts from the loop's creation, so neither compares across loops. Lateness < 0 means "fired
early"; the figures compared are percentiles of the error either way, |lateness| (a loop that
fires half its timers early by a millisecond is no more precise than one that fires them late
by as much); the JSON file also has the signed minimum and the share that fired early.

Every (loop, round) runs in a fresh interpreter, with its start-up objects frozen out of the
collector; within a round every loop gets the same delays.

    python -m benchmarks --workloads timers
"""

from __future__ import annotations

import asyncio
import math
import random
from time import monotonic

from ._loops import LoopFactory
from ._suite import Context, Figure, Workload, run_in_child

TIMERS = 1_000
PER_CALLBACK = 10  # timers scheduled by one callback: a few microseconds of work
MIN_DELAY, MAX_DELAY = 0.001, 0.020
WARMUP_TIMERS = 100


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


def run(make_loop: LoopFactory, timers: int, seed: int) -> dict[str, float]:
    """The measuring process: percentiles of |lateness| in µs, the signed minimum, and the
    share of timers that fired early."""
    return _summary(_lateness(make_loop, timers, seed))


def _summary(lateness: list[float]) -> dict[str, float]:
    ordered = sorted(abs(x) for x in lateness)

    def percentile(p: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {
        "p50": percentile(0.50) * 1e6,
        "p99": percentile(0.99) * 1e6,
        "max": ordered[-1] * 1e6,
        "min": min(lateness) * 1e6,
        "early": sum(1 for x in lateness if x < 0) / len(lateness),
    }


def measure(ctx: Context, loop: str) -> dict[str, float]:
    timers = max(20, int(TIMERS * ctx.duration))
    return run_in_child(run, loop, timers=timers, seed=ctx.round + 1)


def workloads() -> list[Workload]:
    return [
        Workload(
            family="timers",
            name=f"timer error ({TIMERS:,} timers at 1-20 ms)",
            figures=tuple(Figure(stat, f"µs off, {stat}") for stat in ("p99", "p50", "max")),
            measure=measure,
            default=True,
        )
    ]
