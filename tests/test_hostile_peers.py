"""Hostile and broken peers, on every loop: a server must outlive clients that reset in the
middle of a transfer, half-close, never read, connect and vanish by the hundred, or walk away
from a TLS handshake. Whatever they do, the loop goes on, and no other connection loses or
corrupts a byte: well-behaved clients run alongside each misbehaving one and compare the
SHA-256 of everything they sent with that of everything that came back.

The server speaks a tiny request protocol (one request per connection, see ``HEADER``) twice
over: as an asyncio.Protocol that honours pause_writing/resume_writing (``Service``), and as an
asyncio streams handler (``StreamService``) where the streams layer adds something to check.

Stock asyncio is the reference: every assertion holds on its SelectorEventLoop. A reset is an
ordinary end of a connection there (the transport reports OSErrors to the protocol only, never
to the loop's exception handler), and so each test checks that the handler was never called.
Waits are on futures and loop iterations, never on timed sleeps; ``wait``'s guard only turns
an event that never comes into a failure. Every test must leave no file descriptor open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _helpers import listen_queue, open_fds, tls_contexts, until, wait

pytestmark = pytest.mark.usefixtures("no_leaked_fds")

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB  # the server's write size, and the streams server's read size
SIZE = 256 * KiB  # what each well-behaved client moves
SMALL_BUFFER = 64 * KiB  # kernel socket buffer for the tests that fill one

# A request: a command byte, a length and the seed of the bytes involved.
#   E: echo the next `length` bytes        S: read `length` bytes, answer their SHA-256
#   G: send payload(length, seed)          U: echo everything up to the client's EOF, then
#                                             answer the SHA-256 of it all and close
# After E, S and G the server waits for the client's EOF and closes.
HEADER = struct.Struct("!cQQ")


def payload(size: int, seed: int) -> bytes:
    """*size* reproducible random bytes."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def settle(future: asyncio.Future[Any], result: Any) -> None:
    """Resolve *future* unless a failing test cancelled the wait for it already."""
    if not future.done():
        future.set_result(result)


def reset(sock: socket.socket) -> None:
    """Close *sock* with SO_LINGER on and a zero timeout: the kernel sends RST, not FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def raw_connect(address: tuple[str, int], *, rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket connected to *address* through the running loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await wait(asyncio.get_running_loop().sock_connect(sock, address))
    except BaseException:
        sock.close()
        raise
    return sock


async def read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while chunk := await loop.sock_recv(sock, 256 * KiB):
        received += chunk
    return bytes(received)


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight of a TLS client of *context*: its ClientHello record."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# -- the server -------------------------------------------------------------------------------


class Connection:
    """What the two servers record of each connection: ``peer`` (the client's address),
    ``received`` (request bytes read), ``eof`` (resolves at the client's EOF), ``ended`` (with
    the exception that ended the connection on the server's side, None for an orderly end),
    ``max_buffered`` (the largest write buffer seen after a write of the server's) and
    ``closing_at_reply`` (whether the transport was closing when the reply to U went out)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: Any = None
        self.peer: Any = None
        self.received = 0
        self.max_buffered = 0
        self.closing_at_reply: bool | None = None
        self.eof: asyncio.Future[None] = hub.loop.create_future()
        self.ended: asyncio.Future[BaseException | None] = hub.loop.create_future()

    def _made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if self.hub.sndbuf is not None:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.hub.sndbuf)
        self.hub.connections.append(self)

    def _write(self, data: bytes | memoryview) -> None:
        self.transport.write(data)
        self.max_buffered = max(self.max_buffered, self.transport.get_write_buffer_size())


class Service(Connection, asyncio.Protocol):
    """The server as a Protocol. It never buffers without bound: echoing stops reading while
    the transport's writes are paused, and G writes a chunk at a time, only while they are not.
    ``eof_received`` returns ``hub.keep_open`` for U (replying after it has returned, then
    closing, when that is true; replying from inside it otherwise), None for the others."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.header = bytearray()
        self.command: bytes | None = None
        self.length = 0
        self.digest = hashlib.sha256()
        self.outgoing = memoryview(b"")  # what G has still to write
        self.paused = False
        self.pauses = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made(transport)

    def data_received(self, data: bytes) -> None:
        if self.command is None:
            self.header += data
            if len(self.header) < HEADER.size:
                return
            self.command, self.length, seed = HEADER.unpack_from(self.header)
            data = bytes(self.header[HEADER.size :])
            if self.command == b"G":
                self.outgoing = memoryview(payload(self.length, seed))
                self._produce()
        if not data:
            return
        self.received += len(data)
        self.digest.update(data)
        if self.command in (b"E", b"U"):
            self._write(data)
        elif self.command == b"S" and self.received == self.length:
            self._write(self.digest.digest())

    def eof_received(self) -> bool | None:
        settle(self.eof, None)
        if self.command != b"U":
            return None
        if not self.hub.keep_open:
            self._write(self.digest.digest())
            return None  # the transport closes itself once the reply is out
        self.hub.loop.call_soon(self._reply_after_eof)
        return True

    def _reply_after_eof(self) -> None:
        self.closing_at_reply = self.transport.is_closing()
        self._write(self.digest.digest())
        self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1
        if self.command in (b"E", b"U") and not self.eof.done():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.command in (b"E", b"U") and not self.eof.done():
            self.transport.resume_reading()
        self._produce()

    def connection_lost(self, exc: BaseException | None) -> None:
        settle(self.ended, exc)

    def _produce(self) -> None:
        while self.outgoing and not self.paused:
            chunk, self.outgoing = self.outgoing[:CHUNK], self.outgoing[CHUNK:]
            self._write(chunk)


class StreamService(Connection):
    """The server as an asyncio streams handler: readexactly/read, write and drain. Errors
    from the connection end it (``ended``) instead of escaping the handler."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._made(writer.transport)
        ended: BaseException | None = None
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            ended = exc
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            settle(self.ended, ended)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command, length, seed = HEADER.unpack(await reader.readexactly(HEADER.size))
        if command == b"G":
            data = payload(length, seed)
            for start in range(0, length, CHUNK):
                self._write(data[start : start + CHUNK])
                await writer.drain()
            await reader.read()  # the client's EOF
            return
        digest = hashlib.sha256()
        while command == b"U" or self.received < length:
            wanted = CHUNK if command == b"U" else min(CHUNK, length - self.received)
            chunk = await reader.read(wanted)
            if not chunk:
                break
            self.received += len(chunk)
            digest.update(chunk)
            if command in (b"E", b"U"):
                self._write(chunk)
                await writer.drain()
        if command == b"U":
            settle(self.eof, None)
            self.closing_at_reply = writer.transport.is_closing()
        if command in (b"S", b"U"):
            self._write(digest.digest())
            await writer.drain()
        if command != b"U":
            await reader.read()


class Hub:
    """One server's side of the test: the connections it made, in order, and every call of
    the loop's exception handler while it serves (``errors``; each is still passed on to the
    handler that was in place)."""

    def __init__(self, *, keep_open: bool, sndbuf: int | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.keep_open = keep_open
        self.sndbuf = sndbuf
        self.connections: list[Connection] = []
        self.errors: list[dict[str, Any]] = []

    def open_count(self) -> int:
        return sum(not connection.ended.done() for connection in self.connections)

    async def connection_from(self, sock: socket.socket) -> Connection:
        """The server's side of the client socket *sock*, once the server has made it."""
        peer = sock.getsockname()
        await until(lambda: any(c.peer == peer for c in self.connections), f"accepting {peer}")
        return next(c for c in self.connections if c.peer == peer)


@contextlib.asynccontextmanager
async def serve(
    kind: str = "protocol",
    *,
    keep_open: bool = True,
    sndbuf: int | None = None,
    **server_kwargs: Any,
) -> AsyncIterator[tuple[tuple[str, int], Hub, asyncio.AbstractServer]]:
    """A server of *kind* ("protocol" or "streams") on loopback: yields (its address, its Hub,
    the server). On exit, connections still open are aborted and the server closed."""
    loop = asyncio.get_running_loop()
    hub = Hub(keep_open=keep_open, sndbuf=sndbuf)
    previous = loop.get_exception_handler()

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        hub.errors.append(context)
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    loop.set_exception_handler(record)
    try:
        if kind == "protocol":
            server = await loop.create_server(lambda: Service(hub), "127.0.0.1", 0, **server_kwargs)
        else:
            assert kind == "streams", kind

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await StreamService(hub).handle(reader, writer)

            server = await asyncio.start_server(handle, "127.0.0.1", 0, **server_kwargs)
        try:
            yield server.sockets[0].getsockname()[:2], hub, server
        finally:
            for connection in hub.connections:
                if not connection.ended.done():
                    connection.transport.abort()
            server.close()
            await wait(server.wait_closed())
    finally:
        loop.set_exception_handler(previous)


# -- well-behaved clients ---------------------------------------------------------------------


async def good_client(
    address: tuple[str, int],
    command: bytes,
    seed: int,
    halfway: asyncio.Future[None],
    go_on: asyncio.Event,
    tls: ssl.SSLContext | None,
) -> None:
    """One well-behaved client of *command* (E, S or G) moving SIZE bytes; it resolves
    *halfway* in the middle of its transfer and goes on once *go_on* is set. Fails unless the
    SHA-256 of what came back is that of what it sent (for G: of what the server was asked
    for)."""
    data = payload(SIZE, seed)
    half = SIZE // 2
    try:
        reader, writer = await wait(
            asyncio.open_connection(
                *address, ssl=tls, server_hostname="localhost" if tls is not None else None
            )
        )
    except BaseException as exc:
        if not halfway.done():
            halfway.set_exception(exc)
        raise
    try:
        writer.write(HEADER.pack(command, SIZE, seed))
        if command != b"G":
            writer.write(data[:half])
            await wait(writer.drain())
        first = b"" if command == b"S" else await wait(reader.readexactly(half))
        settle(halfway, None)
        await go_on.wait()
        if command != b"G":
            writer.write(data[half:])
        if command == b"S":
            came_back = await wait(reader.readexactly(32))
        else:
            came_back = sha256(first + await wait(reader.readexactly(SIZE - half)))
        assert came_back == sha256(data), f"{command!r}: the bytes that came back differ"
    except BaseException as exc:
        if not halfway.done():
            halfway.set_exception(exc)
        raise
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await wait(writer.wait_closed())


class Traffic:
    """Well-behaved clients, one per command (E, S, G), each moving SIZE bytes with a
    checksum. ``await Traffic(address).start()`` returns once each is halfway through its
    transfer; ``await traffic.finish()`` lets them complete and fails if any byte was lost or
    corrupted."""

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.address = address
        self.tls = tls
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Traffic:
        loop = asyncio.get_running_loop()
        self._go_on = asyncio.Event()
        halfway = [loop.create_future() for _ in range(3)]
        self.tasks = [
            asyncio.create_task(
                good_client(self.address, command, seed, half, self._go_on, self.tls)
            )
            for seed, (command, half) in enumerate(zip((b"E", b"S", b"G"), halfway, strict=True))
        ]
        await wait(asyncio.gather(*halfway))
        return self

    async def finish(self) -> None:
        self._go_on.set()
        await wait(asyncio.gather(*self.tasks))


async def full_traffic(address: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
    """Traffic from start to finish."""
    await (await Traffic(address, tls).start()).finish()


# -- resets -----------------------------------------------------------------------------------

KINDS = ["protocol", "streams"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_peer_that_resets_mid_read(kind: str) -> None:
    """A client sends the first MiB of a 4 MiB request and resets while the server waits for
    the rest: the server's side ends with ConnectionResetError (connection_lost's argument, or
    what the streams handler's read raises), quietly, and the others finish intact."""
    loop = asyncio.get_running_loop()
    async with serve(kind) as (address, hub, _):
        traffic = await Traffic(address).start()
        with contextlib.closing(await raw_connect(address)) as sock:
            await wait(loop.sock_sendall(sock, HEADER.pack(b"S", 4 * MiB, 1) + payload(MiB, 1)))
            victim = await hub.connection_from(sock)
            await until(lambda: victim.received == MiB, "the server reading the first MiB")
            reset(sock)
        assert isinstance(await wait(victim.ended), ConnectionResetError)
        await traffic.finish()
        assert hub.errors == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_peer_that_resets_mid_write(kind: str) -> None:
    """A client asks for 2 MiB, reads none of it, and resets while the server has more than
    its high-water mark queued: the server's side ends with ConnectionResetError, quietly, and
    the others finish intact."""
    async with serve(kind, sndbuf=SMALL_BUFFER) as (address, hub, _):
        traffic = await Traffic(address).start()
        with contextlib.closing(await raw_connect(address, rcvbuf=SMALL_BUFFER)) as sock:
            await wait(asyncio.get_running_loop().sock_sendall(sock, HEADER.pack(b"G", 2 * MiB, 2)))
            victim = await hub.connection_from(sock)
            _, high = victim.transport.get_write_buffer_limits()
            await until(
                lambda: victim.transport.get_write_buffer_size() > high,
                "the server's writes queued beyond the high-water mark",
            )
            reset(sock)
        assert isinstance(await wait(victim.ended), ConnectionResetError)
        await traffic.finish()
        assert hub.errors == []


# -- half-closed peers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "keep_open"),
    [("protocol", True), ("protocol", False), ("streams", True)],
    ids=["protocol-keep-open", "protocol-eof-closes", "streams"],
)
async def test_a_half_closed_peer_still_gets_its_reply(kind: str, keep_open: bool) -> None:
    """A client sends 1 MiB, shuts down its write side and keeps reading: it gets the echo of
    every byte, then the server's reply (the SHA-256 of the whole), then EOF. With
    eof_received returning True the transport stays open for the reply written after it has
    returned (the server then closes); returning None, the reply written from inside it still
    goes out before the transport closes itself. The streams server replies after read()
    returned b'' (StreamReaderProtocol keeps the transport open at EOF)."""
    loop = asyncio.get_running_loop()
    data = payload(MiB, 5)
    async with serve(kind, keep_open=keep_open) as (address, hub, _):
        with contextlib.closing(await raw_connect(address)) as sock:
            reading = asyncio.create_task(read_to_eof(sock))
            await wait(loop.sock_sendall(sock, HEADER.pack(b"U", 0, 0) + data))
            victim = await hub.connection_from(sock)
            sock.shutdown(socket.SHUT_WR)
            received = await wait(reading)
        assert len(received) == MiB + 32
        assert sha256(received[:MiB]) == sha256(data), "the echo differs from what was sent"
        assert received[MiB:] == sha256(data)
        assert victim.eof.done()
        assert await wait(victim.ended) is None
        assert victim.closing_at_reply is (False if keep_open else None)
        assert hub.errors == []


# -- peers that never read --------------------------------------------------------------------


async def test_a_peer_that_never_reads_keeps_the_write_buffer_bounded() -> None:
    """The server sends 2 MiB to a client that does not read. Its protocol stops writing at
    pause_writing, so the transport's buffer never holds more than the high-water mark and
    one write, while other clients are served in full. When the client reads at last,
    resume_writing lets the rest through, intact."""
    loop = asyncio.get_running_loop()
    async with serve(sndbuf=SMALL_BUFFER) as (address, hub, _):
        with contextlib.closing(await raw_connect(address, rcvbuf=SMALL_BUFFER)) as sock:
            await wait(loop.sock_sendall(sock, HEADER.pack(b"G", 2 * MiB, 3)))
            victim = await hub.connection_from(sock)
            assert isinstance(victim, Service)
            _, high = victim.transport.get_write_buffer_limits()
            bound = high + CHUNK
            await until(lambda: victim.pauses > 0, "pause_writing")

            traffic = asyncio.create_task(full_traffic(address))
            samples: list[tuple[int, bool]] = []  # (buffered, paused) between callbacks

            def sampled() -> bool:
                samples.append((victim.transport.get_write_buffer_size(), victim.paused))
                return traffic.done()

            await until(sampled, "the other clients served")
            await traffic
            assert victim.max_buffered <= bound, f"{victim.max_buffered} buffered, bound {bound}"
            most = max(buffered for buffered, _ in samples)
            assert most <= bound, f"{most} bytes buffered, bound {bound}"
            # Paused all along: 2 MiB is more than the kernel buffers of a reader that reads
            # nothing can hold, and resume_writing writes until paused again.
            assert all(paused for _, paused in samples)
            assert victim.outgoing

            received = bytearray()
            while len(received) < 2 * MiB:
                chunk = await wait(loop.sock_recv(sock, 256 * KiB))
                assert chunk, f"EOF after {len(received)} bytes"
                received += chunk
        assert sha256(received) == sha256(payload(2 * MiB, 3))
        assert await wait(victim.ended) is None
        assert hub.errors == []


# -- a flood of connections -------------------------------------------------------------------

FLOOD = 500
WAVE = 125  # connections open at once: well below a 1024-descriptor limit


async def test_a_flood_of_connections_that_close_at_once() -> None:
    """500 clients connect and go at once, in waves: a third close (FIN), a third reset, a
    third send half a request header and reset. Well-behaved clients in the middle of their
    transfers finish intact, the exception handler is never called, every connection the
    server made ends (None for a close, ConnectionResetError for a reset), and once they have
    the process holds exactly the descriptors it held before."""
    loop = asyncio.get_running_loop()
    async with serve(backlog=1024) as (address, hub, server):
        [listener] = server.sockets
        before = open_fds()
        traffic = await Traffic(address).start()
        partial = HEADER.pack(b"S", MiB, 0)[:5]
        for _ in range(FLOOD // WAVE):
            socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(WAVE)]
            try:
                for sock in socks:
                    sock.setblocking(False)
                await wait(asyncio.gather(*(loop.sock_connect(sock, address) for sock in socks)))
                for index, sock in enumerate(socks):
                    if index % 3 == 2:
                        sock.send(partial)
                    if index % 3:
                        reset(sock)
            finally:
                for sock in socks:
                    sock.close()
        await traffic.finish()
        await until(
            lambda: (
                listen_queue(listener)[0] == 0 and hub.open_count() == 0 and open_fds() == before
            ),
            "every connection accepted and closed",
        )
        assert len(hub.connections) == FLOOD + 3
        endings = [type(connection.ended.result()) for connection in hub.connections]
        resets = sum(1 for index in range(WAVE) if index % 3) * (FLOOD // WAVE)
        assert endings.count(ConnectionResetError) == resets
        assert endings.count(type(None)) == FLOOD + 3 - resets
        assert hub.errors == []


# -- TLS handshakes that never finish ---------------------------------------------------------

HANDSHAKE_TIMEOUT = 1.0


@pytest.mark.parametrize("then", ["close", "reset", "stall"])
@pytest.mark.parametrize("sends", ["nothing", "half-hello"])
async def test_a_client_that_vanishes_during_the_tls_handshake(sends: str, then: str) -> None:
    """A plain TCP client of a TLS server sends nothing or half a ClientHello, then closes,
    resets, or stalls (the server drops it after ssl_handshake_timeout: the client reads EOF).
    Meanwhile TLS clients are served in full; the server's protocol never hears of the
    vanished one (no connection_made without a handshake), its descriptor is released, and
    the exception handler is never called (asyncio reports a failed handshake of an incoming
    connection in debug mode only)."""
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    hello = client_hello(client_context)
    async with serve(ssl=server_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT) as (
        address,
        hub,
        _,
    ):
        traffic = await Traffic(address, client_context).start()
        before = open_fds()
        with contextlib.closing(await raw_connect(address)) as sock:
            if sends == "half-hello":
                await wait(loop.sock_sendall(sock, hello[: len(hello) // 2]))
            if then == "reset":
                reset(sock)
            elif then == "stall":
                # Served in full while the stalled handshake is pending.
                await full_traffic(address, client_context)
                assert await wait(loop.sock_recv(sock, 1)) == b""
        await until(lambda: open_fds() == before, "the server releasing the connection")
        await traffic.finish()
        assert len(hub.connections) == (6 if then == "stall" else 3)
        await until(lambda: hub.open_count() == 0, "the TLS clients' connections closed")
        assert all(connection.ended.result() is None for connection in hub.connections)
        assert hub.errors == []
