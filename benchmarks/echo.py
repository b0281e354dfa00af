"""Echo servers over TCP and Unix sockets, loaded by the C client: server CPU per round trip.

Server kinds (each an ordinary asyncio program, the same code on every loop):

    protocol   asyncio.Protocol, write() in data_received
    buffered   asyncio.BufferedProtocol, one preallocated buffer
    streams    asyncio.start_server, StreamReader.read / StreamWriter.write + drain
    sock       loop.sock_accept / sock_recv / sock_sendall in a task per connection

Each of the client's connections (benchmarks/ceiling/load_client.c) sends SIZE bytes, waits for
the same bytes back (checked) and sends again. The C ceiling is benchmarks/ceiling/server.c in
echo mode: a single-threaded edge-triggered epoll server, the figure no Python loop can beat.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from functools import partial

from ._suite import Context, Figure, Workload, loaded, server_command

KINDS = ("protocol", "buffered", "streams", "sock")
SIZES = (1024, 10 * 1024, 100 * 1024)
CONNECTIONS = (1, 10, 100)
READ_SIZE = 256 * 1024

FIGURES = (Figure("cpu_us", "server CPU µs/round trip"),)

_tasks: set[asyncio.Task[None]] = set()  # the sock server's tasks, kept alive


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.write = transport.write  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.write = transport.write  # type: ignore[attr-defined]
        self.view = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.write(self.view[:nbytes])


async def _echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the client quits mid-message when its time is up
    writer.close()


async def _echo_sock(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    with conn:
        try:
            while data := await loop.sock_recv(conn, READ_SIZE):
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass  # the client quits mid-message when its time is up


async def _accept_forever(listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        conn, _ = await loop.sock_accept(listener)
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(_echo_sock(conn))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


async def start(kind: str, address: str) -> str:
    """Serve *kind* echo on *address* ("127.0.0.1:0" or "unix:PATH"); what the C server prints
    for the same address: the port, or the path."""
    loop = asyncio.get_running_loop()
    path = address.removeprefix("unix:") if address.startswith("unix:") else None
    host, _, port = address.rpartition(":")
    if kind == "sock":
        if path:
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(path)
            listener.listen(4096)
        else:
            listener = socket.create_server((host, int(port)), backlog=4096)
        listener.setblocking(False)
        server_socket = listener
        _tasks.add(loop.create_task(_accept_forever(listener)))
    elif kind == "streams":
        if path:
            server = await asyncio.start_unix_server(_echo_stream, path, backlog=4096)
        else:
            server = await asyncio.start_server(_echo_stream, host, int(port), backlog=4096)
        server_socket = server.sockets[0]
    else:
        factory = EchoProtocol if kind == "protocol" else EchoBufferedProtocol
        if path:
            server = await loop.create_unix_server(factory, path, backlog=4096)
        else:
            server = await loop.create_server(factory, host, int(port), backlog=4096)
        server_socket = server.sockets[0]
    return path or str(server_socket.getsockname()[1])


def client_address(printed: str) -> str:
    """The load client's address for what a server printed (a port, or a socket path)."""
    return f"127.0.0.1:{printed}" if printed.isdigit() else f"unix:{printed}"


def measure(
    kind: str, unix: bool, size: int, connections: int, ctx: Context, loop: str
) -> dict[str, float]:
    assert ctx.tools is not None
    with tempfile.TemporaryDirectory(prefix="epolloop-bench-") as directory:
        address = f"unix:{directory}/echo.sock" if unix else "127.0.0.1:0"
        threads = min(ctx.cores.client_threads, connections)

        def client(printed: str, seconds: float) -> list[str]:
            return [
                str(ctx.tools["load_client"]),  # type: ignore[index]
                "echo",
                client_address(printed),
                str(connections),
                str(size),
                f"{seconds:.3f}",
                str(threads),
            ]

        return loaded(
            server_command(loop, "echo", start, ctx, kind=kind, address=address),
            client,
            lambda stdout: int(stdout.split()[0]),
            ctx,
        )


def _label(size: int) -> str:
    return f"{size // 1024}KiB"


def workloads() -> list[Workload]:
    def echo(kind: str, unix: bool, size: int, connections: int) -> Workload:
        where = "unix" if unix else "tcp"
        return Workload(
            family="echo",
            name=f"echo {where} {kind} {_label(size)} x{connections}",
            figures=FIGURES,
            measure=partial(measure, kind, unix, size, connections),
            ceiling=f"echo {where} {size} {connections}",
            default=(kind, unix, size, connections) == ("protocol", False, 1024, 10),
            needs_tools=True,
            note="round trips/s",
            group=f"echo {where}" if unix else f"echo {where} {kind}",
        )

    tcp = [
        echo(kind, False, size, connections)
        for kind in KINDS
        for size in SIZES
        for connections in CONNECTIONS
    ]
    return [*tcp, *(echo(kind, True, 1024, 10) for kind in KINDS)]
