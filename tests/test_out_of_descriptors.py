"""A server that runs out of file descriptors (EMFILE on accept) must keep serving the
connections it has, must not spin, must say so once, and must serve the clients waiting in its
listen queue as soon as descriptors come free.

The server runs in a child process whose RLIMIT_NOFILE is lowered to 64 once its loop and
listening socket exist; 150 clients connect (the kernel completes their handshakes into the
listen queue whether or not the server accepts).

ENFILE (the system's file table full) takes the same path; no unprivileged test can fill that
table, so a listening socket whose accept() fails so stands in for it, in process.

This is a guarantee beyond asyncio's: measured here with the same program, stock asyncio keeps
going round its accept loop after EMFILE, reporting and scheduling one more retry at each of its
backlog's iterations, so reports and retries multiply and its accepted connections went
unanswered; uvloop (libuv) reports nothing and closes the waiting connections to shed them
(100 of 150 dropped).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable

import pytest
from _helpers import GUARD, Child, env_for

LIMIT = 64
CLIENTS = 150
QUIET_WINDOW = 1.5  # seconds: longer than asyncio's ACCEPT_RETRY_DELAY (1 s)

_SERVER = f"""
import asyncio, os, resource, sys
import epolloop


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def main():
    loop = asyncio.get_running_loop()

    def report(loop, context):
        exc = context.get("exception")
        print("report", getattr(exc, "errno", None), context["message"], flush=True)

    loop.set_exception_handler(report)
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
    stdin_closed = loop.create_future()
    loop.add_reader(0, lambda: stdin_closed.done() or stdin_closed.set_result(None))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, hard))
    open_fds = len(os.listdir("/proc/self/fd")) - 1  # not the listing's own descriptor
    print(server.sockets[0].getsockname()[1], open_fds, flush=True)
    await stdin_closed
    server.close()
    print("done", flush=True)


epolloop.run(main())
"""


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _echoes(clients: set[socket.socket], count: int) -> set[socket.socket]:
    """Wait until *count* of *clients* have echoed their byte; those clients."""
    echoed: set[socket.socket] = set()
    deadline = time.monotonic() + GUARD
    while len(echoed) < count:
        left = deadline - time.monotonic()
        readable = select.select(list(clients - echoed), [], [], max(left, 0))[0]
        assert readable, f"{len(echoed)} of {count} echoes within {GUARD} s"
        for client in readable:
            assert client.recv(1) == b"x", "a waiting client was dropped, not served"
            echoed.add(client)
    return echoed


@pytest.mark.epolloop_only
def test_a_server_out_of_descriptors_serves_on_reports_once_and_catches_up(
    loop_factory: object, loop_name: str
) -> None:
    # The server runs in the child on the core named (EPOLLOOP_NO_EXTENSIONS for the pure one).
    with Child(_SERVER, stdin=subprocess.PIPE, env=env_for(loop_name)) as child:
        port, base = map(int, child.next_line().split())
        clients = {socket.create_connection(("127.0.0.1", port)) for _ in range(CLIENTS)}
        try:
            # The server accepts until it has no descriptor left, and says so, once.
            assert (
                child.next_line() == f"report {errno.EMFILE} socket.accept() out of system resource"
            )
            accepted = len(os.listdir(f"/proc/{child.process.pid}/fd")) - base
            assert 0 < accepted < CLIENTS

            # Starved through more than a retry period: no spinning, no second report.
            cpu, start = _cpu_seconds(child.process.pid), time.monotonic()
            quiet = not select.select([child.process.stdout], [], [], QUIET_WINDOW)[0]
            share = (_cpu_seconds(child.process.pid) - cpu) / (time.monotonic() - start)
            assert quiet, "a second report while the condition is unchanged"
            assert share < 0.25, f"the starved server used {share:.0%} of a core"

            # The connections it has are served; the waiting clients are not, yet.
            for client in clients:
                client.sendall(b"x")
            served = _echoes(clients, accepted)
            assert not select.select(list(clients - served), [], [], 0)[0]

            # Each closed connection frees a descriptor: every waiting client is served.
            waiting = clients - served
            for client in served:
                client.close()
            while waiting:
                batch = _echoes(waiting, 1)
                waiting -= batch
                for client in batch:
                    client.close()
            clients.clear()
            returncode, rest, err = child.finish()  # closes its stdin: the server stops
        finally:
            for client in clients:
                client.close()
    assert returncode == 0, err
    assert rest == ["done"], "caught up with its queue, the server reported nothing more"


class _FileTableFull(socket.socket):
    """A listening socket whose accept() fails as it does when the system's file table is full
    (ENFILE, which no unprivileged test can bring about) while ``full`` is set."""

    full = False
    accepts = 0

    def accept(self) -> tuple[socket.socket, object]:
        self.accepts += 1
        if self.full:
            raise OSError(errno.ENFILE, os.strerror(errno.ENFILE))
        return super().accept()


@pytest.mark.epolloop_only
def test_enfile_on_accept_is_reported_once_without_spinning_and_accepting_resumes(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    loop = new_loop()
    reported: asyncio.Future[dict[str, object]] = loop.create_future()
    reports: list[dict[str, object]] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        reports.append(context)
        if not reported.done():
            reported.set_result(context)

    loop.set_exception_handler(handler)
    listener = _FileTableFull(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    made: list[asyncio.Future[asyncio.BaseTransport]] = [loop.create_future() for _ in range(2)]

    class Hold(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            next(future for future in made if not future.done()).set_result(transport)

    async def scenario() -> None:
        server = await loop.create_server(Hold, sock=listener)
        address = listener.getsockname()
        with socket.create_connection(address) as first:
            first_transport = await asyncio.wait_for(made[0], GUARD)
            listener.full = True
            with socket.create_connection(address):
                context = await asyncio.wait_for(reported, GUARD)
                assert context["message"] == "socket.accept() out of system resource"
                assert getattr(context["exception"], "errno", None) == errno.ENFILE
                # The second client waits in the listen queue, so the listening socket stays
                # readable: a server still watching it would call accept() at every iteration.
                accepts = listener.accepts
                for _ in range(100):
                    await asyncio.sleep(0)
                assert listener.accepts == accepts
                assert not made[1].done()
                # One of the server's own connections closes, a descriptor comes free: the
                # server accepts again at once (not after asyncio's 1 s retry).
                listener.full = False
                first_transport.close()
                second_transport = await asyncio.wait_for(made[1], GUARD)
                second_transport.close()
                first.settimeout(GUARD)
                assert first.recv(1) == b""
        server.close()
        await server.wait_closed()

    loop.run_until_complete(scenario())
    assert len(reports) == 1, reports
