"""Stream transports made by create_server / create_connection (create_unix_server /
create_unix_connection for Unix sockets), on every loop, over TCP loopback and Unix sockets:
the transport and protocol contract (asyncio.Transport, asyncio.Protocol, BufferedProtocol).

Stock asyncio is the reference (selector_events._SelectorSocketTransport): every assertion that
runs on it holds there. Waits are on futures and events set by the protocol callbacks, or on loop
iterations (``until``), never on timed sleeps; ``wait``'s guard only turns a callback that never
comes into a failure instead of a hang.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import hashlib
import itertools
import logging
import os
import random
import resource
import select
import shutil
import socket
import stat
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _helpers import GUARD, check_write_buffer_limits, open_fds, spin, until, wait, warnings_logged

KiB = 1024
MiB = 1024 * KiB

# asyncio logs 'socket.send() raised exception.' from the write that finds this many earlier
# write attempts or losses counted (asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES).
LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5


def payload(size: int, seed: int = 0) -> bytes:
    """*size* reproducible random bytes (random data catches reordering and duplication)."""
    return random.Random(seed).randbytes(size)


FLOW = ("pause_writing", "resume_writing")


def squeeze(events: list[str], ignore: tuple[str, ...] = FLOW) -> list[str]:
    """*events* without the flow-control ones (by default), runs of the same event collapsed
    into one."""
    out: list[str] = []
    for event in events:
        if event not in ignore and (not out or out[-1] != event):
            out.append(event)
    return out


def is_readable(sock: Any) -> bool:
    """Whether the kernel has something for *sock* to read (data, EOF or an error)."""
    return bool(select.select([sock.fileno()], [], [], 0)[0])


# -- protocols --------------------------------------------------------------------------------


class Recording:
    """The recording part of the protocols below (loops tell a BufferedProtocol by its class).

    Records every callback, in order, in ``events``; keeps the bytes received (or, with
    ``keep=False``, only counts and hashes them); echoes them back with ``echo=True``.

    ``eof_received`` returns *keep_open*. ``pause_writing``/``resume_writing`` record the write
    buffer size they see. Futures ``made``, ``eof`` and ``lost`` resolve at those callbacks;
    ``received_at_least(n)`` waits for *n* bytes and fails if the connection is lost first.
    """

    def __init__(self, *, keep_open: bool | None = None, echo: bool = False, keep: bool = True):
        self.loop = asyncio.get_running_loop()
        self.keep_open = keep_open
        self.echo = echo
        self.keep = keep
        self.events: list[str] = []
        self.received = bytearray()
        self.count = 0
        self.digest = hashlib.sha256()
        self.transport: Any = None
        self.made: asyncio.Future[Any] = self.loop.create_future()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[BaseException | None] = self.loop.create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.paused_at: list[int] = []  # write buffer size seen by each pause_writing
        self.resumed_at: list[int] = []  # write buffer size seen by each resume_writing
        self.resumed: asyncio.Future[None] = self.loop.create_future()
        self.buffered_at_lost = -1  # the write buffer size seen by connection_lost
        self.while_not_reading = 0  # data callbacks that came while the transport was paused
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def connection_made(self, transport: Any) -> None:  # the callbacks of any protocol
        self.events.append("connection_made")
        self.transport = transport
        self.made.set_result(transport)

    def _got(self, data: bytes | memoryview) -> None:
        if not self.transport.is_reading():
            self.while_not_reading += 1
        self.count += len(data)
        if self.keep:
            self.received += data
        else:
            self.digest.update(data)
        if self.echo:
            self.transport.write(bytes(data))
        for waiter in [w for w in self._waiters if self.count >= w[0]]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(None)

    def eof_received(self) -> bool | None:
        self.events.append("eof_received")
        self.eof.set_result(None)
        return self.keep_open

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("connection_lost")
        self.buffered_at_lost = self.transport.get_write_buffer_size()
        self.lost.set_result(exc)
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(
                    AssertionError(f"connection lost ({exc!r}) after {self.count} bytes")
                )

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.paused_at.append(self.transport.get_write_buffer_size())
        self.writable.clear()

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.resumed_at.append(self.transport.get_write_buffer_size())
        self.writable.set()
        if not self.resumed.done():
            self.resumed.set_result(None)

    async def received_at_least(self, count: int) -> None:
        if self.count < count:
            waiter = self.loop.create_future()
            self._waiters.append((count, waiter))
            if self.lost.done():
                raise AssertionError(f"connection lost after {self.count} bytes")
            await wait(waiter)


class Recorder(Recording, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.events.append("data_received")
        self._got(data)


class BufferedRecorder(Recording, asyncio.BufferedProtocol):
    """A BufferedProtocol: get_buffer hands out a buffer of *size* bytes (or the result of
    *get_buffer*, when given)."""

    def __init__(self, size: int = 64 * KiB, get_buffer: Callable[[], Any] | None = None, **kw):
        super().__init__(**kw)
        self.buffer = bytearray(size)
        self._get_buffer = get_buffer
        self.given: list[int] = []  # the length of each buffer handed out

    def get_buffer(self, sizehint: int) -> Any:
        self.events.append("get_buffer")
        buffer = memoryview(self.buffer) if self._get_buffer is None else self._get_buffer()
        self.given.append(len(buffer))
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.events.append("buffer_updated")
        assert 0 < nbytes <= self.given[-1]
        self._got(self.buffer[:nbytes])


class SlowReader(Recorder):
    """Pauses reading after each chunk and resumes two loop iterations later."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.pauses = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.transport.pause_reading()
        self.pauses += 1
        self.loop.call_soon(self.loop.call_soon, self.transport.resume_reading)


# -- servers and connections ------------------------------------------------------------------


@pytest.fixture(params=["tcp", "unix"])
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def network(family: str) -> Iterator[Network]:
    # a short directory: a Unix socket path has room for 107 bytes only
    directory = tempfile.mkdtemp(prefix="epl-", dir="/tmp")
    try:
        yield Network(family, os.path.join(directory, "s"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Network:
    """One server on TCP loopback or a Unix socket, and connections to it. As an async context
    manager it cleans up on exit: every connection still up is aborted, every server closed."""

    def __init__(self, family: str, path: str):
        self.family = family
        self.path = path
        self.address: Any = None
        self.servers: list[asyncio.AbstractServer] = []
        self.protocols: list[Any] = []  # every protocol made, client and server side
        self.accepted: list[Any] = []  # server-side protocols, in the order the server made them
        self._accepted_queue: asyncio.Queue[Any] = asyncio.Queue()

    async def __aenter__(self) -> Network:
        return self

    async def __aexit__(self, exc_type: Any, *exc_info: Any) -> None:
        connected = [p for p in self.protocols if p.transport is not None]
        for protocol in connected:
            if not protocol.lost.done():
                protocol.transport.abort()
        missing: set[Any] = set()
        if connected:
            _, missing = await asyncio.wait([p.lost for p in connected], timeout=GUARD)
        for server in self.servers:
            server.close()
        if missing:
            if exc_type is None:  # else let the test's own failure through
                raise AssertionError(f"no connection_lost after abort() for {len(missing)}")
            return
        for server in self.servers:
            await wait(server.wait_closed())  # (which waits for the connections from 3.12)

    async def listen(self, factory: Callable[[], Any] = Recorder, **kw: Any) -> Any:
        def make() -> Any:
            protocol = factory()
            self.protocols.append(protocol)
            self.accepted.append(protocol)
            self._accepted_queue.put_nowait(protocol)
            return protocol

        loop = asyncio.get_running_loop()
        if self.family == "tcp":
            server = await loop.create_server(make, "127.0.0.1", 0, **kw)
        else:
            server = await loop.create_unix_server(make, self.path, **kw)
        self.servers.append(server)
        self.address = server.sockets[0].getsockname()
        return server

    async def connect(self, factory: Callable[[], Any] = Recorder) -> Any:
        def make() -> Any:
            protocol = factory()
            self.protocols.append(protocol)
            return protocol

        loop = asyncio.get_running_loop()
        if self.family == "tcp":
            _, protocol = await loop.create_connection(make, *self.address)
        else:
            _, protocol = await loop.create_unix_connection(make, self.address)
        return protocol

    async def next_accepted(self) -> Any:
        protocol = await wait(self._accepted_queue.get())
        await wait(asyncio.shield(protocol.made))
        return protocol

    async def pair(self, factory: Callable[[], Any] = Recorder) -> tuple[Any, Any]:
        """A new connection: (client protocol, server protocol), both connection_made."""
        client = await self.connect(factory)
        assert client.made.done()  # create_connection returns after connection_made
        server = await self.next_accepted()
        return client, server


async def fill_write_buffer(transport: Any, chunk: int = 64 * KiB, extra: int = 0) -> int:
    """Write (without yielding to the loop) until the transport buffers data because the
    kernel's buffers are full, then *extra* bytes more; returns the number of bytes written.
    (With the peer not reading, the kernel takes no more, or little: *extra* is the margin for
    a test that lets the loop run and needs the transport to still hold data.)"""
    written = 0
    block = b"f" * chunk
    while transport.get_write_buffer_size() == 0:
        transport.write(block)
        written += chunk
        assert written < 256 * MiB, "the kernel never stopped taking data"
    if extra:
        transport.write(b"f" * extra)
    return written + extra


# -- data delivery and callback order ---------------------------------------------------------


async def test_protocol_gets_every_byte_and_callbacks_in_order(network: Network) -> None:
    data = payload(2 * MiB)
    async with network as net:
        await net.listen(lambda: Recorder(echo=True))
        client, server = await net.pair()
        for start in range(0, len(data), 100_000):
            client.transport.write(data[start : start + 100_000])
        client.transport.write_eof()
        assert await wait(server.lost) is None  # eof_received returned None: server closed
        assert await wait(client.lost) is None  # then the echo, EOF: the client closed too
    assert bytes(server.received) == data
    assert bytes(client.received) == data
    expected = ["connection_made", "data_received", "eof_received", "connection_lost"]
    assert squeeze(server.events) == expected
    assert squeeze(client.events) == expected


@pytest.mark.parametrize("size", [7, 4 * KiB, 4 * MiB])
async def test_buffered_protocol_gets_every_byte(network: Network, size: int) -> None:
    """BufferedProtocol on both sides, the server echoing; buffers smaller and larger than
    the data."""
    data = payload(200 * KiB if size < 1 * KiB else 2 * MiB)
    async with network as net:
        await net.listen(lambda: BufferedRecorder(size, echo=True))
        client, server = await net.pair(lambda: BufferedRecorder(size))
        client.transport.write(data)
        client.transport.write_eof()
        assert await wait(server.lost) is None
        assert await wait(client.lost) is None
    for protocol in (server, client):
        assert bytes(protocol.received) == data
        events = [e for e in protocol.events if e not in FLOW]
        # a get_buffer may find nothing to read (the EOF, for one) and go without its update
        core = [e for e in events if e != "get_buffer"]
        assert core[0] == "connection_made"
        assert core[-2:] == ["eof_received", "connection_lost"]
        for name in ("connection_made", "eof_received", "connection_lost"):
            assert core.count(name) == 1
        assert set(core) == {"connection_made", "buffer_updated", "eof_received", "connection_lost"}
        # every buffer_updated fills the buffer that the get_buffer just before it handed out
        assert all(
            previous == "get_buffer"
            for previous, event in itertools.pairwise(events)
            if event == "buffer_updated"
        )
        assert events.count("buffer_updated") >= len(data) // max(protocol.given)


class GetBufferFailed(Exception):
    pass


def _raise_in_get_buffer() -> Any:
    raise GetBufferFailed("from get_buffer")


@pytest.mark.parametrize("how", ["empty", "raises"])
async def test_get_buffer_failure_is_fatal(network: Network, loop_name: str, how: str) -> None:
    """get_buffer() returning an empty buffer, or raising: the transport reports the error to
    the exception handler, closes, and the protocol gets connection_lost(that error)."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    make = bytearray if how == "empty" else _raise_in_get_buffer
    async with network as net:
        await net.listen(lambda: BufferedRecorder(get_buffer=make))
        client, server = await net.pair()
        client.transport.write(b"data")
        exc = await wait(server.lost)
        await wait(client.lost)  # the server closed: the client sees EOF and closes
    assert server.transport.is_closing()
    assert squeeze(server.events) == ["connection_made", "get_buffer", "connection_lost"]
    assert len(contexts) == 1
    context = contexts[0]
    assert context["transport"] is server.transport
    assert context["protocol"] is server
    assert exc is context["exception"]
    assert server.received == b""
    if how == "empty":
        assert isinstance(exc, RuntimeError)
    else:
        if loop_name == "uvloop" and type(exc) is RuntimeError:
            pytest.xfail("uvloop: reports a RuntimeError, not the exception get_buffer() raised")
        assert isinstance(exc, GetBufferFailed)


# -- get_extra_info ---------------------------------------------------------------------------


async def test_get_extra_info(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        ct, st = client.transport, server.transport
        if net.family == "tcp":
            assert ct.get_extra_info("peername") == net.address
            assert st.get_extra_info("sockname") == net.address
            assert ct.get_extra_info("sockname") == st.get_extra_info("peername")
            assert ct.get_extra_info("sockname")[0] == "127.0.0.1"
            assert ct.get_extra_info("sockname")[1] != net.address[1]
            family = socket.AF_INET
        else:
            assert ct.get_extra_info("peername") == net.path
            assert st.get_extra_info("sockname") == net.path
            assert ct.get_extra_info("sockname") == ""  # an unbound client socket
            assert st.get_extra_info("peername") == ""
            family = socket.AF_UNIX
        for transport in (ct, st):
            sock = transport.get_extra_info("socket")
            # asyncio gives a trsock.TransportSocket (uvloop a PseudoSocket): a restricted view
            # of the socket, not the socket object itself
            assert not isinstance(sock, socket.socket)
            assert stat.S_ISSOCK(os.fstat(sock.fileno()).st_mode)
            assert sock.family == family
            assert sock.type == socket.SOCK_STREAM
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
            assert sock.getsockname() == transport.get_extra_info("sockname")
            assert sock.getpeername() == transport.get_extra_info("peername")
            assert transport.get_extra_info("no such key") is None
            assert transport.get_extra_info("no such key", 42) == 42
        assert ct.get_extra_info("socket").fileno() != st.get_extra_info("socket").fileno()


class ExtraInConnectionLost(Recorder):
    """Asks for its transport's addresses only in connection_lost, the first time."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.extra_at_loss = {
            key: self.transport.get_extra_info(key) for key in ("sockname", "peername")
        }
        super().connection_lost(exc)


async def test_get_extra_info_first_asked_in_connection_lost_or_after_the_close(
    network: Network, loop_name: str
) -> None:
    keys = ("sockname", "peername")
    async with network as net:
        await net.listen()
        client, server = await net.pair(ExtraInConnectionLost)
        client.transport.close()
        await wait(client.lost)
        await wait(server.lost)
        # The client's transport was first asked in connection_lost; the server's is asked
        # only now, after its socket closed: asyncio answers both with the addresses.
        try:
            server_extra = {key: server.transport.get_extra_info(key) for key in keys}
        except AttributeError as exc:
            if loop_name != "uvloop":
                raise
            pytest.xfail(f"uvloop: get_extra_info() of a closed Unix transport fails: {exc}")
        assert server_extra["sockname"] == (net.address if net.family == "tcp" else net.path)
        assert client.extra_at_loss["sockname"] == server_extra["peername"]
        assert client.extra_at_loss["peername"] == server_extra["sockname"]
        assert {key: client.transport.get_extra_info(key) for key in keys} == client.extra_at_loss
        for transport in (client.transport, server.transport):
            if loop_name == "uvloop" and transport.get_extra_info("socket") is None:
                pytest.xfail("uvloop: get_extra_info('socket') is None once the transport closed")
            assert transport.get_extra_info("socket") is not None


async def test_tcp_nodelay_on_both_ends() -> None:
    """asyncio disables Nagle's algorithm on every TCP transport (base_events._set_nodelay)."""
    async with Network("tcp", "") as net:
        await net.listen()
        client, server = await net.pair()
        for protocol in (client, server):
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# -- reading: pause_reading / resume_reading --------------------------------------------------


async def test_pause_and_resume_reading(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        st = server.transport
        assert st.is_reading()
        st.pause_reading()
        assert not st.is_reading()
        st.pause_reading()  # pausing twice is fine
        assert not st.is_reading()

        client.transport.write(b"while paused")
        sock = st.get_extra_info("socket")
        await until(lambda: is_readable(sock), "the data reaches the server's socket")
        await spin(20)
        assert server.received == b""  # the data waits in the kernel
        assert "data_received" not in server.events

        st.resume_reading()
        assert st.is_reading()
        st.resume_reading()  # resuming twice is fine
        await server.received_at_least(12)
        assert server.received == b"while paused"

        client.transport.write(b" and after")
        await server.received_at_least(22)
        assert server.received == b"while paused and after"
        assert server.while_not_reading == 0

        st.close()
        assert not st.is_reading()
        st.resume_reading()  # no effect once closing
        assert not st.is_reading()
        assert await wait(server.lost) is None
        assert not st.is_reading()


# -- writing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("method", ["write", "writelines"])
async def test_write_bytes_like(network: Network, kind: type, method: str) -> None:
    data = payload(300 * KiB)
    pieces = [kind(data[i : i + 50 * KiB]) for i in range(0, len(data), 50 * KiB)]
    pieces.append(memoryview(b"..a slice of a larger buffer..")[2:-2])
    expected = data + b"a slice of a larger buffer"
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        client.transport.write(kind(b""))  # nothing to send: a no-op
        if method == "write":
            for piece in pieces:
                client.transport.write(piece)
        else:
            client.transport.writelines(pieces)
        await server.received_at_least(len(expected))
        assert server.received == expected


async def test_bytearray_mutated_after_write_is_sent_as_it_was(network: Network) -> None:
    """A write that the kernel takes at once: the caller can reuse its buffer right away."""
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        buffer = bytearray(b"original")
        client.transport.write(buffer)
        assert client.transport.get_write_buffer_size() == 0
        buffer[:] = b"mutated!"
        await server.received_at_least(8)
        assert server.received == b"original"


@pytest.mark.epolloop_only  # asyncio >= 3.12 and uvloop keep a reference to buffered data
@pytest.mark.parametrize("method", ["write", "writelines"])
async def test_buffered_bytearray_mutated_after_write_is_sent_as_it_was(
    network: Network, method: str
) -> None:
    """The data has to wait in the transport's buffer: still, what was written is sent."""
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        server.transport.pause_reading()
        filled = await fill_write_buffer(client.transport)
        buffer = bytearray(b"original")
        if method == "write":
            client.transport.write(buffer)
        else:
            client.transport.writelines([buffer, bytearray(b"-second")])
        buffer[:] = b"mutated!"
        server.transport.resume_reading()
        expected = b"original" if method == "write" else b"original-second"
        await server.received_at_least(filled + len(expected))
        assert server.received[filled:] == expected


@pytest.mark.parametrize("bad", ["text", 42, [b"a list"]])
async def test_write_refuses_non_bytes(network: Network, loop_name: str, bad: Any) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        with pytest.raises(TypeError):
            client.transport.write(bad)
        with pytest.raises(TypeError):  # writelines() refuses the lot: nothing is sent
            client.transport.writelines([b"fine", "text" if isinstance(bad, list) else bad])
        if loop_name == "uvloop" and client.transport.get_write_buffer_size() == 4:
            pytest.xfail("uvloop: writelines() keeps the items before the one it refuses")
        assert client.transport.get_write_buffer_size() == 0
        client.transport.write(b"still usable")
        await server.received_at_least(12)
        assert server.received == b"still usable"


async def check_wide_items_sent_whole(network: Network, method: str) -> None:
    """A memoryview whose items are wider than a byte (array('i'): 4 items, 16 bytes) goes out
    byte for byte, all of it; then close() ends the connection as usual (a transport that
    counted items as bytes would keep an empty remainder queued and never finish its close)."""
    view = memoryview(array.array("i", range(4)))
    assert (len(view), view.nbytes) == (4, 16)
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        # one write, nothing after it: a later write would flush a stray empty remainder
        if method == "write":
            client.transport.write(view)
        else:
            client.transport.writelines([view])
        await server.received_at_least(16)
        client.transport.close()
        assert await wait(client.lost) is None
        await wait(server.eof)
    assert server.received == view.tobytes()
    assert squeeze(client.events) == ["connection_made", "connection_lost"]


async def test_write_memoryview_of_wide_items(network: Network) -> None:
    await check_wide_items_sent_whole(network, "write")


# asyncio 3.12+ counts the view's items as bytes in writelines(): once all is sent, it fails
# with IndexError('pop from an empty deque') and loses the connection
@pytest.mark.epolloop_only
async def test_writelines_memoryview_of_wide_items(network: Network) -> None:
    await check_wide_items_sent_whole(network, "writelines")


async def test_write_buffer_limits(network: Network, loop_name: str) -> None:
    async with network as net:
        await net.listen()
        client, _ = await net.pair()
        check_write_buffer_limits(client.transport, loop_name)


async def test_write_buffer_grows_while_the_peer_does_not_read(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        server.transport.pause_reading()
        t = client.transport
        assert t.get_write_buffer_size() == 0
        t.set_write_buffer_limits(high=1 << 30)  # no pause_writing in this test
        filled = await fill_write_buffer(t)
        sizes = [t.get_write_buffer_size()]
        for _ in range(4):
            t.write(b"g" * 10_000)
            sizes.append(t.get_write_buffer_size())
        assert [b - a for a, b in itertools.pairwise(sizes)] == [10_000] * 4
        server.transport.resume_reading()
        await server.received_at_least(filled + 40_000)
        await until(lambda: t.get_write_buffer_size() == 0, "the write buffer drains")
        assert server.count == filled + 40_000
        assert "pause_writing" not in client.events


async def test_pause_writing_when_buffer_exceeds_high_water(network: Network) -> None:
    """pause_writing is called by the write() that takes the buffer above the high-water
    mark, once; resume_writing once the buffer has drained to the low-water mark, once."""
    high, low = 128 * KiB, 32 * KiB
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        server.transport.pause_reading()
        t = client.transport
        t.set_write_buffer_limits(high=high, low=low)
        written = 0
        while not client.paused_at:
            t.write(b"p" * 16 * KiB)
            written += 16 * KiB
            size = t.get_write_buffer_size()
            assert bool(client.paused_at) == (size > high), (size, client.paused_at)
            assert written < 256 * MiB
        assert client.paused_at == [t.get_write_buffer_size()]
        for _ in range(10):  # more writes while paused: no second pause_writing
            t.write(b"q" * 16 * KiB)
            written += 16 * KiB
        assert client.paused_at == [t.get_write_buffer_size() - 10 * 16 * KiB]
        assert client.resumed_at == []

        server.transport.resume_reading()
        await wait(client.resumed)
        assert client.resumed_at[0] <= low
        await server.received_at_least(written)
        assert server.count == written
        assert len(client.paused_at) == 1
        assert len(client.resumed_at) == 1
        assert squeeze(client.events, ignore=()) == [
            "connection_made",
            "pause_writing",
            "resume_writing",
        ]


async def test_set_write_buffer_limits_below_buffered_size_pauses(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        server.transport.pause_reading()
        t = client.transport
        t.set_write_buffer_limits(high=1 << 30)
        filled = await fill_write_buffer(t)
        size = t.get_write_buffer_size()
        assert size > 0
        t.set_write_buffer_limits(high=size, low=0)  # at the mark, not above it: no pause
        assert client.paused_at == []
        t.set_write_buffer_limits(high=size - 1, low=0)  # above it: paused at once
        assert client.paused_at == [size]
        t.set_write_buffer_limits(high=size - 2, low=0)  # already paused
        assert client.paused_at == [size]
        server.transport.resume_reading()
        await wait(client.resumed)
        assert client.resumed_at == [0]
        await server.received_at_least(filled)
        assert len(client.paused_at) == len(client.resumed_at) == 1


@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
async def test_64_mib_through_one_connection_with_flow_control(
    network: Network, direction: str
) -> None:
    """64 MiB to a reader that pauses after every chunk and resumes two iterations later;
    the sender writes only while its protocol is not paused."""
    data = payload(64 * MiB)
    chunk = 1 * MiB
    high = 256 * KiB
    sender_factory = Recorder

    def reader_factory() -> SlowReader:
        return SlowReader(keep=False)

    async with network as net:
        if direction == "client_to_server":
            await net.listen(reader_factory)
            sender, reader = await net.pair(sender_factory)
        else:
            await net.listen(sender_factory)
            reader, sender = await net.pair(reader_factory)
        t = sender.transport
        t.set_write_buffer_limits(high=high)

        async def send() -> int:
            largest = 0
            view = memoryview(data)
            for start in range(0, len(data), chunk):
                await sender.writable.wait()
                t.write(view[start : start + chunk])
                largest = max(largest, t.get_write_buffer_size())
            t.write_eof()
            return largest

        largest = await wait(send())
        assert await wait(reader.lost) is None  # EOF: eof_received returned None
        assert await wait(sender.lost) is None  # the reader closed: EOF, closed too
    assert reader.count == len(data)
    assert reader.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert reader.while_not_reading == 0
    assert reader.pauses > 1
    assert largest <= high + chunk  # never written to while paused
    flow = [e for e in sender.events if e in FLOW]
    assert flow, "the sender was never paused"
    assert flow == ["pause_writing", "resume_writing"] * (len(flow) // 2)
    expected = ["connection_made", "data_received", "eof_received", "connection_lost"]
    assert squeeze(reader.events) == expected
    assert squeeze(sender.events) == [
        "connection_made",
        "eof_received",
        "connection_lost",
    ]


# -- half-close: write_eof / can_write_eof / eof_received -------------------------------------


@pytest.mark.parametrize("first", ["client", "server"])
async def test_half_close(network: Network, first: str) -> None:
    """One side sends its request then write_eof(); the other side's eof_received returns True,
    so it stays open and keeps writing; the first side still receives it all."""
    answer = payload(1 * MiB)
    async with network as net:
        if first == "client":
            await net.listen(lambda: Recorder(keep_open=True))
            closer, stayer = await net.pair()
        else:
            await net.listen()
            stayer, closer = await net.pair(lambda: Recorder(keep_open=True))
        assert closer.transport.can_write_eof()
        closer.transport.write(b"request")
        closer.transport.write_eof()
        closer.transport.write_eof()  # a second write_eof is a no-op
        with pytest.raises(RuntimeError):
            closer.transport.write(b"more")
        with pytest.raises(RuntimeError):
            closer.transport.writelines([b"more"])
        await wait(stayer.eof)
        assert stayer.received == b"request"
        await spin(5)
        assert not stayer.transport.is_closing()  # kept half-open
        assert not closer.lost.done() and not stayer.lost.done()

        for start in range(0, len(answer), 64 * KiB):
            stayer.transport.write(answer[start : start + 64 * KiB])
        await closer.received_at_least(len(answer))
        stayer.transport.close()
        assert await wait(closer.lost) is None  # EOF, eof_received returned None: closed
        assert await wait(stayer.lost) is None
    assert closer.received == answer
    expected = ["connection_made", "data_received", "eof_received", "connection_lost"]
    assert squeeze(closer.events) == expected
    assert squeeze(stayer.events) == expected


@pytest.mark.parametrize("keep_open", [True, None, False])
async def test_eof_received_return_value(network: Network, keep_open: bool | None) -> None:
    async with network as net:
        await net.listen(lambda: Recorder(keep_open=keep_open))
        client, server = await net.pair()
        client.transport.write_eof()
        await wait(server.eof)
        if keep_open:
            await spin(5)
            assert not server.transport.is_closing()
            assert not server.lost.done()
            server.transport.write(b"still open")
            await client.received_at_least(10)
            assert client.received == b"still open"
            server.transport.close()
        else:
            assert server.transport.is_closing()  # closed by the transport right away
        assert await wait(server.lost) is None
        assert await wait(client.lost) is None  # EOF from the server: closed
    assert squeeze(server.events) == ["connection_made", "eof_received", "connection_lost"]


async def test_set_protocol_after_eof_kept_open(network: Network) -> None:
    """eof_received returned True (half-open): the transport reads no more. A protocol set
    afterwards with set_protocol() gets no eof_received of its own (asyncio calls it once per
    connection): the transport stays open, writes still go out, and connection_lost goes to
    the new protocol when it is closed."""
    async with network as net:
        await net.listen(lambda: Recorder(keep_open=True))
        client, server = await net.pair()
        client.transport.write_eof()
        await wait(server.eof)
        t = server.transport
        # returns None from eof_received: a second EOF would also close the transport
        second = Recorder()
        second.transport = t  # set_protocol() calls no connection_made
        net.protocols[net.protocols.index(server)] = second  # the one whose loss to await
        t.set_protocol(second)
        assert t.get_protocol() is second
        # a round trip through the peer: loop iterations for a stray EOF to show up in
        t.write(b"still open")
        await client.received_at_least(10)
        await spin(5)
        assert not t.is_closing()
        assert second.events == []
        t.close()
        assert await wait(second.lost) is None
        assert await wait(client.lost) is None
    assert second.events == ["connection_lost"]
    assert server.events == ["connection_made", "eof_received"]


# -- close / abort ----------------------------------------------------------------------------


async def test_close_flushes_pending_data_first(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        server.transport.pause_reading()
        t = client.transport
        filled = await fill_write_buffer(t, extra=1 * MiB)
        t.write(b"last words")
        assert not t.is_closing()
        t.close()
        assert t.is_closing()
        assert not t.is_reading()
        t.close()  # twice: harmless
        await spin(10)
        assert not client.lost.done()  # the data still waits to be sent
        server.transport.resume_reading()
        await wait(server.eof)
        assert server.count == filled + 10
        assert server.received.endswith(b"last words")
        assert await wait(client.lost) is None
        assert client.buffered_at_lost == 0
        assert await wait(server.lost) is None
        t.close()  # after connection_lost: harmless too
        await spin(5)
    assert client.events.count("connection_lost") == 1
    assert squeeze(client.events) == ["connection_made", "connection_lost"]


async def test_abort_drops_pending_data(network: Network, loop_name: str) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        server.transport.pause_reading()
        t = client.transport
        filled = await fill_write_buffer(t)
        t.write(b"never sent")
        buffered = t.get_write_buffer_size()
        assert buffered > 0
        t.abort()
        assert t.is_closing()
        assert await wait(client.lost) is None
        t.abort()  # twice, and close after abort: harmless
        t.close()
        server.transport.resume_reading()
        await wait(server.lost)
        await spin(5)
    # the kernel sends what it had taken; what the transport still held is gone
    assert server.count <= filled + 10 - buffered
    assert server.received == (b"f" * filled)[: server.count]
    assert client.events == ["connection_made", "connection_lost"]
    if loop_name == "uvloop" and client.buffered_at_lost == buffered:
        pytest.xfail("uvloop: get_write_buffer_size() still counts the dropped data")
    assert client.buffered_at_lost == 0  # the buffer is emptied before connection_lost


async def test_close_then_abort_drops_pending_data(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        server.transport.pause_reading()
        t = client.transport
        await fill_write_buffer(t, extra=1 * MiB)
        t.close()
        await spin(5)
        assert not client.lost.done()
        t.abort()
        assert await wait(client.lost) is None
        server.transport.resume_reading()
        await wait(server.lost)
    assert squeeze(client.events) == ["connection_made", "connection_lost"]


async def test_writes_after_close_are_ignored(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        t = client.transport
        t.write(b"before")
        await server.received_at_least(6)
        t.close()
        t.write(b"after close")  # ignored, no exception
        t.write(bytearray(b"after close"))
        assert await wait(client.lost) is None
        await wait(server.eof)
        await wait(server.lost)
    assert server.received == b"before"
    assert squeeze(server.events) == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]


@pytest.mark.parametrize("how", ["close", "abort", "peer_reset"])
async def test_writes_after_connection_lost_warn_and_never_raise(
    network: Network, loop_name: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After the connection is lost, write() is ignored; asyncio counts those writes and logs
    'socket.send() raised exception.' (a warning) from the LOG_THRESHOLD_FOR_CONNLOST_WRITES-th
    one on, once per write."""
    assert asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES == LOG_THRESHOLD_FOR_CONNLOST_WRITES
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        t = client.transport
        if how == "close":
            t.close()
        elif how == "abort":
            t.abort()
        else:
            await reset_by_peer(net.family, client, server)
        await wait(client.lost)
        await spin(5)
        if loop_name == "uvloop":
            with pytest.raises(RuntimeError):
                t.write(b"x")
            pytest.xfail("uvloop: write() after connection_lost raises RuntimeError")

        def warnings() -> int:
            return warnings_logged(caplog, "socket.send() raised exception.")

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(LOG_THRESHOLD_FOR_CONNLOST_WRITES - 1):
                t.write(b"lost")
            assert warnings() == 0
            t.write(b"lost")
            assert warnings() == 1
            t.write(b"lost")
            t.write(memoryview(b"lost"))
            assert warnings() == 3
            t.write(b"")  # nothing to write: not counted
            assert warnings() == 3
        assert t.is_closing()
    assert client.events.count("connection_lost") == 1


@pytest.mark.epolloop_only  # asyncio 3.12+ raises TypeError: close() drops its write callback
async def test_writelines_after_close_is_ignored(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        t = client.transport
        t.close()
        t.writelines([b"after", b"close"])
        await wait(client.lost)
        t.writelines([b"after", b"lost"])
        await wait(server.lost)
    assert server.received == b""


# -- errors -----------------------------------------------------------------------------------


async def reset_by_peer(family: str, victim: Recorder, peer: Recorder) -> None:
    """Make *peer*'s end reset the connection: SO_LINGER 0 then close on TCP (RST); on a Unix
    socket, close with unread data (the kernel then reports ECONNRESET to the other end)."""
    sock = peer.transport.get_extra_info("socket")
    if family == "tcp":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        peer.transport.pause_reading()
        victim.transport.write(b"never read")
        await until(lambda: is_readable(sock), "the data reaches the peer's socket")
    peer.transport.abort()
    await wait(peer.lost)


async def test_peer_reset(network: Network) -> None:
    async with network as net:
        await net.listen()
        client, server = await net.pair()
        await reset_by_peer(net.family, client, server)
        exc = await wait(client.lost)
    assert isinstance(exc, OSError), exc
    assert isinstance(exc, ConnectionResetError) or exc.errno is not None
    assert client.transport.is_closing()
    assert squeeze(client.events) == ["connection_made", "connection_lost"]


async def test_big_and_small_reads_then_a_reset(network: Network) -> None:
    """Chunks well above and below 16 KiB in turn (the C core reads a big one straight into
    its bytes object, sized by FIONREAD, once the previous read was big), the last a big one,
    then a reset: every byte arrives, in order, as bytes, and then the error."""
    sizes = [300 * KiB, 5, 64 * KiB, 1 * KiB, 17 * KiB, 16 * KiB - 1, 3, 200 * KiB]
    chunks = [payload(size, seed) for seed, size in enumerate(sizes)]
    types: set[type] = set()

    class TypeRecorder(Recorder):
        def data_received(self, data: bytes) -> None:
            types.add(type(data))
            super().data_received(data)

    async with network as net:
        await net.listen()
        client, server = await net.pair(TypeRecorder)
        sent = 0
        for chunk in chunks:
            server.transport.write(chunk)
            sent += len(chunk)
            await client.received_at_least(sent)
        await reset_by_peer(net.family, client, server)
        exc = await wait(client.lost)
    assert bytes(client.received) == b"".join(chunks)
    assert types == {bytes}
    assert isinstance(exc, OSError), exc
    assert squeeze(client.events) == ["connection_made", "data_received", "connection_lost"]


class Boom(Exception):
    pass


class FailingEcho(Recorder):
    """Echoes, or raises Boom from data_received once told to ``explode``."""

    def __init__(self) -> None:
        super().__init__(echo=True)
        self.explode = False

    def data_received(self, data: bytes) -> None:
        if self.explode:
            self.events.append("data_received")
            raise Boom("from data_received")
        super().data_received(data)


async def test_exception_in_data_received(network: Network) -> None:
    """The transport closes and reports to the exception handler; another connection on the
    same server carries on, its data intact."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    first, second = payload(256 * KiB, seed=1), payload(256 * KiB, seed=2)
    async with network as net:
        await net.listen(FailingEcho)
        bad_client, bad = await net.pair()
        good_client, good = await net.pair()
        good_client.transport.write(first)
        await good_client.received_at_least(len(first))

        bad.explode = True
        bad_client.transport.write(b"boom")
        exc = await wait(bad.lost)
        assert isinstance(exc, Boom)
        assert bad.transport.is_closing()
        assert await wait(bad_client.lost) is None  # EOF from the server side: closed

        good_client.transport.write(second)
        await good_client.received_at_least(len(first) + len(second))
        assert not good.transport.is_closing()
        good_client.transport.close()
        await wait(good.lost)
    assert len(contexts) == 1
    context = contexts[0]
    assert context["exception"] is exc
    assert context["transport"] is bad.transport
    assert context["protocol"] is bad
    assert "message" in context
    assert squeeze(bad.events) == ["connection_made", "data_received", "connection_lost"]
    assert good.received == first + second
    assert good_client.received == first + second


# -- many connections, fd hygiene -------------------------------------------------------------


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to *needed* (within the hard limit) for the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_thousand_concurrent_connections(network: Network) -> None:
    count = 1000
    with open_files_limit(len(open_fds()) + 2 * count + 100):
        async with network as net:
            await net.listen(lambda: Recorder(echo=True), backlog=count)

            async def one(i: int) -> tuple[bytes, Recorder]:
                client = await net.connect()
                message = b"connection %d: " % i + payload(100 + i % 200, seed=i)
                client.transport.write(message)
                await client.received_at_least(len(message))
                return message, client

            results = await wait(asyncio.gather(*(one(i) for i in range(count))))
            # every connection is still open here: they were all up at the same time
            assert len(net.accepted) == count
            assert all(not server.lost.done() for server in net.accepted)
            for message, client in results:
                assert client.received == message
            assert {bytes(s.received) for s in net.accepted} == {m for m, _ in results}
            for _, client in results:
                client.transport.close()
            for _, client in results:
                assert await wait(client.lost) is None
            for server in net.accepted:
                assert await wait(server.lost) is None


async def _settle_fds(before: set[int]) -> set[int]:
    for _ in range(100):  # a loop may close a socket an iteration after connection_lost
        if open_fds() == before:
            break
        await asyncio.sleep(0)
    return open_fds()


async def test_no_fd_leaks(network: Network) -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))

    async def scenarios() -> None:
        async with network as net:
            await net.listen(FailingEcho)
            # closed by the client, by the server, aborted, half-closed, reset by the peer,
            # failed in data_received
            c1, s1 = await net.pair()
            c1.transport.write(b"x")
            await c1.received_at_least(1)
            c1.transport.close()
            c2, s2 = await net.pair()
            s2.transport.close()
            c3, s3 = await net.pair()
            c3.transport.abort()
            c4, s4 = await net.pair()
            c4.transport.write_eof()
            c5, s5 = await net.pair()
            await reset_by_peer(net.family, c5, s5)
            c6, s6 = await net.pair()
            s6.explode = True
            c6.transport.write(b"boom")
            for protocol in (c1, s1, c2, s2, c3, s3, c4, s4, c5, s5, c6, s6):
                await wait(protocol.lost)
        network.servers.clear()
        network.protocols.clear()
        network.accepted.clear()

    await scenarios()  # a first round: whatever a loop opens once and keeps is not a leak
    before = open_fds()
    await scenarios()
    await scenarios()
    assert await _settle_fds(before) == before
    assert [type(context["exception"]) for context in contexts] == [Boom] * 3


async def test_unclosed_stream_transport_warns_and_lets_go_of_its_fd(loop_name: str) -> None:
    """A stream transport collected while still open (paused first: a transport the loop polls
    stays referenced by the loop): a ResourceWarning, its socket closed, and the loop no
    longer takes the fd number for a transport's. A socket that gets the number next can be
    watched, and (3.13) the server's close_clients() passes the collected transport over."""
    gc.collect()  # the garbage of earlier tests, whatever it warns about, goes first
    loop = asyncio.get_running_loop()
    kept: list[Any] = []
    made: asyncio.Future[int] = loop.create_future()

    class Pausing(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.pause_reading()
            kept.append(transport)
            made.set_result(transport.get_extra_info("socket").fileno())

    server = await loop.create_server(Pausing, "127.0.0.1", 0)
    other, peer = socket.socketpair()  # numbered before the transport's fd comes free
    try:
        with socket.create_connection(server.sockets[0].getsockname()) as client:
            fd = await wait(made)
            await spin(3)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                kept.clear()
                gc.collect()
            messages = [str(x.message) for x in caught if issubclass(x.category, ResourceWarning)]
            if not messages and loop_name == "uvloop":
                pytest.xfail("uvloop: no ResourceWarning for an unclosed transport")
            # (Its socket, collected with it, may warn too, on asyncio as well.)
            assert [m for m in messages if m.startswith("unclosed transport")], messages
            client.settimeout(GUARD)
            assert client.recv(1) == b"", "the transport closes its socket"
            os.dup2(other.fileno(), fd)  # the number now names another socket
            try:
                watched = loop.create_future()
                loop.add_writer(fd, lambda: watched.done() or watched.set_result(None))
                await wait(watched)
                assert loop.remove_writer(fd)
            finally:
                os.close(fd)
            if hasattr(server, "close_clients"):
                server.close_clients()
    finally:
        other.close()
        peer.close()
        server.close()  # (asyncio 3.12's wait_closed() would wait for the collected transport)
