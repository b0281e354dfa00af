"""The loop's own machinery, without I/O: callbacks, timers, task switches, thread wake-ups.

Workloads (operations per second, higher is better):

    call_soon chain       one callback at a time, each scheduling the next (one loop step each)
    call_soon batch       one callback schedules N at once; they all run in the next step
    call_later churn      N call_later at random delays of 1-50 ms, 1,000 per step, 90% of
                          them cancelled one step later, the rest fire; ops = timers
    sleep(0) switch       100 tasks each awaiting asyncio.sleep(0) in turn; ops = task switches
    sleeping tasks        10,000 tasks each sleeping four random 0-5 ms delays; ops = wake-ups
    gather                asyncio.gather of N tasks that return at once; ops = tasks
    threadsafe burst      another thread calls call_soon_threadsafe N times as fast as it can
                          (wall time from its start to the loop running the last callback)
    threadsafe ping-pong  another thread calls call_soon_threadsafe and waits for the loop,
                          asleep in the meantime, to answer; ops = round trips (wall time)
    loop creation         make a loop and close it

Not like for like: rloop (0.5) runs what a callback schedules within the same step and looks at
I/O only now and then (a ready reader waited ~800 chained callbacks there, one or two on the
others), so its chain figure measures a loop that skips asyncio's fairness rule.

The single-threaded workloads are timed in CPU time of the loop's thread (user + system, so
syscalls count; time slices lost to other processes do not), the threaded ones in wall time.
Every measurement runs in a fresh interpreter, on a fresh loop, after a warm-up run a tenth
the size.

    python -m benchmarks --workloads internals            # side by side, as everything else
    python -m benchmarks.loop_internals --profile epolloop [--workloads chain,churn]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from time import perf_counter, thread_time
from typing import Any

from ._loops import LoopFactory, factory
from ._suite import Context, Figure, Workload, run_in_child

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


def _gathered(loop: Loop, coroutines: list[Coroutine[Any, Any, Any]]) -> float:
    """Thread CPU seconds the loop takes to run *coroutines* to the end, as concurrent tasks."""

    async def main() -> float:
        start = thread_time()
        await asyncio.gather(*coroutines)
        return thread_time() - start

    return loop.run_until_complete(main())


SWITCH_TASKS = 100


def sleep0_switch(loop: Loop, n: int) -> float:
    per_task = n // SWITCH_TASKS

    async def worker() -> None:
        for _ in range(per_task):
            await asyncio.sleep(0)

    return _gathered(loop, [worker() for _ in range(SWITCH_TASKS)])


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


SLEEPS_PER_TASK = 4  # divides every size (multiples of 100)
SLEEP_MAX = 0.005


def sleeping_tasks(loop: Loop, n: int) -> float:
    # Many tasks asleep at once, as connections waiting on timeouts are: the timer heap holds
    # thousands of entries and every wake-up resumes a task.
    rng = random.Random(n)
    tasks = n // SLEEPS_PER_TASK
    delays = [[rng.uniform(0, SLEEP_MAX) for _ in range(SLEEPS_PER_TASK)] for _ in range(tasks)]

    async def sleeper(mine: list[float]) -> None:
        for delay in mine:
            await asyncio.sleep(delay)

    return _gathered(loop, [sleeper(mine) for mine in delays])


def gather_tasks(loop: Loop, n: int) -> float:
    async def tiny() -> int:
        return 1

    return _gathered(loop, [tiny() for _ in range(n)])


def threadsafe_ping_pong(loop: Loop, n: int) -> float:
    # Each call finds the loop asleep in epoll_wait: the figure is the wake-up's round trip.
    answered = threading.Semaphore(0)
    finished = 0.0

    def ping() -> None:
        answered.release()

    def player() -> None:
        nonlocal finished
        call_soon_threadsafe = loop.call_soon_threadsafe
        for _ in range(n):
            call_soon_threadsafe(ping)
            answered.acquire()
        finished = perf_counter()
        call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=player)
    start = perf_counter()
    thread.start()
    loop.run_forever()
    thread.join()
    return finished - start


def loop_creation(make_loop: LoopFactory, n: int) -> float:
    start = thread_time()
    for _ in range(n):
        make_loop().close()
    return thread_time() - start


# name -> (function, operations at --duration 1, whether it takes the factory, not a loop)
WORKLOADS: dict[str, tuple[Callable[..., float], int, bool]] = {
    "call_soon chain": (call_soon_chain, 100_000, False),
    "call_soon batch": (call_soon_batch, 200_000, False),
    "call_later churn": (call_later_churn, 100_000, False),
    "sleep(0) switch": (sleep0_switch, 50_000, False),
    "sleeping tasks": (sleeping_tasks, 40_000, False),
    "gather": (gather_tasks, 20_000, False),
    "threadsafe burst": (threadsafe_burst, 100_000, False),
    "threadsafe ping-pong": (threadsafe_ping_pong, 10_000, False),
    "loop creation": (loop_creation, 2_000, True),
}


def _once(make_loop: LoopFactory, workload: str, ops: int) -> float:
    """Seconds for *ops* operations of *workload*, on a fresh loop."""
    function, _, takes_factory = WORKLOADS[workload]
    if takes_factory:
        return function(make_loop, ops)
    loop = make_loop()
    try:
        return function(loop, ops)
    finally:
        loop.close()


def run(make_loop: LoopFactory, workload: str, ops: int) -> dict[str, float]:
    """The measuring process: a warm-up a tenth the size, then the measured run."""
    _once(make_loop, workload, max(ops // 10, SWITCH_TASKS))
    return {"rate": ops / _once(make_loop, workload, ops)}


def _size(workload: str, scale: float) -> int:
    # A multiple of SWITCH_TASKS, so the sleep(0) workload does exactly this many switches.
    return max(1, int(WORKLOADS[workload][1] * scale) // SWITCH_TASKS) * SWITCH_TASKS


def measure(workload: str, ctx: Context, loop: str) -> dict[str, float]:
    return run_in_child(run, loop, workload=workload, ops=_size(workload, ctx.duration))


def workloads() -> list[Workload]:
    return [
        Workload(
            family="internals",
            name=name,
            figures=(Figure("rate", "ops/s", higher_is_better=True),),
            measure=partial(measure, name),
            default=name == "call_soon chain",
        )
        for name in WORKLOADS
    ]


def main(argv: list[str] | None = None) -> None:
    """cProfile each workload once on one loop, in this process (after a warm-up)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loop_internals", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--profile", metavar="LOOP", required=True, help="e.g. epolloop")
    parser.add_argument("--workloads", metavar="SUBSTRING,...", help="e.g. chain,churn")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sizes")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    args = parser.parse_args(argv)
    wanted = [part.strip() for part in (args.workloads or "").split(",") if part.strip()]
    chosen = [name for name in WORKLOADS if not wanted or any(part in name for part in wanted)]
    if not chosen:
        raise SystemExit(f"no workload matches {args.workloads!r}")
    make_loop = factory(args.profile)
    for name in chosen:
        ops = _size(name, args.scale)
        _once(make_loop, name, ops)  # warm up outside the profiler
        profiler = cProfile.Profile()
        profiler.runcall(_once, make_loop, name, ops)
        print(f"=== {args.profile}: {name} ({ops:,} ops) ===")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
