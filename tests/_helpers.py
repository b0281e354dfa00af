"""Small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from signal import SIGINT
from typing import Any

import pytest

import epolloop
import epolloop.loop

GUARD = 30.0  # seconds: a failure guard, never a synchronisation

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# -- epolloop's cores -------------------------------------------------------------------------

#: The names epolloop's loops are tested under: "epolloop" is the live core (what
#: epolloop.new_event_loop() makes: the C core unless it is not built or EPOLLOOP_NO_EXTENSIONS
#: is set), "epolloop-pure" the pure-Python core beside it.
EPOLLOOP_NAMES = ("epolloop", "epolloop-pure")

#: A child process's environment addition that makes its epolloop the pure-Python core.
PURE_CORE_ENV = {"EPOLLOOP_NO_EXTENSIONS": "1"}


def epolloop_loops() -> dict[str, LoopFactory]:
    """epolloop's loops to test by default: the live core, and the pure-Python core beside it
    when the live one is the C core (on the pure core alone that would test it twice)."""
    loops: dict[str, LoopFactory] = {"epolloop": epolloop.new_event_loop}
    if epolloop.core == "c":
        loops["epolloop-pure"] = epolloop.loop.PythonLoop
    return loops


def env_for(loop_name: str) -> dict[str, str] | None:
    """The environment of a child process that is to run *loop_name*'s epolloop core: this
    process's plus PURE_CORE_ENV for "epolloop-pure"; None (inherit) for any other loop."""
    if loop_name == "epolloop-pure":
        return {**os.environ, **PURE_CORE_ENV}
    return None


def noop(*args: Any) -> None:
    pass


async def wait(awaitable: Any) -> Any:
    """Await *awaitable*; a result that never comes fails the test after GUARD seconds."""
    return await asyncio.wait_for(awaitable, GUARD)


async def spin(steps: int = 5) -> None:
    """Let the loop run a few full iterations (each sleep(0) is one step)."""
    for _ in range(steps):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Run loop iterations (sleep(0), never a timed sleep) until predicate() holds; a condition
    that never comes fails the test after GUARD seconds."""
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {GUARD} s")
        await asyncio.sleep(0)


def open_fds() -> set[int]:
    """The file descriptors this process has open now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def socketpair_at(fd: int) -> tuple[socket.socket, socket.socket]:
    """A connected socketpair whose first socket has the fd number *fd* (which is free)."""
    first, second = socket.socketpair()
    if first.fileno() != fd:
        os.dup2(first.fileno(), fd, inheritable=False)
        first.close()
        first = socket.socket(fileno=fd)
    first.setblocking(False)
    second.setblocking(False)
    return first, second


# -- contexts ---------------------------------------------------------------------------------

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def context_where_var_is(value: str) -> contextvars.Context:
    """A copy of the current context in which ``var`` is *value*."""
    context = contextvars.copy_context()
    context.run(var.set, value)
    return context


def record_var(seen: list[tuple[str, str]], name: str) -> None:
    """A callback: appends (name, the value of ``var`` it sees), then sets ``var`` in its own
    context, so that the caller can tell which context it ran in."""
    seen.append((name, var.get()))
    var.set(f"set by {name}")


@contextlib.contextmanager
def var_set_to(value: str) -> Iterator[None]:
    """Set ``var`` in the current context for the block; restored afterwards."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


# -- connections ------------------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """A stream protocol that records what happens to it: ``made`` resolves with the transport,
    ``eof`` when eof_received is called (returning None, so the transport then closes itself),
    ``lost`` with connection_lost's argument; ``data`` gathers every byte received, and
    ``await received(n)`` waits until at least *n* bytes have come. With *echo*, it writes
    back what it receives. *on_made* is called with the protocol at connection_made."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        echo: bool = False,
        on_made: Callable[[Recorder], None] | None = None,
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.made: asyncio.Future[asyncio.BaseTransport] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self.data = bytearray()
        self.echo = echo
        self._loop = loop
        self._on_made = on_made
        self._waiters: list[tuple[int, asyncio.Future[bytes]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.made.set_result(transport)
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)
        self._wake()

    def eof_received(self) -> None:
        if not self.eof.done():
            self.eof.set_result(None)
        self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)
        self._wake()

    def _wake(self) -> None:
        ended = self.eof.done() or self.lost.done()
        still = []
        for count, waiter in self._waiters:
            if waiter.done():
                continue
            if len(self.data) >= count:
                waiter.set_result(bytes(self.data))
            elif ended:
                waiter.set_exception(
                    EOFError(f"the connection ended after {len(self.data)} of {count} bytes")
                )
            else:
                still.append((count, waiter))
        self._waiters = still

    async def received(self, count: int) -> bytes:
        """Everything received so far, once at least *count* bytes have come."""
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters.append((count, waiter))
        self._wake()
        return await wait(waiter)

    async def close(self) -> BaseException | None:
        """Close the transport (if made) and wait for connection_lost."""
        if self.transport is not None:
            self.transport.close()
        return await wait(self.lost)


class Accepting:
    """A protocol factory for servers: every connection gets a Recorder (keyword arguments go
    to it); ``await next()`` returns the next one once connection_made has been called."""

    def __init__(self, loop: asyncio.AbstractEventLoop, **recorder_kwargs: Any) -> None:
        self.protocols: list[Recorder] = []
        self._loop = loop
        self._kwargs = recorder_kwargs
        self._made: asyncio.Queue[Recorder] = asyncio.Queue()

    def __call__(self) -> Recorder:
        protocol = Recorder(self._loop, on_made=self._made.put_nowait, **self._kwargs)
        self.protocols.append(protocol)
        return protocol

    async def next(self) -> Recorder:
        return await wait(self._made.get())

    async def close_all(self) -> None:
        """Close every connection that was made and wait until each is lost."""
        for protocol in self.protocols:
            if protocol.made.done():
                await protocol.close()


@contextlib.asynccontextmanager
async def serving(
    loop: asyncio.AbstractEventLoop,
    host: Any = "127.0.0.1",
    port: int | None = 0,
    *,
    echo: bool = True,
    **kwargs: Any,
) -> AsyncIterator[tuple[asyncio.AbstractServer, Accepting]]:
    """A TCP server whose connections are (echoing) Recorders; on exit every accepted
    connection is closed, then the server, and wait_closed() must return."""
    accepting = Accepting(loop, echo=echo)
    server = await wait(loop.create_server(accepting, host, port, **kwargs))
    try:
        yield server, accepting
    finally:
        await accepting.close_all()
        server.close()
        await wait(server.wait_closed())


def address_of(server: asyncio.AbstractServer, family: int = socket.AF_INET) -> tuple[str, int]:
    """(host, port) of the server's listening socket of *family*."""
    for sock in server.sockets:
        if sock.family == family:
            return sock.getsockname()[:2]
    raise AssertionError(f"no {family!r} socket in {server.sockets!r}")


async def connect(loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Recorder:
    """The client Recorder of loop.create_connection(*args, **kwargs), once connected."""
    transport, protocol = await wait(
        loop.create_connection(lambda: Recorder(loop), *args, **kwargs)
    )
    assert protocol.transport is transport
    return protocol


async def round_trip(client: Recorder, payload: bytes = b"ping") -> None:
    """Write *payload* to an echoing peer and wait until it comes back."""
    start = len(client.data)
    assert client.transport is not None
    client.transport.write(payload)
    received = await client.received(start + len(payload))
    assert received[start:] == payload


def listen_queue(sock: Any) -> tuple[int, int]:
    """(connections waiting in the accept queue, the backlog given to listen()) of a listening
    TCP socket, from TCP_INFO: for a listener Linux reports them as tcpi_unacked and
    tcpi_sacked."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("II", info, 24)


# -- TLS --------------------------------------------------------------------------------------


@functools.cache
def _certificates() -> tuple[Any, Any, Any]:
    trustme = pytest.importorskip(
        "trustme", reason="trustme, which makes the TLS test certificates, is not installed"
    )
    authority = trustme.CA()
    server = authority.issue_cert("localhost", "127.0.0.1", "::1")
    client = authority.issue_cert("client.epolloop.test")
    return authority, server, client


def tls_contexts(
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    client_cert: bool = False,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) with a test CA's certificate for localhost, 127.0.0.1
    and ::1; the client trusts the CA and checks host names. *minimum*/*maximum* bound the
    client's TLS version. With *client_cert* the server requires a client certificate, and the
    client has one (for client.epolloop.test). Skips the test if trustme is not installed."""
    authority, server_cert, client_cert_ = _certificates()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    authority.configure_trust(client)
    if client_cert:
        server.verify_mode = ssl.CERT_REQUIRED
        authority.configure_trust(server)
        client_cert_.configure_cert(client)
    if minimum is not None:
        client.minimum_version = minimum
    if maximum is not None:
        client.maximum_version = maximum
    return server, client


@functools.cache
def _open_process_wide_fds() -> None:
    """libuv opens a pipe at its first loop and keeps it for the life of the process: make it
    exist before fds are counted."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.new_event_loop().close()


@contextlib.contextmanager
def no_fd_leaks() -> Iterator[None]:
    """Fail if the block leaves a file descriptor open that it did not find open."""
    _open_process_wide_fds()
    before = open_fds()
    yield
    leaked = open_fds() - before
    targets = {}
    for fd in sorted(leaked):
        with contextlib.suppress(OSError):
            targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
    assert not leaked, f"file descriptors left open: {targets}"


# -- shared checks ----------------------------------------------------------------------------


def _ipv6_unavailable() -> str | None:
    """Why IPv6 loopback sockets cannot be tested here, or None if they can."""
    if not socket.has_ipv6:
        return "this Python was built without IPv6 (socket.has_ipv6 is False)"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"cannot bind ::1 ({exc})"
    return None


_NO_IPV6 = _ipv6_unavailable()
needs_ipv6 = pytest.mark.skipif(_NO_IPV6 is not None, reason=f"IPv6 unavailable: {_NO_IPV6}")


def check_write_buffer_limits(transport: Any, loop_name: str) -> None:
    """asyncio's write-buffer limits on a fresh transport: (16 KiB, 64 KiB) by default, each
    bound derived from the other when only one is given, bad pairs refused."""
    kib = 1024
    initial = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=1000)
    assert transport.get_write_buffer_limits() == (250, 1000)  # low defaults to high // 4
    transport.set_write_buffer_limits(low=1000)
    assert transport.get_write_buffer_limits() == (1000, 4000)  # high defaults to 4 * low
    transport.set_write_buffer_limits(high=300, low=100)
    assert transport.get_write_buffer_limits() == (100, 300)
    transport.set_write_buffer_limits(high=0)
    assert transport.get_write_buffer_limits() == (0, 0)
    transport.set_write_buffer_limits()  # the defaults
    assert transport.get_write_buffer_limits() == (16 * kib, 64 * kib)
    for high, low in [(100, 200), (None, -1), (-1, None), (-4, -1)]:
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=high, low=low)
        assert transport.get_write_buffer_limits() == (16 * kib, 64 * kib)  # unchanged
    if loop_name == "uvloop" and initial == (16, 64 * kib):
        pytest.xfail("uvloop: initial low-water mark is 16 bytes (64 // 4), not 16 KiB")
    assert initial == (16 * kib, 64 * kib)  # (low, high)


def warnings_logged(caplog: pytest.LogCaptureFixture, message: str) -> int:
    """How many times the 'asyncio' logger warned *message* (as transports do for writes
    made after the connection was lost)."""
    return sum(
        1
        for record in caplog.records
        if record.name == "asyncio"
        and record.levelno == logging.WARNING
        and record.getMessage() == message
    )


class Child:
    """A child process (for a str: Python running that program), whose stdout the test reads
    line by line; killed at the end of the with block if still running."""

    def __init__(self, program: str | list[str], **popen_kwargs: Any) -> None:
        argv = [sys.executable, "-c", program] if isinstance(program, str) else program
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            **popen_kwargs,
        )
        self._pending = b""

    def expect(self, line: str) -> None:
        """Wait for the next line of the child's stdout, which must be *line*."""
        assert self.next_line() == line

    def next_line(self) -> str:
        """Wait for the next line of the child's stdout."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + GUARD
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"no line from the child within {GUARD} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                _, err = self.process.communicate(timeout=GUARD)
                raise AssertionError(f"the child ended before a line: {err.decode()}")
            self._pending += chunk
        got, self._pending = self._pending.split(b"\n", 1)
        return got.decode()

    def interrupt(self) -> None:
        """Ctrl-C."""
        self.process.send_signal(SIGINT)

    def finish(self) -> tuple[int, list[str], str]:
        """Wait for the child to exit: (returncode, the rest of its stdout's lines, stderr)."""
        out, err = self.process.communicate(timeout=GUARD)
        return self.process.returncode, (self._pending + out).decode().splitlines(), err.decode()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
