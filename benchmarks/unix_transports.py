"""UDP, pipes and child processes: the transports of issue 4, loop against loop.

Workloads (higher is better):

    udp ping-pong     one 64-byte datagram bounced between two endpoints on loopback, N times
                      (round trips/s: every datagram is one wake-up, one recvfrom, one sendto)
    pipe throughput   256 MiB through os.pipe() from a write-pipe to a read-pipe transport on
                      the same loop, 1 MiB writes, with flow control (MB/s)
    subprocess spawn  create_subprocess_exec('true') + communicate(), one after another
                      (children/s: fork/exec, pipes, and learning that the child exited)

Wall time; both ends run in the one loop, so the figure is the loop's whole cost. Every
measurement gets a fresh loop; loops are interleaved round by round (A B C, then B C A, ...).

    python -m benchmarks.unix_transports [--rounds 3] [--loops ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from time import perf_counter

from ._loops import add_common_arguments, median, print_table, rotated, select_loops

_DATAGRAMS = 20_000
_PIPE_BYTES = 256 << 20
_CHILDREN = 200


async def udp_ping_pong() -> float:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    class Pinger(Echo):
        def __init__(self) -> None:
            self.left = _DATAGRAMS
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
    return _DATAGRAMS / elapsed


async def pipe_throughput() -> float:
    loop = asyncio.get_running_loop()
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
    for _ in range(_PIPE_BYTES // len(block)):
        await source.writable.wait()
        writer.write(block)
    writer.close()
    received = await sink.done
    assert received == _PIPE_BYTES
    return _PIPE_BYTES / (perf_counter() - start) / 1e6


async def subprocess_spawn() -> float:
    start = perf_counter()
    for _ in range(_CHILDREN):
        child = await asyncio.create_subprocess_exec("true", stdout=asyncio.subprocess.PIPE)
        await child.communicate()
    return _CHILDREN / (perf_counter() - start)


WORKLOADS: list[tuple[str, str, Callable[[], Awaitable[float]]]] = [
    ("udp ping-pong", "round trips/s", udp_ping_pong),
    ("pipe throughput", "MB/s", pipe_throughput),
    ("subprocess spawn", "children/s", subprocess_spawn),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.unix_transports", description=__doc__.split("\n")[0]
    )
    add_common_arguments(parser, rounds=3)
    args = parser.parse_args(argv)
    loops = select_loops(args.loops, args.loop)
    results: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        for name in rotated(list(loops), round_number):
            for workload, _, run in WORKLOADS:
                loop = loops[name]()
                try:
                    results.setdefault((workload, name), []).append(loop.run_until_complete(run()))
                finally:
                    loop.close()
    names = list(loops)
    rows = [
        [f"{workload} ({unit})", *(f"{median(results[workload, name]):,.0f}" for name in names)]
        for workload, unit, _ in WORKLOADS
    ]
    print_table(["workload", *names], rows)


if __name__ == "__main__":
    main()
