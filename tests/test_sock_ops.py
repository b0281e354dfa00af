"""The low-level networking methods, on real loopback sockets: sock_recv, sock_recv_into,
sock_recvfrom, sock_recvfrom_into, sock_sendall, sock_sendto, sock_connect, sock_accept,
sock_sendfile, getaddrinfo and getnameinfo.

Stock asyncio is the reference: every assertion here holds on asyncio's SelectorEventLoop (where
uvloop differs, the test says so with an xfail and its reason). Socket kinds: TCP over IPv4 and
IPv6 (skipped when ::1 cannot be bound), Unix stream, UDP over IPv4 and IPv6, Unix datagram.

Waits are on events (futures, readiness of a socket), never on sleeps; ``wait``'s guard and the
peers' socket timeouts only turn a result that never comes into a failure instead of a hang.
Every socket a test makes is closed when it ends, and a test fails if it leaves a file
descriptor open.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import os
import select
import shutil
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import GUARD, needs_ipv6, spin, wait

# -- sockets ----------------------------------------------------------------------------------

KINDS = {
    "tcp4": (socket.AF_INET, socket.SOCK_STREAM),
    "tcp6": (socket.AF_INET6, socket.SOCK_STREAM),
    "unix": (socket.AF_UNIX, socket.SOCK_STREAM),
    "udp4": (socket.AF_INET, socket.SOCK_DGRAM),
    "udp6": (socket.AF_INET6, socket.SOCK_DGRAM),
    "unix_dgram": (socket.AF_UNIX, socket.SOCK_DGRAM),
}


TCP_KINDS = ["tcp4", pytest.param("tcp6", marks=needs_ipv6)]
STREAM_KINDS = [*TCP_KINDS, "unix"]
DGRAM_KINDS = ["udp4", pytest.param("udp6", marks=needs_ipv6), "unix_dgram"]


class Sockets:
    """Makes a test's sockets; every one is closed at the end of the test.

    The socket handed to the loop (``sock``) is non-blocking; the test drives its ``peer``
    directly with blocking calls whose timeout (GUARD) is only a safety net."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._made: list[socket.socket] = []
        self._paths = 0

    def track(self, sock: socket.socket) -> socket.socket:
        self._made.append(sock)
        return sock

    def new(self, family: int, type: int = socket.SOCK_STREAM) -> socket.socket:
        return self.track(socket.socket(family, type))

    def address(self, kind: str) -> Any:
        """A fresh address to bind a socket of *kind* to."""
        family = KINDS[kind][0]
        if family == socket.AF_UNIX:
            self._paths += 1
            return os.path.join(self._directory, f"s{self._paths}")
        return ("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0)

    def bound(self, kind: str) -> socket.socket:
        sock = self.new(*KINDS[kind])
        sock.bind(self.address(kind))
        return sock

    def listener(self, kind: str, backlog: int = 16) -> socket.socket:
        sock = self.bound(kind)
        sock.listen(backlog)
        sock.settimeout(GUARD)
        return sock

    def client_of(self, listener: socket.socket) -> socket.socket:
        """A socket connected to *listener* (blocking connect: it is established, and the
        connection waits in the listener's accept queue)."""
        client = self.new(listener.family)
        client.settimeout(GUARD)
        client.connect(listener.getsockname())
        return client

    def stream_pair(self, kind: str) -> tuple[socket.socket, socket.socket]:
        """(sock, peer): a connected pair of stream sockets of *kind*."""
        listener = self.listener(kind)
        peer = self.client_of(listener)
        sock = self.track(listener.accept()[0])
        sock.setblocking(False)
        listener.close()
        return sock, peer

    def dgram_pair(self, kind: str) -> tuple[socket.socket, socket.socket]:
        """(sock, peer): two bound datagram sockets of *kind*, each knowing nothing of the
        other (send with sendto)."""
        sock = self.bound(kind)
        sock.setblocking(False)
        peer = self.bound(kind)
        peer.settimeout(GUARD)
        return sock, peer

    def close(self) -> None:
        for sock in self._made:
            sock.close()


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    # A short directory of our own: tmp_path can exceed the ~107 bytes of a Unix socket path.
    directory = tempfile.mkdtemp(prefix="sockops-")
    made = Sockets(directory)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(directory, ignore_errors=True)


def _open_fds() -> dict[int, str]:
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used, closed by now
            pass
    return fds


@pytest.fixture(autouse=True)
def _no_fd_leak(loop_name: str) -> Iterator[None]:
    """The test, its sockets and its loop leave no file descriptor open. (Autouse fixtures are
    set up before pytest-asyncio's loop, so they are torn down after it.) Not on uvloop, whose
    first loop opens a pipe that stays for the life of the process."""
    if loop_name == "uvloop":
        yield
        return
    before = _open_fds()
    yield
    after = _open_fds()
    if len(after) > len(before):
        new = {fd: target for fd, target in after.items() if before.get(fd) != target}
        pytest.fail(f"{len(after) - len(before)} file descriptor(s) leaked; new ones: {new}")


def wait_readable(sock: socket.socket) -> None:
    """Block until *sock* is readable: something the test has made happen is there."""
    assert select.select([sock], [], [], GUARD)[0], "the socket never became readable"


def read_all(sock: socket.socket) -> bytes:
    """Blocking read of *sock* until EOF (to run in a thread)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def slow_digest(sock: socket.socket) -> tuple[int, str]:
    """Blocking read of *sock* until EOF in small pieces, a slow reader (to run in a thread);
    returns (bytes read, their sha256)."""
    digest = hashlib.sha256()
    total = 0
    while chunk := sock.recv(4096):
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


async def loop_digest(sock: socket.socket) -> tuple[int, str]:
    """Like slow_digest, with sock_recv on the running loop (*sock* is non-blocking)."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    total = 0
    while chunk := await loop.sock_recv(sock, 4096):
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


@contextlib.contextmanager
def then_eof(sock: socket.socket) -> Iterator[None]:
    """Shut *sock*'s sending side after the block, even if the block failed: a reader waiting
    for EOF must not hang until its timeout."""
    try:
        yield
    finally:
        sock.shutdown(socket.SHUT_WR)


def in_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    return asyncio.get_running_loop().run_in_executor(None, function, *args)


async def completes(
    start: Callable[[], Awaitable[Any]],
    deliver: Callable[[], None],
    ready_on: socket.socket,
    when: str,
) -> Any:
    """The result of the operation *start()* begins, which *deliver()* (the peer's action)
    makes possible.

    when="ready": the peer acts first; once *ready_on* is readable, the operation must finish
    within a few loop iterations, without anything more from the peer.
    when="pending": the operation starts first and must still be waiting a few iterations
    later; then the peer acts and the result must come."""
    if when == "ready":
        deliver()
        wait_readable(ready_on)
        task = asyncio.ensure_future(start())
        await spin()
        assert task.done(), "the result was there, yet the operation kept waiting"
        return task.result()
    task = asyncio.ensure_future(start())
    await spin()
    if task.done():
        task.result()  # an exception explains more than the failure below
        pytest.fail(f"completed before the peer did anything: {task.result()!r}")
    deliver()
    return await wait(task)


WHEN = ["ready", "pending"]


UVLOOP_LACKS = {"sock_recvfrom": 2, "sock_recvfrom_into": 2, "sock_sendto": 3, "sock_sendfile": 2}


def xfail_if_uvloop_lacks(loop: asyncio.AbstractEventLoop, loop_name: str, method: str) -> None:
    """uvloop raises NotImplementedError from a few methods: xfail the test there. Checked, not
    assumed (a call with dummy arguments): once uvloop has *method*, the test runs on it."""
    if loop_name != "uvloop":
        return
    call = getattr(loop, method)(*[None] * UVLOOP_LACKS[method])
    try:
        call.send(None)
    except NotImplementedError:
        lacking = True
    except Exception:  # implemented: it fails on the dummy arguments
        lacking = False
    else:
        lacking = False
    finally:
        call.close()
    if lacking:  # outside the except clause: no chained traceback to format, which is slow
        pytest.xfail(f"uvloop does not implement {method} (raises NotImplementedError)")


def xfail_uvloop_remove_result(loop_name: str) -> None:
    if loop_name == "uvloop":
        pytest.xfail("uvloop: remove_reader/remove_writer return None instead of True/False")


# -- receiving --------------------------------------------------------------------------------


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_recv(sockets: Sockets, kind: str, when: str) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    data = await completes(
        lambda: loop.sock_recv(sock, 1024), lambda: peer.sendall(b"hello"), sock, when
    )
    assert data == b"hello"


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_recv_returns_at_most_nbytes(sockets: Sockets, kind: str) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    peer.sendall(b"abcdefgh")
    wait_readable(sock)
    assert await wait(loop.sock_recv(sock, 3)) == b"abc"
    assert await wait(loop.sock_recv(sock, 100)) == b"defgh"


# Sizes on both sides of where epolloop stops making the result object directly and reads
# through its own buffer (64 KiB, 256 KiB): every size returns what arrived, at most nbytes.
@pytest.mark.parametrize("nbytes", [1, 64 * 1024 + 1, 256 * 1024, 256 * 1024 + 1, 1024 * 1024])
async def test_sock_recv_of_any_size_returns_what_arrived(sockets: Sockets, nbytes: int) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair("unix")
    payload = os.urandom(100 * 1024)  # fits the socket's buffer: sendall does not block
    peer.sendall(payload)
    peer.shutdown(socket.SHUT_WR)
    received = bytearray()
    while chunk := await wait(loop.sock_recv(sock, nbytes)):
        assert len(chunk) <= nbytes
        received += chunk
        if nbytes == 1 and len(received) == 10:
            break  # one byte at a time: ten of them show the point
    assert received == payload[: len(received)]
    assert nbytes == 1 or len(received) == len(payload)


async def test_sock_recv_of_zero_bytes_is_empty(sockets: Sockets) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair("tcp4")
    peer.sendall(b"kept")
    wait_readable(sock)
    assert await wait(loop.sock_recv(sock, 0)) == b""
    assert await wait(loop.sock_recv(sock, 10)) == b"kept"


class RecordingSocket(socket.socket):
    """A socket.socket subclass with recv and send of its own: asyncio's sock_* methods call
    them, so a loop must too (not the descriptor behind them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def recv(self, n: int, *args: Any) -> bytes:
        self.calls.append(("recv", n))
        return super().recv(n, *args)

    def send(self, data: Any, *args: Any) -> int:
        self.calls.append(("send", len(data)))
        return super().send(data, *args)

    def accept(self) -> tuple[socket.socket, Any]:
        self.calls.append(("accept", 0))
        return super().accept()


@pytest.mark.parametrize("nbytes", [1024, 128 * 1024])
async def test_sock_methods_call_a_socket_subclass_own_recv_and_send(
    sockets: Sockets, nbytes: int
) -> None:
    loop = asyncio.get_running_loop()
    plain, peer = sockets.stream_pair("unix")
    sock = sockets.track(RecordingSocket(fileno=plain.detach()))
    sock.setblocking(False)
    await wait(loop.sock_sendall(sock, b"ping"))
    assert peer.recv(16) == b"ping"
    peer.sendall(b"pong")
    wait_readable(sock)
    assert await wait(loop.sock_recv(sock, nbytes)) == b"pong"
    assert sock.calls == [("send", 4), ("recv", nbytes)]


@pytest.mark.parametrize(
    ("method", "argument", "error"),
    [
        pytest.param("sock_recv", -1, ValueError, id="recv-negative"),
        pytest.param("sock_recv", 1.5, TypeError, id="recv-float"),
        pytest.param("sock_recv", "10", TypeError, id="recv-str"),
        pytest.param("sock_sendall", "text", TypeError, id="sendall-str"),
        pytest.param("sock_sendall", 42, TypeError, id="sendall-int"),
    ],
)
async def test_sock_bad_arguments_raise_as_asyncio(
    sockets: Sockets, method: str, argument: Any, error: type[Exception]
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair("tcp4")
    peer.sendall(b"unread")
    wait_readable(sock)
    with pytest.raises(error):
        await wait(getattr(loop, method)(sock, argument))
    assert await wait(loop.sock_recv(sock, 10)) == b"unread"  # the socket still works


@pytest.mark.parametrize("method", ["sock_recv", "sock_sendall"])
async def test_sock_methods_on_a_closed_socket_raise_ebadf(
    sockets: Sockets, method: str, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    sock, _ = sockets.stream_pair("tcp4")
    sock.close()
    argument = 10 if method == "sock_recv" else b"data"
    try:
        await wait(getattr(loop, method)(sock, argument))
    except OSError as exc:
        assert exc.errno == errno.EBADF
    except ValueError as exc:
        if loop_name != "uvloop":
            raise
        pytest.xfail(f"uvloop: ValueError for the closed socket's fd -1 ({exc})")
    else:
        pytest.fail(f"{method} on a closed socket did not raise")


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_recv_into(sockets: Sockets, kind: str, when: str) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    buf = bytearray(b"." * 16)
    # Into a slice of the buffer, through a memoryview: the bytes land at offset 4.
    n = await completes(
        lambda: loop.sock_recv_into(sock, memoryview(buf)[4:]),
        lambda: peer.sendall(b"hello"),
        sock,
        when,
    )
    assert n == 5
    assert buf == b"....hello......."


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_recv_into_fills_at_most_the_buffer(sockets: Sockets, kind: str) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    peer.sendall(b"abcdefgh")
    wait_readable(sock)
    buf = bytearray(3)
    assert await wait(loop.sock_recv_into(sock, buf)) == 3
    assert buf == b"abc"


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind", DGRAM_KINDS)
async def test_sock_recvfrom(sockets: Sockets, kind: str, when: str, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_recvfrom")
    sock, peer = sockets.dgram_pair(kind)
    data, address = await completes(
        lambda: loop.sock_recvfrom(sock, 1024),
        lambda: peer.sendto(b"datagram", sock.getsockname()),
        sock,
        when,
    )
    assert data == b"datagram"
    assert address == peer.getsockname()


@pytest.mark.parametrize("kind", DGRAM_KINDS)
async def test_sock_recvfrom_keeps_datagram_boundaries_and_truncates(
    sockets: Sockets, kind: str, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_recvfrom")
    sock, peer = sockets.dgram_pair(kind)
    peer.sendto(b"first datagram", sock.getsockname())
    peer.sendto(b"second", sock.getsockname())
    wait_readable(sock)
    # bufsize 5: the rest of the first datagram is lost, the second one is whole.
    assert await wait(loop.sock_recvfrom(sock, 5)) == (b"first", peer.getsockname())
    wait_readable(sock)
    assert await wait(loop.sock_recvfrom(sock, 100)) == (b"second", peer.getsockname())


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind", DGRAM_KINDS)
async def test_sock_recvfrom_into(sockets: Sockets, kind: str, when: str, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_recvfrom_into")
    sock, peer = sockets.dgram_pair(kind)
    buf = bytearray(b"." * 16)
    n, address = await completes(
        lambda: loop.sock_recvfrom_into(sock, buf),  # nbytes=0: the whole buffer
        lambda: peer.sendto(b"datagram", sock.getsockname()),
        sock,
        when,
    )
    assert (n, address) == (8, peer.getsockname())
    assert buf == b"datagram........"


@pytest.mark.parametrize("kind", DGRAM_KINDS)
async def test_sock_recvfrom_into_with_nbytes(sockets: Sockets, kind: str, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_recvfrom_into")
    sock, peer = sockets.dgram_pair(kind)
    buf = bytearray(b"." * 16)
    peer.sendto(b"datagram", sock.getsockname())
    wait_readable(sock)
    # Only nbytes of the buffer are written to, although it has room for the whole datagram.
    n, address = await wait(loop.sock_recvfrom_into(sock, buf, 4))
    assert (n, address) == (4, peer.getsockname())
    assert buf == b"data............"


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_recv_returns_empty_bytes_when_the_peer_closes(
    sockets: Sockets, kind: str, when: str
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    assert await completes(lambda: loop.sock_recv(sock, 1024), peer.close, sock, when) == b""


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_recv_gets_the_data_sent_before_the_close_then_empty_bytes(
    sockets: Sockets, kind: str
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    peer.sendall(b"last words")
    peer.close()
    wait_readable(sock)
    assert await wait(loop.sock_recv(sock, 1024)) == b"last words"
    assert await wait(loop.sock_recv(sock, 1024)) == b""


def reset(peer: socket.socket) -> None:
    """Close *peer* abortively: SO_LINGER with a zero timeout makes the close send a RST."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind", TCP_KINDS)
async def test_sock_recv_raises_connection_reset_when_the_peer_resets(
    sockets: Sockets, kind: str, when: str
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    with pytest.raises(ConnectionResetError):
        await completes(lambda: loop.sock_recv(sock, 1024), lambda: reset(peer), sock, when)


# -- sending ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("buffer_type", [bytes, bytearray, memoryview])
async def test_sock_sendall_small(sockets: Sockets, kind: str, buffer_type: type) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    assert await wait(loop.sock_sendall(sock, buffer_type(b"hello"))) is None
    assert await wait(loop.sock_sendall(sock, buffer_type(b""))) is None
    assert await wait(loop.sock_sendall(sock, buffer_type(b" world"))) is None
    sock.shutdown(socket.SHUT_WR)
    assert read_all(peer) == b"hello world"


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(16 << 20)


def shrink_buffers(sock: socket.socket, peer: socket.socket) -> None:
    """Small kernel buffers on the way from *sock* to *peer*: many partial sends."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_sendall_16_mib_to_a_slow_reader_in_a_thread(
    sockets: Sockets, kind: str, payload: bytes
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    shrink_buffers(sock, peer)
    reader = in_thread(slow_digest, peer)
    with then_eof(sock):
        assert await wait(loop.sock_sendall(sock, payload)) is None
    assert await wait(reader) == (len(payload), hashlib.sha256(payload).hexdigest())


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_sendall_16_mib_to_a_reader_task(
    sockets: Sockets, kind: str, payload: bytes
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    peer.setblocking(False)
    shrink_buffers(sock, peer)
    reader = asyncio.ensure_future(loop_digest(peer))
    with then_eof(sock):
        assert await wait(loop.sock_sendall(sock, memoryview(payload))) is None
    assert await wait(reader) == (len(payload), hashlib.sha256(payload).hexdigest())


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_sendall_and_sock_recv_at_once_on_each_socket(
    sockets: Sockets, kind: str, payload: bytes
) -> None:
    """Both ends send 4 MiB while receiving: a reader and a writer on the same fd at once."""
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    peer.setblocking(False)
    shrink_buffers(sock, peer)
    shrink_buffers(peer, sock)
    outbound, inbound = payload[: 4 << 20], payload[4 << 20 : 8 << 20]

    async def send(sock: socket.socket, data: bytes) -> None:
        with then_eof(sock):
            await loop.sock_sendall(sock, data)

    results = await wait(
        asyncio.gather(
            send(sock, outbound), send(peer, inbound), loop_digest(sock), loop_digest(peer)
        )
    )
    assert results[2] == (len(inbound), hashlib.sha256(inbound).hexdigest())
    assert results[3] == (len(outbound), hashlib.sha256(outbound).hexdigest())


@pytest.mark.parametrize("kind", DGRAM_KINDS)
async def test_sock_sendto(sockets: Sockets, kind: str, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_sendto")
    sock, peer = sockets.dgram_pair(kind)
    assert await wait(loop.sock_sendto(sock, b"datagram", peer.getsockname())) == 8
    assert await wait(loop.sock_sendto(sock, memoryview(b"two"), peer.getsockname())) == 3
    assert peer.recvfrom(100) == (b"datagram", sock.getsockname())
    assert peer.recvfrom(100) == (b"two", sock.getsockname())


# -- connecting and accepting -----------------------------------------------------------------


async def exchange(loop: asyncio.AbstractEventLoop, sock: socket.socket, peer: socket.socket):
    """Bytes go both ways between *sock* (non-blocking, on the loop) and *peer* (blocking)."""
    await wait(loop.sock_sendall(sock, b"ping"))
    assert peer.recv(100) == b"ping"
    peer.sendall(b"pong")
    assert await wait(loop.sock_recv(sock, 100)) == b"pong"


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_connect(sockets: Sockets, kind: str) -> None:
    loop = asyncio.get_running_loop()
    listener = sockets.listener(kind)
    sock = sockets.new(listener.family)
    sock.setblocking(False)
    assert await wait(loop.sock_connect(sock, listener.getsockname())) is None
    assert sock.getpeername() == listener.getsockname()
    peer = sockets.track(listener.accept()[0])
    await exchange(loop, sock, peer)


async def test_sock_connect_resolves_a_host_name(sockets: Sockets) -> None:
    loop = asyncio.get_running_loop()
    listener = sockets.listener("tcp4")
    port = listener.getsockname()[1]
    sock = sockets.new(socket.AF_INET)
    sock.setblocking(False)
    await wait(loop.sock_connect(sock, ("localhost", port)))
    assert sock.getpeername() == ("127.0.0.1", port)
    peer = sockets.track(listener.accept()[0])
    await exchange(loop, sock, peer)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_connect_refused(sockets: Sockets, kind: str) -> None:
    loop = asyncio.get_running_loop()
    # Bound but not listening: the address is ours, and nobody accepts there.
    target = sockets.bound(kind)
    sock = sockets.new(target.family)
    sock.setblocking(False)
    with pytest.raises(ConnectionRefusedError):
        await wait(loop.sock_connect(sock, target.getsockname()))


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_sock_accept(sockets: Sockets, kind: str, when: str) -> None:
    loop = asyncio.get_running_loop()
    listener = sockets.listener(kind)
    listener.setblocking(False)
    clients: list[socket.socket] = []
    conn, address = await completes(
        lambda: loop.sock_accept(listener),
        lambda: clients.append(sockets.client_of(listener)),
        listener,
        when,
    )
    sockets.track(conn)
    assert conn.getblocking() is False
    assert conn.gettimeout() == 0
    assert type(conn) is socket.socket
    assert (conn.family, conn.type, conn.proto) == (listener.family, listener.type, listener.proto)
    assert not conn.get_inheritable()  # close-on-exec, as every socket Python makes
    assert address == clients[0].getsockname()
    assert conn.getpeername() == clients[0].getsockname()
    await exchange(loop, conn, clients[0])


async def test_sock_accept_on_abstract_unix_addresses(sockets: Sockets) -> None:
    loop = asyncio.get_running_loop()
    name = b"\0epolloop-test-" + os.urandom(8).hex().encode()
    listener = sockets.track(socket.socket(socket.AF_UNIX))
    listener.bind(name)
    listener.listen()
    listener.setblocking(False)
    client = sockets.track(socket.socket(socket.AF_UNIX))
    client.bind(name + b"-client")
    client.connect(name)
    conn, address = await wait(loop.sock_accept(listener))
    sockets.track(conn)
    assert address == name + b"-client"  # bytes, as socket.accept() gives them
    assert conn.getsockname() == name
    await exchange(loop, conn, client)


async def test_sock_accept_calls_a_socket_subclass_own_accept(sockets: Sockets) -> None:
    loop = asyncio.get_running_loop()
    plain = sockets.listener("unix")
    listener = sockets.track(RecordingSocket(fileno=plain.detach()))
    listener.setblocking(False)
    client = sockets.client_of(listener)
    conn, address = await wait(loop.sock_accept(listener))
    sockets.track(conn)
    assert listener.calls == [("accept", 0)]
    assert conn.gettimeout() == 0
    assert address == client.getsockname()


# -- cancellation -----------------------------------------------------------------------------


async def cancel(task: asyncio.Future[Any]) -> None:
    """Cancel the pending *task* and let the cancellation run its course."""
    if task.done():
        task.result()  # an exception explains more than the failure below
        pytest.fail(f"the operation was meant to be pending, it returned {task.result()!r}")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def leftovers(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple[Any, Any]:
    """(remove_reader, remove_writer) on *sock*: (False, False) when nothing was registered."""
    return loop.remove_reader(sock), loop.remove_writer(sock)


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_cancelled_sock_recv_leaves_nothing_behind(
    sockets: Sockets, kind: str, method: str, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    arg = 1024 if method == "sock_recv" else bytearray(1024)
    task = asyncio.ensure_future(getattr(loop, method)(sock, arg))
    await spin()
    await cancel(task)
    after_cancel = leftovers(loop, sock)
    peer.sendall(b"after")
    assert await wait(loop.sock_recv(sock, 100)) == b"after"
    after_recv = leftovers(loop, sock)
    xfail_uvloop_remove_result(loop_name)
    assert after_cancel == (False, False)
    assert after_recv == (False, False)


async def test_cancelled_sock_recvfrom_leaves_nothing_behind(
    sockets: Sockets, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_recvfrom")
    sock, peer = sockets.dgram_pair("udp4")
    task = asyncio.ensure_future(loop.sock_recvfrom(sock, 1024))
    await spin()
    await cancel(task)
    after_cancel = leftovers(loop, sock)
    peer.sendto(b"after", sock.getsockname())
    assert await wait(loop.sock_recvfrom(sock, 100)) == (b"after", peer.getsockname())
    assert after_cancel == (False, False)
    assert leftovers(loop, sock) == (False, False)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_cancelled_sock_accept_leaves_nothing_behind(
    sockets: Sockets, kind: str, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    listener = sockets.listener(kind)
    listener.setblocking(False)
    task = asyncio.ensure_future(loop.sock_accept(listener))
    await spin()
    await cancel(task)
    after_cancel = leftovers(loop, listener)
    client = sockets.client_of(listener)
    conn, address = await wait(loop.sock_accept(listener))
    sockets.track(conn)
    assert address == client.getsockname()
    after_accept = leftovers(loop, listener)
    xfail_uvloop_remove_result(loop_name)
    assert after_cancel == (False, False)
    assert after_accept == (False, False)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_cancelled_sock_sendall_leaves_nothing_behind(
    sockets: Sockets, kind: str, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair(kind)
    shrink_buffers(sock, peer)
    # Far more than the kernel buffers hold, and the peer does not read: it stays pending.
    task = asyncio.ensure_future(loop.sock_sendall(sock, bytes(8 << 20)))
    await spin()
    await cancel(task)
    after_cancel = leftovers(loop, sock)
    peer.sendall(b"after")
    assert await wait(loop.sock_recv(sock, 100)) == b"after"
    xfail_uvloop_remove_result(loop_name)
    assert after_cancel == (False, False)


@pytest.mark.parametrize("kind", TCP_KINDS)
async def test_cancelled_sock_connect_leaves_nothing_behind(
    sockets: Sockets, kind: str, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    # A full accept queue: backlog 0 holds one connection; the kernel then drops new SYNs, so
    # a connect stays in progress.
    listener = sockets.listener(kind, backlog=0)
    sockets.client_of(listener)
    wait_readable(listener)  # that connection is in the queue
    sock = sockets.new(listener.family)
    sock.setblocking(False)
    task = asyncio.ensure_future(loop.sock_connect(sock, listener.getsockname()))
    await spin()
    await cancel(task)
    after_cancel = leftovers(loop, sock)
    xfail_uvloop_remove_result(loop_name)
    assert after_cancel == (False, False)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_completed_operations_leave_nothing_behind(
    sockets: Sockets, kind: str, loop_name: str
) -> None:
    """Operations that had to wait unregister their socket when they complete."""
    loop = asyncio.get_running_loop()
    listener = sockets.listener(kind)
    listener.setblocking(False)
    accepting = asyncio.ensure_future(loop.sock_accept(listener))
    await spin()
    sock = sockets.new(listener.family)
    sock.setblocking(False)
    await wait(loop.sock_connect(sock, listener.getsockname()))
    conn = sockets.track((await wait(accepting))[0])
    results = [leftovers(loop, listener), leftovers(loop, sock)]

    receiving = asyncio.ensure_future(loop.sock_recv(conn, 100))
    await spin()
    await wait(loop.sock_sendall(sock, b"x"))
    assert await wait(receiving) == b"x"
    results.append(leftovers(loop, conn))

    shrink_buffers(sock, conn)
    conn.settimeout(GUARD)  # from now on, read by a thread
    reader = in_thread(read_all, conn)
    with then_eof(sock):
        await wait(loop.sock_sendall(sock, bytes(4 << 20)))  # has to wait for the reader
    assert len(await wait(reader)) == 4 << 20
    results.append(leftovers(loop, sock))
    xfail_uvloop_remove_result(loop_name)
    assert results == [(False, False)] * 4


# -- sockets the loop refuses -----------------------------------------------------------------

SOCK_METHODS = [
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendto",
    "sock_connect",
    "sock_accept",
    "sock_sendfile",
]


def prepared_call(
    method: str, sockets: Sockets, tmp_path: Path, make_bad: Callable[[socket.socket], None]
) -> Callable[[asyncio.AbstractEventLoop], Awaitable[Any]]:
    """A call of the loop's *method* on a socket that *make_bad* spoils (made blocking, ...),
    arranged so that a loop that does not refuse the socket completes the call at once
    instead of blocking: the data is there, the connection is queued, and so on."""
    if method in ("sock_recv", "sock_recv_into", "sock_sendall", "sock_sendfile"):
        sock, peer = sockets.stream_pair("unix")
        peer.sendall(b"data")
        wait_readable(sock)
        make_bad(sock)
        if method == "sock_recv":
            return lambda loop: loop.sock_recv(sock, 100)
        if method == "sock_recv_into":
            return lambda loop: loop.sock_recv_into(sock, bytearray(100))
        if method == "sock_sendall":
            return lambda loop: loop.sock_sendall(sock, b"data")
        path = tmp_path / "small"
        path.write_bytes(b"file contents")

        async def sendfile(loop: asyncio.AbstractEventLoop) -> int:
            with path.open("rb") as file:
                return await loop.sock_sendfile(sock, file)

        return sendfile
    if method in ("sock_recvfrom", "sock_recvfrom_into", "sock_sendto"):
        sock, peer = sockets.dgram_pair("udp4")
        peer.sendto(b"data", sock.getsockname())
        wait_readable(sock)
        make_bad(sock)
        if method == "sock_recvfrom":
            return lambda loop: loop.sock_recvfrom(sock, 100)
        if method == "sock_recvfrom_into":
            return lambda loop: loop.sock_recvfrom_into(sock, bytearray(100))
        return lambda loop: loop.sock_sendto(sock, b"data", peer.getsockname())
    listener = sockets.listener("tcp4")
    if method == "sock_connect":
        sock = sockets.new(socket.AF_INET)
        make_bad(sock)
        return lambda loop: loop.sock_connect(sock, listener.getsockname())
    assert method == "sock_accept"
    sockets.client_of(listener)
    wait_readable(listener)
    make_bad(listener)

    async def accept(loop: asyncio.AbstractEventLoop) -> Any:
        conn, address = await loop.sock_accept(listener)
        sockets.track(conn)
        return conn, address

    return accept


BLOCKING_MODES = {
    "blocking": lambda sock: sock.setblocking(True),
    "timeout": lambda sock: sock.settimeout(GUARD),
}


@pytest.mark.parametrize("mode", list(BLOCKING_MODES))
@pytest.mark.parametrize("method", SOCK_METHODS)
def test_blocking_socket_is_refused_in_debug_mode(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    sockets: Sockets,
    tmp_path: Path,
    method: str,
    mode: str,
    loop_name: str,
) -> None:
    """asyncio checks that the socket is non-blocking (timeout 0) only in debug mode."""
    loop = new_loop()
    if method in UVLOOP_LACKS:
        xfail_if_uvloop_lacks(loop, loop_name, method)
    call = prepared_call(method, sockets, tmp_path, BLOCKING_MODES[mode])
    loop.set_debug(True)
    with pytest.raises(ValueError):
        loop.run_until_complete(call(loop))


@pytest.mark.epolloop_only  # asyncio and uvloop check only in debug mode
@pytest.mark.parametrize("mode", list(BLOCKING_MODES))
@pytest.mark.parametrize("method", SOCK_METHODS)
def test_blocking_socket_is_refused_outside_debug_mode(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    sockets: Sockets,
    tmp_path: Path,
    method: str,
    mode: str,
) -> None:
    call = prepared_call(method, sockets, tmp_path, BLOCKING_MODES[mode])
    loop = new_loop()
    assert not loop.get_debug()
    with pytest.raises(ValueError):
        loop.run_until_complete(call(loop))


@pytest.mark.parametrize("method", SOCK_METHODS)
async def test_ssl_socket_is_refused(sockets: Sockets, method: str, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    listener = sockets.listener("tcp4")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    sock = context.wrap_socket(
        sockets.new(socket.AF_INET), server_hostname="localhost", do_handshake_on_connect=False
    )
    sockets.track(sock)
    sock.setblocking(False)
    arguments = {
        "sock_recv": (100,),
        "sock_recv_into": (bytearray(100),),
        "sock_recvfrom": (100,),
        "sock_recvfrom_into": (bytearray(100),),
        "sock_sendall": (b"data",),
        "sock_sendto": (b"data", listener.getsockname()),
        "sock_connect": (listener.getsockname(),),
        "sock_accept": (),
        "sock_sendfile": (io.BytesIO(b"data"),),
    }
    try:
        await wait(getattr(loop, method)(sock, *arguments[method]))
    except TypeError:
        return
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    else:
        outcome = "no exception"
    # Outside the except clauses: no chained traceback to format, which is slow.
    if loop_name == "uvloop":
        pytest.xfail(f"uvloop does not refuse an ssl.SSLSocket ({outcome})")
    pytest.fail(f"an ssl.SSLSocket was not refused with TypeError: {outcome}")


# -- name resolution --------------------------------------------------------------------------

GETADDRINFO_CASES = [
    pytest.param(("127.0.0.1", 80), {}, id="ipv4-int-port"),
    pytest.param(("127.0.0.1", "8080"), {"type": socket.SOCK_STREAM}, id="ipv4-str-port"),
    pytest.param(("127.0.0.1", None), {"type": socket.SOCK_DGRAM}, id="ipv4-no-port"),
    pytest.param((b"127.0.0.1", b"80"), {"type": socket.SOCK_STREAM}, id="ipv4-bytes"),
    pytest.param(
        ("::1", 443),
        {"family": socket.AF_INET6, "type": socket.SOCK_STREAM},
        id="ipv6-numeric",
        marks=needs_ipv6,
    ),
    pytest.param(("::1", "53"), {"proto": socket.IPPROTO_UDP}, id="ipv6-udp", marks=needs_ipv6),
    pytest.param(("localhost", 80), {"family": socket.AF_INET}, id="localhost-inet"),
    pytest.param(("localhost", "80"), {}, id="localhost-any-family"),
    pytest.param(("localhost", None), {"type": socket.SOCK_STREAM}, id="localhost-no-port"),
    pytest.param(
        ("localhost", 0),
        {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "flags": socket.AI_CANONNAME},
        id="localhost-canonname",
    ),
    pytest.param(
        (None, 8080),
        {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "flags": socket.AI_PASSIVE},
        id="passive",
    ),
    pytest.param(
        (None, 8080), {"family": socket.AF_INET, "type": socket.SOCK_STREAM}, id="no-host"
    ),
    pytest.param(("127.0.0.1", 80), {"proto": socket.IPPROTO_TCP}, id="proto-tcp"),
    pytest.param(
        ("127.0.0.1", "80"),
        {"flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV},
        id="numeric-flags",
    ),
]


@pytest.mark.parametrize(("args", "kwargs"), GETADDRINFO_CASES)
async def test_getaddrinfo_agrees_with_socket_getaddrinfo(
    args: tuple[Any, Any], kwargs: dict[str, int]
) -> None:
    loop = asyncio.get_running_loop()
    expected = socket.getaddrinfo(*args, **kwargs)
    infos = await wait(loop.getaddrinfo(*args, **kwargs))
    assert sorted(infos) == sorted(expected)
    for family, type_, *_ in infos:
        assert isinstance(family, socket.AddressFamily)
        assert isinstance(type_, socket.SocketKind)


@pytest.mark.parametrize(
    ("host", "port", "type_", "expected"),
    [
        pytest.param(
            "127.0.0.1",
            80,
            socket.SOCK_STREAM,
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80)),
            id="ipv4",
        ),
        pytest.param(
            "::1",
            "80",
            socket.SOCK_DGRAM,
            (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("::1", 80, 0, 0)),
            id="ipv6",
            marks=needs_ipv6,
        ),
    ],
)
async def test_getaddrinfo_of_a_numeric_host(
    host: str, port: int | str, type_: int, expected: tuple[Any, ...]
) -> None:
    loop = asyncio.get_running_loop()
    assert await wait(loop.getaddrinfo(host, port, type=type_)) == [expected]


GETADDRINFO_ERRORS = [
    pytest.param(("256.256.256.256", 80), {"flags": socket.AI_NUMERICHOST}, id="bad-numeric"),
    pytest.param(
        ("localhost", 80),
        {"family": socket.AF_INET, "flags": socket.AI_NUMERICHOST},
        id="name-with-numerichost",
    ),
    pytest.param(("localhost", "no-such-service"), {"type": socket.SOCK_STREAM}, id="bad-service"),
    pytest.param((None, None), {}, id="nothing"),
]


@pytest.mark.parametrize(("args", "kwargs"), GETADDRINFO_ERRORS)
async def test_getaddrinfo_of_a_bad_host_raises_gaierror(
    args: tuple[Any, Any], kwargs: dict[str, int]
) -> None:
    """Hosts that fail without asking DNS (the test machine may have none)."""
    loop = asyncio.get_running_loop()
    with pytest.raises(socket.gaierror) as expected:
        socket.getaddrinfo(*args, **kwargs)
    with pytest.raises(socket.gaierror) as raised:
        await wait(loop.getaddrinfo(*args, **kwargs))
    assert raised.value.errno == expected.value.errno


async def test_many_getaddrinfo_calls_at_once() -> None:
    loop = asyncio.get_running_loop()
    queries = [
        (host, port, socket.SOCK_STREAM if port % 2 else socket.SOCK_DGRAM)
        for port in range(1000, 1200)
        for host in ("127.0.0.1", "localhost")
    ]
    expected = [socket.getaddrinfo(host, port, type=type_) for host, port, type_ in queries]
    results = await wait(
        asyncio.gather(*(loop.getaddrinfo(host, port, type=type_) for host, port, type_ in queries))
    )
    assert [sorted(infos) for infos in results] == [sorted(infos) for infos in expected]


GETNAMEINFO_CASES = [
    pytest.param(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV, id="numeric"),
    pytest.param(("127.0.0.1", 80), 0, id="names"),
    pytest.param(("127.0.0.1", 8080), socket.NI_NAMEREQD | socket.NI_DGRAM, id="namereqd-dgram"),
    pytest.param(
        ("::1", 80, 0, 0),
        socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
        id="ipv6-numeric",
        marks=needs_ipv6,
    ),
]


@pytest.mark.parametrize(("sockaddr", "flags"), GETNAMEINFO_CASES)
async def test_getnameinfo_agrees_with_socket_getnameinfo(
    sockaddr: tuple[Any, ...], flags: int
) -> None:
    loop = asyncio.get_running_loop()
    assert await wait(loop.getnameinfo(sockaddr, flags)) == socket.getnameinfo(sockaddr, flags)


async def test_getnameinfo_numeric() -> None:
    loop = asyncio.get_running_loop()
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert await wait(loop.getnameinfo(("127.0.0.1", 80), flags)) == ("127.0.0.1", "80")


# -- sock_sendfile ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    contents = os.urandom(8 << 20)
    path = tmp_path_factory.mktemp("sendfile") / "big"
    path.write_bytes(contents)
    return path, contents


SENDFILE_KINDS = ["unix", "tcp4"]


@pytest.mark.parametrize("kind", SENDFILE_KINDS)
async def test_sock_sendfile_large_file(
    sockets: Sockets, kind: str, big_file: tuple[Path, bytes], loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_sendfile")
    path, contents = big_file
    sock, peer = sockets.stream_pair(kind)
    shrink_buffers(sock, peer)
    reader = in_thread(slow_digest, peer)
    with then_eof(sock), path.open("rb") as file:
        assert await wait(loop.sock_sendfile(sock, file)) == len(contents)
        assert file.tell() == len(contents)
    assert await wait(reader) == (len(contents), hashlib.sha256(contents).hexdigest())


SENDFILE_RANGES = [
    pytest.param(0, None, id="whole"),
    pytest.param(1000, None, id="offset"),
    pytest.param(0, 5000, id="count"),
    pytest.param(1000, 5000, id="offset-count"),
    pytest.param(100_000, 1 << 20, id="count-past-the-end"),
]
SMALL = os.urandom(100_003)


@pytest.mark.parametrize(("offset", "count"), SENDFILE_RANGES)
@pytest.mark.parametrize("source", ["file", "bytesio"])
async def test_sock_sendfile_offset_and_count(
    sockets: Sockets, tmp_path: Path, source: str, offset: int, count: int | None, loop_name: str
) -> None:
    """The bytes [offset, offset + count) are sent; the file position is offset + sent
    afterwards. A BytesIO has no fd: the default fallback sends it. (For a file with an fd the
    position before does not matter; the fallback, though, reads from the current position
    when offset is 0, so the BytesIO starts at 0.)"""
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_sendfile")
    sock, peer = sockets.stream_pair("unix")
    expected = SMALL[offset:] if count is None else SMALL[offset : offset + count]
    reader = in_thread(read_all, peer)
    if source == "file":
        path = tmp_path / "small"
        path.write_bytes(SMALL)
        file: Any = path.open("rb")
    else:
        file = io.BytesIO(SMALL)
    with then_eof(sock), file:
        if source == "file":
            file.seek(123)
        sent = await wait(loop.sock_sendfile(sock, file, offset, count))
        assert sent == len(expected)
        assert file.tell() == offset + sent
    assert await wait(reader) == expected


async def test_sock_sendfile_without_fallback_refuses_a_file_without_fd(
    sockets: Sockets,
    loop_name: str,
) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_sendfile")
    sock, peer = sockets.stream_pair("unix")
    file = io.BytesIO(b"no fd behind me")
    with pytest.raises(asyncio.SendfileNotAvailableError):
        await wait(loop.sock_sendfile(sock, file, fallback=False))
    assert file.tell() == 0
    sock.shutdown(socket.SHUT_WR)
    assert read_all(peer) == b""


@pytest.mark.parametrize("source", ["file", "bytesio"])
async def test_sock_sendfile_of_an_empty_file(
    sockets: Sockets, tmp_path: Path, source: str, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_sendfile")
    sock, peer = sockets.stream_pair("unix")
    path = tmp_path / "empty"
    path.write_bytes(b"")
    file: Any = path.open("rb") if source == "file" else io.BytesIO()
    with file:
        assert await wait(loop.sock_sendfile(sock, file)) == 0
        assert file.tell() == 0
    sock.shutdown(socket.SHUT_WR)
    assert read_all(peer) == b""


SENDFILE_BAD_PARAMS = [
    pytest.param({"mode": "r"}, ValueError, id="text-mode"),
    pytest.param({"kind": "unix_dgram"}, ValueError, id="datagram-socket"),
    pytest.param({"count": 0}, ValueError, id="count-0"),
    pytest.param({"count": -1}, ValueError, id="count-negative"),
    pytest.param({"offset": -1}, ValueError, id="offset-negative"),
    pytest.param({"count": "10"}, TypeError, id="count-str"),
    pytest.param({"count": 10.0}, TypeError, id="count-float"),
    pytest.param({"offset": "0"}, TypeError, id="offset-str"),
    pytest.param({"offset": 1.5}, TypeError, id="offset-float"),
]


@pytest.mark.parametrize(("bad", "error"), SENDFILE_BAD_PARAMS)
async def test_sock_sendfile_bad_parameters(
    sockets: Sockets, tmp_path: Path, bad: dict[str, Any], error: type[Exception], loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    xfail_if_uvloop_lacks(loop, loop_name, "sock_sendfile")
    kind = bad.get("kind", "unix")
    sock = sockets.stream_pair(kind)[0] if kind == "unix" else sockets.dgram_pair(kind)[0]
    path = tmp_path / "small"
    path.write_bytes(b"file contents")
    with path.open(bad.get("mode", "rb")) as file:
        with pytest.raises(error):
            await wait(loop.sock_sendfile(sock, file, bad.get("offset", 0), bad.get("count")))
        assert file.tell() == 0


# -- the registration of a read wait ----------------------------------------------------------
# epolloop keeps a finished read wait's one-shot registration in the kernel, disarmed, for
# the fd's next wait (_add_waiting_reader); these hold on every loop all the same.


class BlocksTwice(socket.socket):
    """A socket whose first two recv calls say they would block, data or not: a readiness
    that the try it allows finds nothing after all (another reader took the data first)."""

    refusals = 2

    def recv(self, n: int, *args: Any) -> bytes:
        if self.refusals:
            self.refusals -= 1
            raise BlockingIOError(errno.EAGAIN, "taken by someone else")
        return super().recv(n, *args)


async def test_sock_recv_waits_on_after_a_readiness_that_found_nothing(
    sockets: Sockets,
) -> None:
    loop = asyncio.get_running_loop()
    plain, peer = sockets.stream_pair("unix")
    sock = sockets.track(BlocksTwice(fileno=plain.detach()))
    sock.setblocking(False)
    receiving = asyncio.ensure_future(loop.sock_recv(sock, 100))
    await spin(2)  # the first try said it would block: the wait is registered
    peer.sendall(b"there all along")
    assert await wait(receiving) == b"there all along"
    assert sock.refusals == 0


async def finish_a_read_wait(sock: socket.socket, peer: socket.socket) -> None:
    """A sock_recv on *sock* that waits (nothing has come yet) and then gets what *peer* sends."""
    receiving = asyncio.ensure_future(asyncio.get_running_loop().sock_recv(sock, 100))
    await spin(2)  # the first try said it would block: the wait is registered
    peer.sendall(b"one")
    assert await wait(receiving) == b"one"


async def test_sock_recv_on_a_number_reused_after_a_finished_wait(sockets: Sockets) -> None:
    """A read wait finishes on a socket, which is then closed while a duplicate keeps it
    open; the next socket gets its number. Waits on the new socket work, and data for the
    old one (through the duplicate) wakes nothing."""
    loop = asyncio.get_running_loop()
    first, first_peer = sockets.stream_pair("unix")
    await finish_a_read_wait(first, first_peer)
    number = first.fileno()
    duplicate = sockets.track(first.dup())
    first.close()
    second, second_peer = socket.socketpair()
    sockets.track(second), sockets.track(second_peer)
    if second.fileno() != number:
        os.dup2(second.fileno(), number)  # (the lowest free number, unless another came free)
        second.close()
        second = sockets.track(socket.socket(fileno=number))
    second.setblocking(False)
    first_peer.sendall(b"for the duplicate")  # its file is readable now, under no wait
    receiving = asyncio.ensure_future(loop.sock_recv(second, 100))
    await spin(3)
    assert not receiving.done()
    second_peer.sendall(b"two")
    assert await wait(receiving) == b"two"
    assert duplicate.recv(100) == b"for the duplicate"


@pytest.mark.epolloop_only
async def test_a_finished_read_wait_leaves_nothing_that_reports(sockets: Sockets) -> None:
    """The registration a finished read wait leaves in the kernel is disarmed: with the
    socket closed while a duplicate keeps its file open (so the kernel keeps the
    registration), data for that file puts nothing in the epoll instance's ready list,
    which would otherwise be reported at every poll."""
    loop = asyncio.get_running_loop()
    sock, peer = sockets.stream_pair("unix")
    await finish_a_read_wait(sock, peer)
    duplicate = sockets.track(sock.dup())
    sock.close()
    peer.sendall(b"unread")
    select.select([duplicate], [], [], GUARD)  # the data is there
    assert not select.select([loop._epoll_fd], [], [], 0)[0], "the epoll instance reports it"
    await spin(3)
    assert duplicate.recv(100) == b"unread"
