"""Datagram endpoints: loop.create_datagram_endpoint and the transport it makes (the
DatagramTransport / DatagramProtocol contract), on every loop, over UDP on IPv4 and IPv6
loopback and over Unix datagram sockets.

What is covered: an echo of 10,000 datagrams with no loss; local_addr, remote_addr (a connected
socket: sendto without an address, ValueError for another address, datagrams from others
filtered out by the kernel), family alone, reuse_port, allow_broadcast, sock=; the extra info;
datagram_received(data, addr), empty datagrams, error_received (ICMP port unreachable on a
connected socket, EACCES for a broadcast without SO_BROADCAST); sendto's argument checks; write
buffer size, limits and flow control (pause_writing / resume_writing, which only a Unix datagram
socket can trigger: a full UDP receive queue drops, a full Unix one refuses with EAGAIN); close()
and abort(); sendto after close; an exception in datagram_received; the argument errors of
create_datagram_endpoint. No test leaves a file descriptor open.

Stock asyncio is the reference (base_events.create_datagram_endpoint and
selector_events._SelectorDatagramTransport): every assertion that runs on it holds there; where
uvloop differs, the test says so with an xfail and its reason, taken only once the deviation is
seen. Waits are on futures set by the protocol callbacks, on readiness of a plain socket, or on
loop iterations, never on timed sleeps; ``wait``'s guard and the plain sockets' timeouts only
turn a result that never comes into a failure instead of a hang. A datagram sent on loopback is
in the receiver's queue when sendto() returns, which is what lets a test say "nothing came".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import itertools
import logging
import os
import pathlib
import select
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from _helpers import GUARD, check_write_buffer_limits, needs_ipv6, spin, wait, warnings_logged

pytestmark = pytest.mark.usefixtures("no_leaked_fds")

KiB = 1024

# asyncio logs 'socket.send() raised exception.' from the sendto that finds this many earlier
# losses or dropped sends counted (asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES).
LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5

# Python 3.13 sends an empty datagram for sendto(b''), and counts 8 bytes of header for each
# datagram it queues (gh-113812); 3.11 and 3.12 drop sendto(b'') and count the data alone.
SENDS_EMPTY_DATAGRAMS = sys.version_info >= (3, 13)
QUEUED_HEADER = 8 if sys.version_info >= (3, 13) else 0


# 127.255.255.255 is the loopback network's broadcast address: a broadcast that never leaves
# the machine. A socket bound to it receives what is sent to it; sending there needs SO_BROADCAST.
LOOPBACK_BROADCAST = "127.255.255.255"


@functools.cache
def _loopback_broadcast_unavailable() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
            receiver.bind((LOOPBACK_BROADCAST, 0))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sender.sendto(b"probe", receiver.getsockname())
            receiver.settimeout(GUARD)
            receiver.recv(16)
    except OSError as exc:
        return f"no broadcast on loopback ({exc})"
    return None


def needs_loopback_broadcast() -> None:
    reason = _loopback_broadcast_unavailable()
    if reason is not None:
        pytest.skip(reason)


def xfail_uvloop(loop_name: str, reason: str) -> None:
    if loop_name == "uvloop":
        pytest.xfail(f"uvloop: {reason}")


# -- protocols --------------------------------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    """Records what happens to it: ``events`` names every callback in order, ``received`` holds
    the (data, addr) pairs of datagram_received, ``errors`` what error_received got,
    ``paused_at`` / ``resumed_at`` the write buffer size pause_writing / resume_writing saw.
    Futures ``made`` and ``lost`` resolve at those callbacks; ``await got(n)`` waits for the
    n-th datagram, ``await erred(n)`` for the n-th error. With *echo*, it sends every datagram
    back to where it came from."""

    def __init__(self, *, echo: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.echo = echo
        self.transport: Any = None
        self.events: list[str] = []
        self.received: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []
        self.paused_at: list[int] = []
        self.resumed_at: list[int] = []
        self.made: asyncio.Future[Any] = self.loop.create_future()
        self.lost: asyncio.Future[Exception | None] = self.loop.create_future()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def connection_made(self, transport: Any) -> None:
        self.events.append("connection_made")
        self.transport = transport
        self.made.set_result(transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.events.append("datagram_received")
        self.received.append((data, addr))
        if self.echo:
            self.transport.sendto(data, addr)
        self._wake()

    def error_received(self, exc: Exception) -> None:
        self.events.append("error_received")
        self.errors.append(exc)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("connection_lost")
        self.lost.set_result(exc)
        self._wake()

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.paused_at.append(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.resumed_at.append(self.transport.get_write_buffer_size())

    def _wake(self) -> None:
        for predicate, waiter in list(self._waiters):
            if not waiter.done() and (predicate() or self.lost.done()):
                self._waiters.remove((predicate, waiter))
                waiter.set_result(None)

    async def _until(self, predicate: Callable[[], bool], what: str) -> None:
        if not predicate():
            waiter = self.loop.create_future()
            self._waiters.append((predicate, waiter))
            await wait(waiter)
        if not predicate():
            raise AssertionError(f"connection lost ({self.lost.result()!r}) before {what}")

    async def got(self, count: int) -> list[tuple[bytes, Any]]:
        await self._until(lambda: len(self.received) >= count, f"{count} datagrams")
        return self.received

    async def erred(self, count: int = 1) -> list[Exception]:
        await self._until(lambda: len(self.errors) >= count, f"{count} errors")
        return self.errors


class Raising(Datagrams):
    """Raises Boom from datagram_received for a datagram that says b'raise'."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        super().datagram_received(data, addr)
        if data == b"raise":
            raise Boom("from datagram_received")


class Boom(Exception):
    pass


# -- endpoints and plain sockets --------------------------------------------------------------


@contextlib.asynccontextmanager
async def endpoint(
    factory: Callable[[], Datagrams] = Datagrams, **kwargs: Any
) -> AsyncIterator[tuple[Any, Datagrams]]:
    """(transport, protocol) of create_datagram_endpoint(factory, **kwargs); closed on exit
    (aborted if the block raised: queued datagrams may never go), once connection_lost has
    come."""
    loop = asyncio.get_running_loop()
    transport, protocol = await wait(loop.create_datagram_endpoint(factory, **kwargs))
    try:
        yield transport, protocol
    except BaseException:
        transport.abort()
        raise
    finally:
        transport.close()
        await wait(protocol.lost)


class Sockets:
    """Plain sockets for the other end, driven directly with blocking calls whose timeout
    (GUARD) is only a safety net; every one is closed when the test ends."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self._made: list[socket.socket] = []

    def new(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM) -> socket.socket:
        sock = socket.socket(family, type)
        self._made.append(sock)
        sock.settimeout(GUARD)
        return sock

    def udp(self, host: str = "127.0.0.1", port: int = 0) -> socket.socket:
        """A UDP socket bound to (host, port)."""
        sock = self.new(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.bind((host, port))
        return sock

    def unix(self, name: str) -> socket.socket:
        """A Unix datagram socket bound to *name* in the test's directory."""
        sock = self.new(socket.AF_UNIX)
        sock.bind(self.path(name))
        return sock

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def free_port(self) -> int:
        """A UDP port on 127.0.0.1 that nothing is bound to (it was a moment ago)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def close(self) -> None:
        for sock in self._made:
            sock.close()


@pytest.fixture
def sockets(sock_dir: pathlib.Path) -> Iterator[Sockets]:
    made = Sockets(sock_dir)
    try:
        yield made
    finally:
        made.close()


def nothing_waiting(sock: socket.socket) -> bool:
    """Whether *sock* has nothing to read (no datagram, no pending error)."""
    return not select.select([sock], [], [], 0)[0]


# -- many datagrams ---------------------------------------------------------------------------


def numbered(i: int) -> bytes:
    """Datagram number *i*: unique, 4 to 256 bytes long."""
    return i.to_bytes(4, "big") * (1 + i % 64)


class WindowedSender(asyncio.DatagramProtocol):
    """Sends *count* numbered datagrams on a connected transport, never more than *window* of
    them unanswered: each echo that comes back lets the next one go, so no socket buffer can
    overflow. ``done`` resolves when every datagram has come back once, exactly as sent, from
    *source*; it fails at the first error, duplicate or stranger."""

    def __init__(self, count: int, window: int, source: Any) -> None:
        self.count = count
        self.window = window
        self.source = source
        self.sent = 0
        self.echoed = 0
        self.unanswered: set[bytes] = set()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        for _ in range(self.window):
            self._send_next()

    def _send_next(self) -> None:
        if self.sent < self.count:
            data = numbered(self.sent)
            self.unanswered.add(data)
            self.sent += 1
            self.transport.sendto(data)

    def _fail(self, problem: str) -> None:
        if not self.done.done():
            self.done.set_exception(AssertionError(f"after {self.echoed} echoes: {problem}"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr != self.source:
            return self._fail(f"a datagram from {addr!r}")
        if data not in self.unanswered:
            return self._fail(f"not sent, or echoed twice: {data[:8]!r}...")
        self.unanswered.remove(data)
        self.echoed += 1
        if self.echoed == self.count:
            self.done.set_result(None)
        self._send_next()

    def error_received(self, exc: Exception) -> None:
        self._fail(f"error_received({exc!r})")

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection_lost({exc!r})")
        self.lost.set_result(None)


async def test_echo_of_10000_datagrams_without_loss() -> None:
    """A connected client (sendto without an address) against an unconnected echo server
    (sendto to the address each datagram came from), both on the same loop."""
    loop = asyncio.get_running_loop()
    async with endpoint(lambda: Datagrams(echo=True), local_addr=("127.0.0.1", 0)) as (
        server,
        echo,
    ):
        address = server.get_extra_info("sockname")
        client, sender = await wait(
            loop.create_datagram_endpoint(
                lambda: WindowedSender(10_000, 32, address), remote_addr=address
            )
        )
        client_address = client.get_extra_info("sockname")
        try:
            await wait(sender.done)
            assert sender.sent == sender.echoed == 10_000
            assert not sender.unanswered
        finally:
            client.close()
            await wait(sender.lost)
        assert len(echo.received) == 10_000
        assert {addr for _, addr in echo.received} == {client_address}
        assert echo.errors == []


# -- addresses --------------------------------------------------------------------------------


async def test_local_addr(sockets: Sockets) -> None:
    peer = sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, protocol):
        # connection_made has come, with this transport, by the time the coroutine returns.
        assert protocol.events == ["connection_made"]
        assert protocol.made.result() is transport
        host, port = transport.get_extra_info("sockname")
        assert host == "127.0.0.1"
        assert port > 0
        assert transport.get_extra_info("peername") is None
        sock = transport.get_extra_info("socket")
        assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_DGRAM)
        assert sock.getsockname() == (host, port)
        assert transport.get_extra_info("no such key", "default") == "default"
        assert not transport.is_closing()

        peer.sendto(b"to the endpoint", (host, port))
        assert await protocol.got(1) == [(b"to the endpoint", peer.getsockname())]
        transport.sendto(b"to the peer", peer.getsockname())
        assert peer.recvfrom(100) == (b"to the peer", (host, port))


async def test_remote_addr_connects_the_socket(sockets: Sockets) -> None:
    peer, stranger = sockets.udp(), sockets.udp()
    async with endpoint(remote_addr=peer.getsockname()) as (transport, protocol):
        assert transport.get_extra_info("peername") == peer.getsockname()
        sockname = transport.get_extra_info("sockname")
        assert sockname[0] == "127.0.0.1"
        assert sockname[1] > 0  # connect() bound it
        assert transport.get_extra_info("socket").getpeername() == peer.getsockname()

        transport.sendto(b"no address")
        transport.sendto(b"its own address", peer.getsockname())  # allowed: the same one
        assert peer.recvfrom(100) == (b"no address", sockname)
        assert peer.recvfrom(100) == (b"its own address", sockname)

        # The kernel drops what others send to a connected socket.
        stranger.sendto(b"from a stranger", sockname)
        peer.sendto(b"from the peer", sockname)
        assert await protocol.got(1) == [(b"from the peer", peer.getsockname())]
        await spin()
        assert len(protocol.received) == 1


async def test_sendto_another_address_on_a_connected_transport(sockets: Sockets) -> None:
    peer, other = sockets.udp(), sockets.udp()
    async with endpoint(remote_addr=peer.getsockname()) as (transport, protocol):
        with pytest.raises(ValueError, match="Invalid address"):
            transport.sendto(b"elsewhere", other.getsockname())
        assert nothing_waiting(other)
        assert nothing_waiting(peer)
        assert not transport.is_closing()
        transport.sendto(b"still fine")
        assert peer.recv(100) == b"still fine"
        assert protocol.errors == []


async def test_local_and_remote_addr(sockets: Sockets) -> None:
    peer = sockets.udp()
    port = sockets.free_port()
    async with endpoint(local_addr=("127.0.0.1", port), remote_addr=peer.getsockname()) as (
        transport,
        protocol,
    ):
        assert transport.get_extra_info("sockname") == ("127.0.0.1", port)
        assert transport.get_extra_info("peername") == peer.getsockname()
        transport.sendto(b"hello")
        assert peer.recvfrom(100) == (b"hello", ("127.0.0.1", port))
        peer.sendto(b"back", ("127.0.0.1", port))
        assert await protocol.got(1) == [(b"back", peer.getsockname())]


@needs_ipv6
async def test_ipv6(sockets: Sockets) -> None:
    peer = sockets.udp("::1")
    async with endpoint(local_addr=("::1", 0)) as (transport, protocol):
        sockname = transport.get_extra_info("sockname")
        assert sockname[0] == "::1"
        assert len(sockname) == 4  # (host, port, flowinfo, scope_id)
        assert transport.get_extra_info("socket").family == socket.AF_INET6
        peer.sendto(b"six", sockname[:2])
        [(data, addr)] = await protocol.got(1)
        assert (data, addr) == (b"six", peer.getsockname())
        transport.sendto(b"back", addr)
        assert peer.recvfrom(100) == (b"back", sockname)
    async with endpoint(remote_addr=peer.getsockname()[:2]) as (transport, protocol):
        assert transport.get_extra_info("peername") == peer.getsockname()
        transport.sendto(b"connected")
        assert peer.recv(100) == b"connected"


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(socket.AF_INET, id="AF_INET"),
        pytest.param(socket.AF_INET6, id="AF_INET6", marks=needs_ipv6),
    ],
)
async def test_family_without_addresses(sockets: Sockets, family: int) -> None:
    """An unbound socket: the first sendto binds it to an ephemeral port, and replies come."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    peer = sockets.udp(host)
    async with endpoint(family=family) as (transport, protocol):
        sock = transport.get_extra_info("socket")
        assert (sock.family, sock.type) == (family, socket.SOCK_DGRAM)
        assert transport.get_extra_info("sockname")[1] == 0  # not bound yet
        assert transport.get_extra_info("peername") is None
        transport.sendto(b"hello", peer.getsockname()[:2])
        data, source = peer.recvfrom(100)
        assert data == b"hello"
        peer.sendto(b"reply", source)
        assert await protocol.got(1) == [(b"reply", peer.getsockname())]


async def test_unix_family_without_addresses(sockets: Sockets, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    peer = sockets.unix("peer")
    try:
        transport, protocol = await wait(
            loop.create_datagram_endpoint(Datagrams, family=socket.AF_UNIX)
        )
    except ValueError as exc:
        xfail_uvloop(loop_name, f"family=AF_UNIX alone raises ValueError ({exc})")
        raise
    try:
        assert transport.get_extra_info("socket").family == socket.AF_UNIX
        assert transport.get_extra_info("sockname") == ""  # unbound
        transport.sendto(b"anonymous", peer.getsockname())
        assert peer.recv(100) == b"anonymous"
    finally:
        transport.close()
        await wait(protocol.lost)


async def test_unix_datagram_paths(sockets: Sockets, loop_name: str) -> None:
    """local_addr and remote_addr as paths (family=AF_UNIX): bound and connected; the source
    address is the sender's path, or None from an unbound sender. A stale socket file at
    local_addr is replaced; the file stays after close."""
    loop = asyncio.get_running_loop()
    peer, stranger = sockets.unix("peer"), sockets.new(socket.AF_UNIX)
    mine = sockets.path("mine")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stale:
        stale.bind(mine)
    try:
        transport, protocol = await wait(
            loop.create_datagram_endpoint(
                Datagrams, local_addr=mine, remote_addr=peer.getsockname(), family=socket.AF_UNIX
            )
        )
    except TypeError as exc:
        xfail_uvloop(loop_name, f"no Unix datagram paths in create_datagram_endpoint ({exc})")
        raise
    try:
        assert transport.get_extra_info("sockname") == mine
        assert transport.get_extra_info("peername") == peer.getsockname()
        transport.sendto(b"by path")
        assert peer.recvfrom(100) == (b"by path", mine)
        peer.sendto(b"back", mine)
        assert await protocol.got(1) == [(b"back", peer.getsockname())]
    finally:
        transport.close()
        await wait(protocol.lost)
    assert os.path.exists(mine)

    # Unconnected, on the same (now stale) path: any sender, by path or unbound.
    async with endpoint(local_addr=mine, family=socket.AF_UNIX) as (transport, protocol):
        assert transport.get_extra_info("peername") is None
        peer.sendto(b"named", mine)
        stranger.sendto(b"unnamed", mine)
        assert await protocol.got(2) == [(b"named", peer.getsockname()), (b"unnamed", None)]
        transport.sendto(b"reply", peer.getsockname())
        assert peer.recvfrom(100) == (b"reply", mine)


async def test_reuse_port(sockets: Sockets) -> None:
    async with endpoint(local_addr=("127.0.0.1", 0), reuse_port=True) as (first, _):
        address = first.get_extra_info("sockname")
        sock = first.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        async with endpoint(local_addr=address, reuse_port=True) as (second, _):
            assert second.get_extra_info("sockname") == address
        # Without it, the port is taken.
        with pytest.raises(OSError) as raised:
            async with endpoint(local_addr=address):
                pass
    error = raised.value
    assert errno.EADDRINUSE in (error.errno, getattr(error.__cause__, "errno", None)), error


async def test_socket_options_off_by_default() -> None:
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, _):
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0


# -- broadcast --------------------------------------------------------------------------------


async def test_allow_broadcast(sockets: Sockets) -> None:
    needs_loopback_broadcast()
    receiver = sockets.udp(LOOPBACK_BROADCAST)
    async with endpoint(local_addr=("127.0.0.1", 0), allow_broadcast=True) as (transport, proto):
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        transport.sendto(b"to all", receiver.getsockname())
        assert receiver.recvfrom(100) == (b"to all", transport.get_extra_info("sockname"))
        assert proto.errors == []


async def test_broadcast_without_allow_broadcast_is_an_error_received(sockets: Sockets) -> None:
    """sendto() to a broadcast address without SO_BROADCAST: the kernel refuses (EACCES) and
    the transport reports it to error_received -- from inside sendto() -- and carries on."""
    needs_loopback_broadcast()
    receiver, peer = sockets.udp(LOOPBACK_BROADCAST), sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, protocol):
        transport.sendto(b"to all", receiver.getsockname())
        assert protocol.events == ["connection_made", "error_received"]
        [error] = protocol.errors
        assert isinstance(error, PermissionError)
        assert error.errno == errno.EACCES
        assert not transport.is_closing()
        transport.sendto(b"to one", peer.getsockname())
        assert peer.recv(100) == b"to one"
    assert nothing_waiting(receiver)


async def test_broadcast_remote_addr(sockets: Sockets, loop_name: str) -> None:
    """remote_addr a broadcast address: without allow_broadcast, the connect() fails with
    PermissionError. With it, asyncio does not connect the socket at all (peername None) but
    sends every sendto(data) to remote_addr, and still refuses other addresses."""
    needs_loopback_broadcast()
    loop = asyncio.get_running_loop()
    receiver, other = sockets.udp(LOOPBACK_BROADCAST), sockets.udp()
    with pytest.raises(PermissionError):
        await wait(loop.create_datagram_endpoint(Datagrams, remote_addr=receiver.getsockname()))
    try:
        transport, protocol = await wait(
            loop.create_datagram_endpoint(
                Datagrams, remote_addr=receiver.getsockname(), allow_broadcast=True
            )
        )
    except PermissionError:
        xfail_uvloop(loop_name, "connects before it sets SO_BROADCAST, so connect() fails")
        raise
    try:
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert transport.get_extra_info("peername") is None
        transport.sendto(b"to all")
        assert receiver.recv(100) == b"to all"
        with pytest.raises(ValueError, match="Invalid address"):
            transport.sendto(b"elsewhere", other.getsockname())
        assert protocol.errors == []
    finally:
        transport.close()
        await wait(protocol.lost)


# -- sock= ------------------------------------------------------------------------------------


async def test_existing_socket(sockets: Sockets) -> None:
    """sock=: the transport uses the socket as it is (made non-blocking) and closes it when
    the connection is lost."""
    loop = asyncio.get_running_loop()
    peer = sockets.udp()
    sock = sockets.udp()
    address = sock.getsockname()
    transport, protocol = await wait(loop.create_datagram_endpoint(Datagrams, sock=sock))
    try:
        assert sock.gettimeout() == 0.0
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        assert transport.get_extra_info("sockname") == address
        peer.sendto(b"hello", address)
        assert await protocol.got(1) == [(b"hello", peer.getsockname())]
        transport.sendto(b"back", peer.getsockname())
        assert peer.recvfrom(100) == (b"back", address)
    finally:
        transport.close()
        await wait(protocol.lost)
    assert sock.fileno() == -1


async def test_existing_connected_socket(sockets: Sockets) -> None:
    peer = sockets.udp()
    sock = sockets.udp()
    sock.connect(peer.getsockname())
    async with endpoint(sock=sock) as (transport, protocol):
        assert transport.get_extra_info("peername") == peer.getsockname()
        transport.sendto(b"no address")
        assert peer.recvfrom(100) == (b"no address", sock.getsockname())
        peer.sendto(b"back", sock.getsockname())
        assert await protocol.got(1) == [(b"back", peer.getsockname())]


@pytest.mark.parametrize(
    "kind", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET], ids=["SOCK_STREAM", "SOCK_SEQPACKET"]
)
async def test_existing_socket_of_the_wrong_type(
    sockets: Sockets, loop_name: str, kind: int
) -> None:
    """A socket of the wrong type is refused with ValueError, and left open (it is the
    caller's). 3.13 refuses only SOCK_STREAM ('A datagram socket was expected'); 3.11 and 3.12
    anything but SOCK_DGRAM ('A UDP Socket was expected')."""
    loop = asyncio.get_running_loop()
    sock = sockets.new(socket.AF_UNIX, kind)
    if kind == socket.SOCK_SEQPACKET and sys.version_info >= (3, 13):
        try:
            transport, protocol = await wait(loop.create_datagram_endpoint(Datagrams, sock=sock))
        except ValueError as exc:
            xfail_uvloop(loop_name, f"refuses all but SOCK_DGRAM, as asyncio 3.11/3.12 ({exc})")
            raise
        transport.close()
        assert await wait(protocol.lost) is None
        return
    with pytest.raises(ValueError, match=r"[Ss]ocket was expected"):
        await wait(loop.create_datagram_endpoint(Datagrams, sock=sock))
    assert sock.fileno() != -1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"local_addr": ("127.0.0.1", 0)},
        {"remote_addr": ("127.0.0.1", 9)},
        {"family": socket.AF_INET},
        {"proto": socket.IPPROTO_UDP},
        {"flags": socket.AI_NUMERICHOST},
        {"reuse_port": True},
        {"allow_broadcast": True},
    ],
    ids=lambda kwargs: next(iter(kwargs)),
)
async def test_existing_socket_with_other_arguments(sockets: Sockets, kwargs: Any) -> None:
    loop = asyncio.get_running_loop()
    sock = sockets.udp()
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"can not be used when sock is specified.*{name}="):
        await wait(loop.create_datagram_endpoint(Datagrams, sock=sock, **kwargs))
    assert sock.fileno() != -1


# -- receiving --------------------------------------------------------------------------------


async def test_empty_datagram_is_delivered(sockets: Sockets) -> None:
    peer = sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, protocol):
        address = transport.get_extra_info("sockname")
        peer.sendto(b"", address)
        peer.sendto(b"after", address)
        assert await protocol.got(2) == [(b"", peer.getsockname()), (b"after", peer.getsockname())]


async def test_datagrams_keep_their_boundaries(sockets: Sockets) -> None:
    """One datagram_received per datagram, whole, up to UDP's largest (65,507 bytes)."""
    peer = sockets.udp()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * KiB)
    sizes = [1, 1000, 9000, 65_507, 3]
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, protocol):
        transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 512 * KiB
        )
        address = transport.get_extra_info("sockname")
        for i, size in enumerate(sizes):
            peer.sendto(bytes([i]) * size, address)
        received = await protocol.got(len(sizes))
        assert [data for data, _ in received] == [bytes([i]) * n for i, n in enumerate(sizes)]


async def test_connected_port_unreachable_is_an_error_received(sockets: Sockets) -> None:
    """A connected UDP socket learns of the ICMP port unreachable its datagram caused:
    error_received(ConnectionRefusedError). The transport stays open and usable."""
    port = sockets.free_port()
    async with endpoint(remote_addr=("127.0.0.1", port)) as (transport, protocol):
        transport.sendto(b"anyone there?")
        [error] = await protocol.erred(1)
        assert isinstance(error, ConnectionRefusedError)
        assert not transport.is_closing()
        assert "connection_lost" not in protocol.events
        listener = sockets.udp("127.0.0.1", port)  # now someone is
        transport.sendto(b"now?")
        assert listener.recv(100) == b"now?"
    assert await protocol.lost is None


async def test_exception_in_datagram_received(sockets: Sockets, loop_name: str) -> None:
    """The exception goes to the loop's exception handler; the transport is not closed (asyncio
    lets it escape its read callback: 'Exception in callback ..._read_ready()') and the next
    datagram is delivered."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    peer = sockets.udp()
    async with endpoint(Raising, local_addr=("127.0.0.1", 0)) as (transport, protocol):
        address = transport.get_extra_info("sockname")
        peer.sendto(b"raise", address)
        peer.sendto(b"next", address)
        await protocol.got(2)
        assert [data for data, _ in protocol.received] == [b"raise", b"next"]
        assert not transport.is_closing()
        transport.sendto(b"still open", peer.getsockname())
        assert peer.recv(100) == b"still open"
    assert await protocol.lost is None
    [context] = contexts
    assert isinstance(context["exception"], Boom)
    if loop_name == "uvloop" and "message" not in context:
        pytest.xfail("uvloop: the exception handler's context has no 'message'")
    assert context["message"]


# -- sending ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
async def test_sendto_bytes_like(sockets: Sockets, kind: type) -> None:
    peer = sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, _):
        transport.sendto(kind(b"bytes-like"), peer.getsockname())
        assert peer.recv(100) == b"bytes-like"


@pytest.mark.parametrize("bad", ["text", 42, [b"a list"], None, ""], ids=repr)
async def test_sendto_refuses_non_bytes(sockets: Sockets, loop_name: str, bad: Any) -> None:
    """TypeError, checked before anything else (even an empty str); nothing is sent and the
    transport carries on."""
    peer = sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, protocol):
        try:
            transport.sendto(bad, peer.getsockname())
        except TypeError:
            pass
        else:
            xfail_uvloop(loop_name, f"sendto({bad!r}) returns silently (falsy data is skipped)")
            pytest.fail(f"sendto({bad!r}) did not raise TypeError")
        assert nothing_waiting(peer)
        assert not transport.is_closing()
        transport.sendto(b"fine", peer.getsockname())
        assert peer.recv(100) == b"fine"
        assert protocol.errors == []


async def test_sendto_empty_bytes(sockets: Sockets, loop_name: str) -> None:
    """3.13+ sends an empty datagram; 3.11 and 3.12 send nothing (see SENDS_EMPTY_DATAGRAMS)."""
    peer = sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, protocol):
        transport.sendto(b"", peer.getsockname())
        transport.sendto(b"marker", peer.getsockname())
        first = peer.recv(100)
        if SENDS_EMPTY_DATAGRAMS and loop_name == "uvloop" and first == b"marker":
            pytest.xfail("uvloop: sendto(b'') sends nothing, as asyncio did before 3.13")
        if SENDS_EMPTY_DATAGRAMS:
            assert first == b""
            assert peer.recv(100) == b"marker"
        else:
            assert first == b"marker"
        assert protocol.errors == []
        assert not transport.is_closing()


async def test_write_buffer_is_empty_when_idle(sockets: Sockets) -> None:
    peer = sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, _):
        assert transport.get_write_buffer_size() == 0
        for _ in range(10):
            transport.sendto(b"x" * 1000, peer.getsockname())
        assert transport.get_write_buffer_size() == 0  # UDP on loopback never waits


async def test_write_buffer_limits(loop_name: str) -> None:
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, _):
        check_write_buffer_limits(transport, loop_name)


# -- flow control, on a Unix datagram socket whose peer does not read -------------------------


def unix_pair(sockets: Sockets) -> tuple[socket.socket, socket.socket]:
    """(sock, peer): Unix datagram sockets bound to paths, *sock* connected to *peer*. A
    connected socket waits (EAGAIN, then EPOLLOUT) while the peer's queue is full
    (net.unix.max_dgram_qlen), where a UDP one would drop."""
    peer = sockets.unix("peer")
    sock = sockets.unix("sock")
    sock.connect(peer.getsockname())
    peer.setblocking(False)
    return sock, peer


def fill(transport: Any, protocol: Datagrams, *, until_paused: bool) -> list[bytes]:
    """sendto() 100-byte numbered datagrams until the transport queues one (or, with
    *until_paused*, until pause_writing); returns all that were sent."""
    sent: list[bytes] = []
    while not (protocol.paused_at if until_paused else transport.get_write_buffer_size()):
        assert len(sent) < 100_000, "the transport never queued anything"
        data = b"%06d" % len(sent) + b"." * 94
        transport.sendto(data)
        sent.append(data)
    return sent


async def drain(peer: socket.socket, count: int) -> list[bytes]:
    """The next *count* datagrams *peer* receives, read on the loop."""
    loop = asyncio.get_running_loop()
    return [await wait(loop.sock_recv(peer, 1000)) for _ in range(count)]


async def test_write_buffer_grows_by_each_queued_datagram(sockets: Sockets, loop_name: str) -> None:
    """Once the kernel refuses, sendto() queues: the buffer grows by the length of each
    datagram (plus 8 bytes of header on 3.13+, QUEUED_HEADER), and drains in order."""
    sock, peer = unix_pair(sockets)
    async with endpoint(sock=sock) as (transport, protocol):
        transport.set_write_buffer_limits(high=1 << 30)  # no pause_writing here
        sent = fill(transport, protocol, until_paused=False)
        sizes = [transport.get_write_buffer_size()]
        for size in (10, 0, 500):
            transport.sendto(b"q" * size)
            sent.append(b"q" * size)
            sizes.append(transport.get_write_buffer_size())
        growth = [b - a for a, b in itertools.pairwise(sizes)]
        expected = [size + QUEUED_HEADER for size in (10, 0, 500)]
        # (uvloop never sends b"", so the only question for it is the 8 bytes.)
        payload_only = QUEUED_HEADER and loop_name == "uvloop" and growth == [10, 0, 500]
        if not SENDS_EMPTY_DATAGRAMS or payload_only:  # sendto(b"") was not queued either
            sent.remove(b"")
            expected[1] = 0
        assert await drain(peer, len(sent)) == sent
        assert nothing_waiting(peer)
        assert protocol.errors == []
        if payload_only:
            pytest.xfail("uvloop: counts the data of a queued datagram alone, as 3.11/3.12 did")
        assert growth == expected


async def test_pause_and_resume_writing(sockets: Sockets) -> None:
    """pause_writing once the buffer exceeds the high-water mark, once, however much more is
    queued; resume_writing once it has drained to the low-water mark, once. Nothing is lost."""
    sock, peer = unix_pair(sockets)
    high, low = 2000, 500
    async with endpoint(sock=sock) as (transport, protocol):
        transport.set_write_buffer_limits(high=high, low=low)
        sent = fill(transport, protocol, until_paused=True)
        assert protocol.paused_at[0] > high
        assert protocol.paused_at[0] == transport.get_write_buffer_size()
        for _ in range(5):  # still accepted while paused
            transport.sendto(b"while paused")
            sent.append(b"while paused")
        assert len(protocol.paused_at) == 1
        assert protocol.resumed_at == []
        assert await drain(peer, len(sent)) == sent
        await spin()
        assert len(protocol.paused_at) == 1
        assert len(protocol.resumed_at) == 1
        assert protocol.resumed_at[0] <= low
        assert protocol.events.count("pause_writing") == 1
        assert protocol.errors == []


async def test_close_sends_queued_datagrams_first(sockets: Sockets) -> None:
    sock, peer = unix_pair(sockets)
    async with endpoint(sock=sock) as (transport, protocol):
        sent = fill(transport, protocol, until_paused=False)
        transport.close()
        assert transport.is_closing()
        await spin()
        assert not protocol.lost.done()  # the queue is still waiting for the peer
        assert await drain(peer, len(sent)) == sent
        assert await wait(protocol.lost) is None
    assert protocol.events.count("connection_lost") == 1
    assert nothing_waiting(peer)


async def test_abort_drops_queued_datagrams(sockets: Sockets, loop_name: str) -> None:
    """abort() with datagrams queued: they are dropped, quietly; connection_lost(None)."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    sock, peer = unix_pair(sockets)
    async with endpoint(sock=sock) as (transport, protocol):
        sent = fill(transport, protocol, until_paused=False)
        for _ in range(3):
            transport.sendto(b"queued")
        transport.abort()
        assert await wait(protocol.lost) is None
        await spin()
    # All but the datagram that fill() saw queued went to the kernel before the abort.
    assert await drain(peer, len(sent) - 1) == sent[:-1]
    assert nothing_waiting(peer)
    assert protocol.events.count("connection_lost") == 1
    if loop_name == "uvloop" and contexts:
        pytest.xfail(
            "uvloop: each dropped datagram is reported to the exception handler ('Fatal write "
            "error on datagram transport', CancelledError from UV_ECANCELED)"
        )
    assert contexts == []


# -- closing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort", "close+abort", "abort+close", "close+close"])
async def test_connection_lost_once_and_from_the_loop(sockets: Sockets, how: str) -> None:
    """close() and abort() call connection_lost(None) later, from the loop, not inside the
    call, and once however many times they are called; a datagram that arrives in between
    is not delivered."""
    peer = sockets.udp()
    async with endpoint(local_addr=("127.0.0.1", 0)) as (transport, protocol):
        for step in how.split("+"):
            getattr(transport, step)()
            assert transport.is_closing()
            assert protocol.events == ["connection_made"]
        peer.sendto(b"too late", transport.get_extra_info("sockname"))
        assert await wait(protocol.lost) is None
        await spin()
    assert protocol.events == ["connection_made", "connection_lost"]


@pytest.mark.parametrize("when", ["after close", "after connection_lost"])
async def test_sendto_after_close_is_dropped(
    sockets: Sockets, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    """A connected transport: sendto() after close() is dropped without an exception; from the
    LOG_THRESHOLD_FOR_CONNLOST_WRITES-th on (counting close itself), each logs the warning
    'socket.send() raised exception.'. (asyncio keeps that count only on a connected
    transport.)"""
    assert asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES == LOG_THRESHOLD_FOR_CONNLOST_WRITES
    peer = sockets.udp()
    async with endpoint(remote_addr=peer.getsockname()) as (transport, protocol):
        transport.close()
        if when == "after connection_lost":
            await wait(protocol.lost)

        def warnings() -> int:
            return warnings_logged(caplog, "socket.send() raised exception.")

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(LOG_THRESHOLD_FOR_CONNLOST_WRITES - 1):
                transport.sendto(b"dropped")
            assert warnings() == 0
            transport.sendto(b"dropped")
            assert warnings() == 1
            transport.sendto(bytearray(b"dropped"), peer.getsockname())
            assert warnings() == 2
        assert await wait(protocol.lost) is None
    assert nothing_waiting(peer)
    assert protocol.events == ["connection_made", "connection_lost"]


# -- argument errors --------------------------------------------------------------------------


async def test_no_address_and_no_family() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError, match="unexpected address family"):
        await wait(loop.create_datagram_endpoint(Datagrams))


async def test_reuse_address_is_gone(loop_name: str) -> None:
    """asyncio removed reuse_address in 3.11 (before, True raised ValueError): now it is an
    unexpected keyword argument."""
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(TypeError, match="reuse_address"):
            await wait(
                loop.create_datagram_endpoint(
                    Datagrams, local_addr=("127.0.0.1", 0), reuse_address=True
                )
            )
    except ValueError as exc:
        xfail_uvloop(loop_name, f"reuse_address=True still raises ValueError ({exc})")
        raise


@pytest.mark.parametrize("which", ["local_addr", "remote_addr"])
async def test_address_that_is_not_a_pair(which: str) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TypeError):
        await wait(loop.create_datagram_endpoint(Datagrams, **{which: "127.0.0.1"}))


@pytest.mark.parametrize("which", ["local_addr", "remote_addr"])
async def test_address_that_does_not_resolve(which: str) -> None:
    """A host that fails without asking DNS (the test machine may have none)."""
    loop = asyncio.get_running_loop()
    with pytest.raises(socket.gaierror):
        await wait(
            loop.create_datagram_endpoint(
                Datagrams, **{which: ("256.256.256.256", 9)}, flags=socket.AI_NUMERICHOST
            )
        )


async def test_local_addr_that_cannot_be_bound() -> None:
    """203.0.113.1 (TEST-NET-3) is no address of this machine: EADDRNOTAVAIL, and the socket
    made for it is closed (no_leaked_fds)."""
    loop = asyncio.get_running_loop()
    with pytest.raises(OSError) as raised:
        await wait(loop.create_datagram_endpoint(Datagrams, local_addr=("203.0.113.1", 0)))
    error = raised.value
    assert errno.EADDRNOTAVAIL in (error.errno, getattr(error.__cause__, "errno", None)), error
