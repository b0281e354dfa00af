"""UDP, pipes and child processes: the transports of issue 4, loop against loop.

Workloads (higher is better):

    udp ping-pong     one 64-byte datagram bounced between two endpoints on loopback, N times
                      (round trips/s: every datagram is one wake-up, one recvfrom, one sendto)
    pipe throughput   256 MiB through os.pipe() from a write-pipe to a read-pipe transport on
                      the same loop, 1 MiB writes, with flow control (MB/s)
    subprocess spawn  create_subprocess_exec('true') + communicate(), one after another
                      (children/s: fork/exec, pipes, and learning that the child exited)

Wall time; both ends run in the one loop, so the figure is the loop's whole cost. Every
measurement runs in a fresh interpreter, on a fresh loop.

    python -m benchmarks --workloads transports
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter

from ._loops import LoopFactory
from ._suite import Context, Figure, Workload, run_in_child

_DATAGRAMS = 20_000
_PIPE_BYTES = 256 << 20
_CHILDREN = 200


async def udp_ping_pong(scale: float) -> float:
    loop = asyncio.get_running_loop()
    datagrams = max(10, int(_DATAGRAMS * scale))

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    class Pinger(Echo):
        def __init__(self) -> None:
            self.left = datagrams
            self.done = loop.create_future()

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.left -= 1
            if self.left:
                self.transport.sendto(data)  # type: ignore[attr-defined]
            else:
                self.done.set_result(None)

    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client, pinger = await loop.create_datagram_endpoint(
        Pinger, remote_addr=server.get_extra_info("sockname")
    )
    start = perf_counter()
    client.sendto(b"x" * 64)
    await pinger.done
    elapsed = perf_counter() - start
    client.close()
    server.close()
    return datagrams / elapsed


async def pipe_throughput(scale: float) -> float:
    loop = asyncio.get_running_loop()
    blocks = max(1, int(_PIPE_BYTES * scale) >> 20)
    read_fd, write_fd = os.pipe()

    class Sink(asyncio.Protocol):
        def __init__(self) -> None:
            self.received = 0
            self.done = loop.create_future()

        def data_received(self, data: bytes) -> None:
            self.received += len(data)

        def connection_lost(self, exc: BaseException | None) -> None:
            self.done.set_result(self.received)

    class Source(asyncio.Protocol):
        def __init__(self) -> None:
            self.writable = asyncio.Event()
            self.writable.set()

        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

    _, sink = await loop.connect_read_pipe(Sink, os.fdopen(read_fd, "rb", 0))
    writer, source = await loop.connect_write_pipe(Source, os.fdopen(write_fd, "wb", 0))
    block = b"x" * (1 << 20)
    start = perf_counter()
    for _ in range(blocks):
        await source.writable.wait()
        writer.write(block)
    writer.close()
    received = await sink.done
    assert received == blocks * len(block)
    return received / (perf_counter() - start) / 1e6


async def subprocess_spawn(scale: float) -> float:
    children = max(2, int(_CHILDREN * scale))
    start = perf_counter()
    for _ in range(children):
        child = await asyncio.create_subprocess_exec("true", stdout=asyncio.subprocess.PIPE)
        await child.communicate()
    return children / (perf_counter() - start)


# name -> (unit, the workload: scale -> figure)
WORKLOADS: dict[str, tuple[str, Callable[[float], Awaitable[float]]]] = {
    "udp ping-pong": ("round trips/s", udp_ping_pong),
    "pipe throughput": ("MB/s", pipe_throughput),
    "subprocess spawn": ("children/s", subprocess_spawn),
}


def run(make_loop: LoopFactory, workload: str, scale: float) -> dict[str, float]:
    """The measuring process."""
    loop = make_loop()
    try:
        return {"rate": loop.run_until_complete(WORKLOADS[workload][1](scale))}
    finally:
        loop.close()


def measure(workload: str, ctx: Context, loop: str) -> dict[str, float]:
    return run_in_child(run, loop, workload=workload, scale=ctx.duration)


def workloads() -> list[Workload]:
    return [
        Workload(
            family="transports",
            name=name,
            figures=(Figure("rate", unit, higher_is_better=True),),
            measure=partial(measure, name),
            default=name == "udp ping-pong",
        )
        for name, (unit, _) in WORKLOADS.items()
    ]
