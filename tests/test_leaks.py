"""Nothing accumulates: file descriptors, resident memory and live objects level off while a
loop churns through connections, timers, tasks, subprocesses and executor jobs.

The test runs the same batch of work several times on one loop and samples after every batch
(after a full collection). The first batches warm caches up (the executor's threads, free
lists, the allocator's arenas); from then on a leak of one object per operation would grow the
samples by hundreds per batch, far above the tolerances.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random

import pytest

BATCHES = 6
WARM_UP = 2  # batches before the samples must level off
CONNECTIONS = 150
TIMERS = 5_000
TASKS = 2_000
CHILDREN = 4
JOBS = 200

OBJECTS_TOLERANCE = 200  # a leak of one object per operation: hundreds per batch
RSS_TOLERANCE = 4 << 20  # the allocator keeps some freed memory; a leak is steady growth


def _sample() -> tuple[int, int, int]:
    """(open fds, resident bytes, live GC-tracked objects), after a full collection."""
    gc.collect()
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return len(os.listdir("/proc/self/fd")), rss, len(gc.get_objects())


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read(1024))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _connections(port: int) -> None:
    for _ in range(CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await reader.read(1024) == b"ping"
        writer.close()
        await writer.wait_closed()


async def _timers(rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    live = TIMERS // 2
    fired = loop.create_future()
    count = 0

    def fire() -> None:
        nonlocal count
        count += 1
        if count == live:
            fired.set_result(None)

    handles = [loop.call_later(rng.uniform(0, 0.002), fire) for _ in range(TIMERS)]
    for handle in handles[live:]:
        handle.cancel()
    await fired


async def _tasks() -> None:
    async def sleeper() -> None:
        await asyncio.sleep(0.001)

    tasks = [asyncio.ensure_future(sleeper()) for _ in range(TASKS)]
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == TASKS // 2


async def _children() -> None:
    for _ in range(CHILDREN):
        child = await asyncio.create_subprocess_exec("true", stdout=asyncio.subprocess.PIPE)
        await child.communicate()
        assert child.returncode == 0


async def _jobs() -> None:
    loop = asyncio.get_running_loop()
    assert await asyncio.gather(*(loop.run_in_executor(None, abs, -n) for n in range(JOBS))) == [
        *range(JOBS)
    ]


@pytest.mark.timeout(300)
async def test_fds_memory_and_objects_level_off_under_churn() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rng = random.Random(8)
    samples = []
    try:
        for _ in range(BATCHES):
            await _connections(port)
            await _timers(rng)
            await _tasks()
            await _children()
            await _jobs()
            samples.append(_sample())
    finally:
        server.close()
        await server.wait_closed()
    (fds, rss, objects), *_, (fds_end, rss_end, objects_end) = samples[WARM_UP - 1 :]
    assert fds_end == fds, samples
    assert objects_end - objects <= OBJECTS_TOLERANCE, samples
    assert rss_end - rss <= RSS_TOLERANCE, samples
