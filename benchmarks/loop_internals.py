"""The loop's own machinery, without I/O: callbacks, timers, task switches, thread wake-ups.

Workloads (ops/s, higher is better):

    call_soon chain   one callback at a time, each scheduling the next (one loop step each)
    call_soon batch   one callback schedules N at once; they all run in the next step
    call_later churn  N call_later at random delays of 1-50 ms, 1,000 per step, 90% of them
                      cancelled one step later, the rest fire; ops = timers (CPU time, so
                      waiting for deadlines does not count)
    sleep(0) switch   K tasks each awaiting asyncio.sleep(0) M times; ops = task switches
    threadsafe burst  another thread calls call_soon_threadsafe N times as fast as it can;
                      wall time from its start to the loop running the last callback

Not like for like: rloop (0.5) runs what a callback schedules within the same step and looks at
I/O only now and then (a ready reader waited ~800 chained callbacks there, one or two on the
others), so its chain figure measures a loop that skips asyncio's fairness rule.

The single-threaded workloads are timed in CPU time of the loop's thread (user + system, so
syscalls count; time slices lost to other processes on a shared machine do not), the threaded
one in wall time. Every measurement gets a fresh loop. Loops are interleaved round by round
(A B C D, then B C D A, ...) after one unrecorded warm-up round; the ratios are computed
within each round, so drift in the machine's speed cancels, then the median is taken.

    python -m benchmarks.loop_internals [--rounds 5] [--loops ...] [--workloads ...]
    python -m benchmarks.loop_internals --profile epolloop   # cProfile each workload once
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter, thread_time

from ._loops import add_common_arguments, median, print_table, rotated, select_loops

Loop = asyncio.AbstractEventLoop


def call_soon_chain(loop: Loop, n: int) -> float:
    remaining = n
    call_soon = loop.call_soon
    finished = 0.0

    def step() -> None:
        nonlocal remaining, finished
        remaining -= 1
        if remaining:
            call_soon(step)
        else:
            finished = thread_time()
            loop.stop()

    start = thread_time()
    call_soon(step)
    loop.run_forever()
    return finished - start


def call_soon_batch(loop: Loop, n: int) -> float:
    call_soon = loop.call_soon
    finished = 0.0

    def noop() -> None:
        pass

    def finish() -> None:
        nonlocal finished
        finished = thread_time()
        loop.stop()

    def burst() -> None:
        for _ in range(n):
            call_soon(noop)
        call_soon(finish)  # FIFO: runs after all of them, in the same step

    start = thread_time()
    call_soon(burst)
    loop.run_forever()
    return finished - start


CHURN_MAX_DELAY = 0.050
CHURN_CANCELLED = 0.9
CHURN_CHUNK = 1_000


def call_later_churn(loop: Loop, n: int) -> float:
    # Timeouts as a server makes them: each step arms a chunk of timers and cancels 90% of
    # the previous step's (the operations they guarded finished in time); the rest fire while
    # later chunks are still being armed, so the heap holds live, cancelled and due entries
    # at once and the loop goes through its timer wake-up path many times.
    rng = random.Random(n)
    sizes = [CHURN_CHUNK] * (n // CHURN_CHUNK)
    if n % CHURN_CHUNK:
        sizes.append(n % CHURN_CHUNK)
    chunks = [
        [(rng.uniform(0.001, CHURN_MAX_DELAY), rng.random() < CHURN_CANCELLED) for _ in range(size)]
        for size in sizes
    ]
    survivors = sum(not doomed for chunk in chunks for _, doomed in chunk)
    call_later = loop.call_later
    call_soon = loop.call_soon
    fired = 0
    finished = 0.0

    def fire() -> None:
        nonlocal fired, finished
        fired += 1
        if fired == survivors:
            finished = thread_time()
            loop.stop()

    def step(index: int, previous: list[tuple[asyncio.TimerHandle, bool]]) -> None:
        for handle, doomed in previous:
            if doomed:
                handle.cancel()
        if index < len(chunks):
            armed = [(call_later(delay, fire), doomed) for delay, doomed in chunks[index]]
            call_soon(step, index + 1, armed)

    start = thread_time()
    call_soon(step, 0, [])
    loop.run_forever()
    return finished - start


SWITCH_TASKS = 100


def sleep0_switch(loop: Loop, n: int) -> float:
    per_task = n // SWITCH_TASKS

    async def worker() -> None:
        for _ in range(per_task):
            await asyncio.sleep(0)

    async def main() -> float:
        start = thread_time()
        await asyncio.gather(*[worker() for _ in range(SWITCH_TASKS)])
        return thread_time() - start

    return loop.run_until_complete(main())


def threadsafe_burst(loop: Loop, n: int) -> float:
    count = 0
    finished = 0.0

    def callback() -> None:
        nonlocal count, finished
        count += 1
        if count == n:
            finished = perf_counter()
            loop.stop()

    def produce() -> None:
        call_soon_threadsafe = loop.call_soon_threadsafe
        for _ in range(n):
            call_soon_threadsafe(callback)

    producer = threading.Thread(target=produce)
    start = perf_counter()
    producer.start()
    loop.run_forever()
    producer.join()
    return finished - start


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[Loop, int], float]  # seconds for `ops` operations
    ops: int


WORKLOADS = [
    Workload("call_soon chain", call_soon_chain, 100_000),
    Workload("call_soon batch", call_soon_batch, 200_000),
    Workload("call_later churn", call_later_churn, 100_000),
    Workload("sleep(0) switch", sleep0_switch, 50_000),
    Workload("threadsafe burst", threadsafe_burst, 100_000),
]


def _size(workload: Workload, scale: float) -> int:
    # A multiple of SWITCH_TASKS, so the sleep(0) workload does exactly this many switches.
    return max(1, int(workload.ops * scale) // SWITCH_TASKS) * SWITCH_TASKS


def measure(
    factory: Callable[[], Loop],
    workload: Workload,
    scale: float,
    profiler: cProfile.Profile | None = None,
) -> float:
    """ops/s of one run of *workload* on a fresh loop (profiled, loop creation aside, if asked)."""
    ops = _size(workload, scale)
    gc.collect()
    loop = factory()
    try:
        if profiler is None:
            return ops / workload.run(loop, ops)
        profiler.enable()
        try:
            return ops / workload.run(loop, ops)
        finally:
            profiler.disable()
    finally:
        loop.close()


def _format_rate(rate: float) -> str:
    return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.0f}k"


def benchmark(args: argparse.Namespace, workloads: list[Workload]) -> None:
    loops = select_loops(args.loops, args.loop)
    names = list(loops)
    # rates[workload][loop] = ops/s per round
    rates = {w.name: {name: [] for name in names} for w in workloads}
    for round_index in range(-1, args.rounds):  # round -1 warms up and is not recorded
        for workload in workloads:
            for name in rotated(names, round_index):
                rate = measure(loops[name], workload, args.scale)
                if round_index >= 0:
                    rates[workload.name][name].append(rate)

    references = [ref for ref in ("asyncio", "uvloop") if ref in names and "epolloop" in names]
    headers = ["workload (ops/s)", *names, *(f"epolloop/{ref}" for ref in references)]
    rows = []
    for workload in workloads:
        per_loop = rates[workload.name]
        row = [f"{workload.name} ({_size(workload, args.scale):,})"]
        row += [_format_rate(median(per_loop[name])) for name in names]
        for ref in references:
            ratios = [
                mine / theirs
                for mine, theirs in zip(per_loop["epolloop"], per_loop[ref], strict=True)
            ]
            row.append(f"{median(ratios):.2f}x")
        rows.append(row)
    print(f"median of {args.rounds} interleaved rounds (after 1 warm-up round)")
    print_table(headers, rows)


def profile(args: argparse.Namespace, workloads: list[Workload]) -> None:
    factory = select_loops(args.profile, args.loop)[args.profile]
    for workload in workloads:
        measure(factory, workload, args.scale)  # warm up outside the profiler
        profiler = cProfile.Profile()
        measure(factory, workload, args.scale, profiler)
        print(f"=== {args.profile}: {workload.name} ===")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loop_internals", description=__doc__.split("\n")[0]
    )
    add_common_arguments(parser, rounds=5)
    parser.add_argument(
        "--workloads",
        metavar="SUBSTRING,...",
        help="run only the workloads whose names contain one of these (e.g. chain,churn)",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every workload's size (default 1)"
    )
    parser.add_argument("--profile", metavar="LOOP", help="cProfile each workload on LOOP")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    args = parser.parse_args(argv)

    workloads = WORKLOADS
    if args.workloads:
        wanted = [part.strip() for part in args.workloads.split(",") if part.strip()]
        workloads = [w for w in WORKLOADS if any(part in w.name for part in wanted)]
        if not workloads:
            raise SystemExit(f"no workload matches {args.workloads!r}")
    if args.profile:
        profile(args, workloads)
    else:
        benchmark(args, workloads)


if __name__ == "__main__":
    main()
