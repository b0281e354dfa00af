"""TCP echo servers on each loop, loaded by a C client: server CPU time per request.

Server kinds (each an ordinary asyncio program, the same code on every loop):

    protocol   asyncio.Protocol, write() in data_received
    buffered   asyncio.BufferedProtocol, one preallocated buffer
    streams    asyncio.start_server, StreamReader.read / StreamWriter.write + drain
    sock       loop.sock_accept / sock_recv / sock_sendall in a task per connection

The last column is the ceiling: benchmarks/ceiling/echo_server.c, a single-threaded
edge-triggered epoll echo server in C, the figure no Python loop can beat here.

The client (benchmarks/ceiling/echo_client.c, compiled with cc at each run) keeps C
connections busy: each sends SIZE bytes, waits for the same bytes back (checked), and sends
again. On two or more cores the server is pinned to one core and the client to another. The
figure that separates loops on a small machine is the server's CPU time (user + system, from
/proc) per round trip; round trips per second are shown too, but the client may saturate first.

    python -m benchmarks.echo [--rounds 3] [--loops ...] [--kinds protocol,sock]
                              [--size 1024] [--connections 10] [--duration 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ._loops import (
    add_common_arguments,
    available_loops,
    load_factory,
    median,
    print_table,
    rotated,
    select_loops,
)

KINDS = ("protocol", "buffered", "streams", "sock")
_CEILING = Path(__file__).with_name("ceiling")  # the C client, and the C server to beat
_TICKS = os.sysconf("SC_CLK_TCK")


# -- the servers (run in a child process: python -m benchmarks.echo --serve KIND LOOP) --------


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.write = transport.write  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.write = transport.write  # type: ignore[attr-defined]
        self.buffer = bytearray(256 * 1024)
        self.view = memoryview(self.buffer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.write(self.view[:nbytes])


async def _echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the client quits mid-message when its time is up
    writer.close()


async def _echo_sock(loop: asyncio.AbstractEventLoop, conn: object) -> None:
    with conn:  # type: ignore[attr-defined]
        try:
            while data := await loop.sock_recv(conn, 256 * 1024):  # type: ignore[arg-type]
                await loop.sock_sendall(conn, data)  # type: ignore[arg-type]
        except ConnectionError:
            pass  # the client quits mid-message when its time is up


async def serve(kind: str) -> None:
    """Serve on 127.0.0.1, print the port, stop when stdin closes."""
    loop = asyncio.get_running_loop()
    if kind == "sock":
        import socket

        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        listener.setblocking(False)
        port = listener.getsockname()[1]

        connections: set[asyncio.Task[None]] = set()

        async def accept_forever() -> None:
            while True:
                conn, _ = await loop.sock_accept(listener)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connections.add(loop.create_task(_echo_sock(loop, conn)))

        server_task = loop.create_task(accept_forever())
    else:
        if kind == "streams":
            server = await asyncio.start_server(_echo_stream, "127.0.0.1", 0, backlog=1024)
        else:
            factory = EchoProtocol if kind == "protocol" else EchoBufferedProtocol
            server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    stdin_closed = loop.create_future()
    loop.add_reader(
        sys.stdin.fileno(), lambda: stdin_closed.done() or stdin_closed.set_result(None)
    )
    await stdin_closed
    if kind == "sock":
        server_task.cancel()


# -- the driver ---------------------------------------------------------------------------


def compile_tools(directory: Path) -> tuple[Path, Path]:
    """The C load client and the C ceiling server, compiled into *directory*."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("benchmarks.echo needs a C compiler (cc) for its load client")
    binaries = []
    for name in ("echo_client", "echo_server"):
        binary = directory / name
        source = _CEILING / f"{name}.c"
        subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
        binaries.append(binary)
    return binaries[0], binaries[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _pin(core: int | None) -> dict[str, object]:
    if core is None:
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {core})}


def measure(
    client: Path, server_argv: list[str], size: int, connections: int, duration: float
) -> tuple[float, float]:
    """One run against the server *server_argv* starts (it prints its port and serves until
    its stdin closes): (server CPU µs per round trip, round trips per second)."""
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    server = subprocess.Popen(
        server_argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **_pin(server_core),  # type: ignore[arg-type]
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        if not port:
            raise RuntimeError(f"the server {server_argv} did not start")
        before = _cpu_seconds(server.pid)
        done = subprocess.run(
            [str(client), "127.0.0.1", port, str(connections), str(size), str(duration)],
            capture_output=True,
            text=True,
            check=True,
            **_pin(client_core),  # type: ignore[arg-type]
        )
        cpu = _cpu_seconds(server.pid) - before
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(timeout=30)
    round_trips = int(done.stdout.split()[0])
    return cpu / round_trips * 1e6, round_trips / duration


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        kind, loop_name = argv[1], argv[2]
        factory = available_loops().get(loop_name) or load_factory(loop_name)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(kind))
        return
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.echo", description=__doc__.split("\n")[0]
    )
    add_common_arguments(parser, rounds=3)
    parser.add_argument("--kinds", default=",".join(KINDS), help="server kinds to run")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message (1024)")
    parser.add_argument("--connections", type=int, default=10, help="client connections (10)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run (2)")
    args = parser.parse_args(argv)
    loops = select_loops(args.loops, args.loop)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    ceiling = "C ceiling"
    with tempfile.TemporaryDirectory(prefix="epolloop-bench-") as directory:
        client, ceiling_server = compile_tools(Path(directory))
        for round_number in range(args.rounds):
            for name in [*rotated(list(loops), round_number), ceiling]:
                for kind in kinds if name != ceiling else ["any"]:
                    print(
                        f"\r  round {round_number + 1}/{args.rounds}: {name} {kind}      ",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
                    argv = (
                        [str(ceiling_server)]
                        if name == ceiling
                        else [sys.executable, "-m", "benchmarks.echo", "--serve", kind, name]
                    )
                    results.setdefault((kind, name), []).append(
                        measure(client, argv, args.size, args.connections, args.duration)
                    )
    print(file=sys.stderr)

    def cell(kind: str, name: str) -> str:
        runs = results[kind if name != ceiling else "any", name]
        cpu, rate = median([r[0] for r in runs]), median([r[1] for r in runs])
        return f"{cpu:.1f} ({rate:,.0f}/s)"

    print(
        f"echo over TCP, {args.size} B messages, {args.connections} connections: "
        "server CPU µs per round trip (round trips/s)"
    )
    columns = [*loops, ceiling]
    print_table(["server", *columns], [[kind, *(cell(kind, n) for n in columns)] for kind in kinds])


if __name__ == "__main__":
    main()
