"""Sockets on the loop: sock_* coroutines, DNS, connections, servers, sendfile and TLS.

``Networking`` is a mixin of ``Loop``: it needs the reactor's ``_add_reader`` /
``_add_waiting_reader`` / ``_add_writer`` / ``_remove_reader`` / ``_remove_writer`` and the
loop's futures and executor, and gives the loop every socket-facing method of
``asyncio.AbstractEventLoop`` with asyncio's semantics.

The sock_* coroutines try the system call first and register with epoll only when it would
block; the watcher goes away when the operation finishes or is cancelled (a read wait's
one-shot registration stays in the kernel, disarmed, for the fd's next wait: see
_add_waiting_reader). Connections and accepted sockets become ``StreamTransport``s; TLS is
the stdlib's memory-BIO ``SSLProtocol`` layered over one, as asyncio does it. Datagram
endpoints become ``DatagramSocketTransport``s.
"""

from __future__ import annotations

import collections.abc
import errno
import functools
import io
import itertools
import os
import socket
import stat
import sys
from asyncio import (
    Protocol,
    SendfileNotAvailableError,
    constants,
    sslproto,
    staggered,
    tasks,
    trsock,
)
from asyncio.log import logger
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from . import _linux
from .server import Server
from .transports.base import connected
from .transports.datagram import DatagramSocketTransport
from .transports.registry import TransportRegistry
from .transports.stream import StreamTransport

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover - CPython without OpenSSL
    _ssl = None  # type: ignore[assignment]

_READ_BUFFER_SIZE = 256 * 1024  # the loop's buffer for reads that copy out what arrived
_HEAP_READ_LIMIT = 64 * 1024  # sock_recv(n) up to this makes its object directly (see _recv)
_SENDFILE_FALLBACK_BLOCK = 256 * 1024  # bytes read per step when os.sendfile cannot be used
_TRANSPORT_SENDFILE_FALLBACK_BLOCK = 16 * 1024  # loop.sendfile's fallback, as asyncio
# create_datagram_endpoint(sock=a stream socket) says so in the running Python's words.
_DATAGRAM_SOCKET_EXPECTED = (
    "A datagram socket was expected" if sys.version_info >= (3, 13) else "A UDP Socket was expected"
)


def _check_ssl_socket(sock: Any) -> None:
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _is_numeric_host(host: Any) -> bool:
    """True for an IPv4 or IPv6 literal: resolving it needs no DNS and no thread."""
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str) or "%" in host:  # zone ids ("fe80::1%lo") go the slow way
        return False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


def _interleave_addrinfos(infos: list[Any], first_family_count: int = 1) -> list[Any]:
    """RFC 8305 section 4: alternate address families, *first_family_count* of the first
    family before the first address of the next."""
    by_family: dict[int, list[Any]] = collections.OrderedDict()
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    families = list(by_family.values())
    ordered: list[Any] = []
    if first_family_count > 1:
        ordered.extend(families[0][: first_family_count - 1])
        families[0] = families[0][first_family_count - 1 :]
    for group in itertools.zip_longest(*families):
        ordered.extend(info for info in group if info is not None)
    return ordered


def _check_timeouts_need_ssl(
    ssl: Any, ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None
) -> None:
    if ssl_handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _bind_error(address: Any, exc: OSError) -> OSError:
    return OSError(
        exc.errno, f"error while attempting to bind on address {address!r}: {str(exc).lower()}"
    )


class Networking:
    """The socket-facing half of Loop (a mixin; see the module docstring)."""

    _transports: TransportRegistry
    # The transport of connected stream sockets: the C core's loop sets its own.
    _StreamTransport: type[StreamTransport] = StreamTransport
    _read_view: memoryview | None = None

    def _read_buffer(self) -> memoryview:
        """The loop's one 256 KiB buffer for reads that copy out what arrived (byte streams
        for a Protocol; datagrams: larger than any UDP datagram, as large as most Unix ones).
        A fresh 256 KiB object per read, as recv(256 KiB) makes, costs glibc an mmap, an
        mremap and a munmap each time. One per loop, not per process: socket calls release
        the GIL, and another thread's loop may read meanwhile (the C core's reads do not,
        and share one buffer)."""
        if self._read_view is None:
            self._read_view = memoryview(bytearray(_READ_BUFFER_SIZE))
        return self._read_view

    # -- fd ownership -------------------------------------------------------------------------

    def _ensure_fd_no_transport(self, fd: Any) -> None:
        """Refuse user watchers and sock_* calls on an fd a live transport owns."""
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if (
            transport is not None
            and not transport.is_closing()
            and transport._empty_waiter is None  # else loop.sendfile lent it its socket
        ):
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        self._ensure_fd_no_transport(fd)
        super().add_reader(fd, callback, *args)  # type: ignore[misc]

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        self._ensure_fd_no_transport(fd)
        super().add_writer(fd, callback, *args)  # type: ignore[misc]

    def remove_reader(self, fd: Any) -> bool:
        self._ensure_fd_no_transport(fd)
        return super().remove_reader(fd)  # type: ignore[misc]

    def remove_writer(self, fd: Any) -> bool:
        self._ensure_fd_no_transport(fd)
        return super().remove_writer(fd)  # type: ignore[misc]

    # -- low-level socket operations ----------------------------------------------------------

    def _check_sock(self, sock: socket.socket) -> None:
        _check_ssl_socket(sock)
        # asyncio checks this in debug mode only; a blocking socket would stall the whole loop,
        # so epolloop always refuses one.
        if sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    def _wait_readable(
        self, sock: socket.socket, operation: Callable[[], Any], none_means_wait: bool = False
    ) -> Awaitable[Any]:
        """Retry *operation* each time *sock* is readable until it stops raising
        BlockingIOError; its result (or exception) completes the wait. Operations look the
        socket's method up on every try, as asyncio does (tests swap them on mocks). With
        *none_means_wait* the operation answers None instead of raising (the core's
        _recv_now and _accept_now: no exception per try, no Python frame on the C core)."""
        return self._wait_ready(
            sock, operation, self._add_waiting_reader, self._remove_reader, none_means_wait
        )

    def _wait_writable(self, sock: socket.socket, operation: Callable[[], Any]) -> Awaitable[Any]:
        return self._wait_ready(sock, operation, self._add_writer, self._remove_writer)

    async def _wait_ready(
        self,
        sock: socket.socket,
        operation: Callable[[], Any],
        add: Callable[..., Any],
        remove: Callable[[int], bool],
        none_means_wait: bool = False,
    ) -> Any:
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        future = self.create_future()  # type: ignore[attr-defined]
        handle = add(fd, _complete_when_ready, future, operation, none_means_wait)
        try:
            return await future
        finally:  # done, or the task cancelled (or closed) while it waited
            # Unless another operation has taken over the fd since (it replaced our handle).
            if not handle.cancelled():
                remove(fd)
            future = None  # a failure's traceback holds this frame: no cycle through it

    def _recv(self, sock: socket.socket, n: int) -> bytes:
        """sock.recv(n) without its trap for large n: recv makes an n-byte object first,
        which glibc maps fresh (mmap, mremap, munmap) for each read once n passes its mmap
        threshold (128 KiB). Those reads go through the loop's buffer and copy out what
        arrived; smaller ones (and sockets of other types, whose recv may be their own) call
        recv itself."""
        if not _through_read_buffer(sock, n):
            return sock.recv(n)
        buffer = self._read_buffer()
        return bytes(buffer[: sock.recv_into(buffer, n)])

    def _recvfrom(self, sock: socket.socket, n: int) -> tuple[bytes, Any]:
        """sock.recvfrom(n), as _recv is sock.recv(n)."""
        if not _through_read_buffer(sock, n):
            return sock.recvfrom(n)
        buffer = self._read_buffer()
        size, address = sock.recvfrom_into(buffer, n)
        return bytes(buffer[:size]), address

    # The first try of sock_recv, sock_sendall and accepting, a hot path: the C core has its
    # own (_core.recv_now, send_now, accept_now, accept_connection, peer_address), which does
    # not raise to say it would block.

    def _recv_now(self, sock: socket.socket, n: int) -> bytes | None:
        """What sock.recv(n) returns now, or None if it would block."""
        try:
            return self._recv(sock, n)
        except (BlockingIOError, InterruptedError):
            return None

    def _send_now(self, sock: socket.socket, data: Any) -> int:
        """How many bytes of *data* the socket takes now (0 if it would block)."""
        try:
            return sock.send(data, socket.MSG_NOSIGNAL)  # EPIPE, never SIGPIPE
        except (BlockingIOError, InterruptedError):
            return 0

    def _accept_now(self, sock: socket.socket) -> tuple[socket.socket, Any] | None:
        """What sock.accept() returns now, the connection made non-blocking; None if no
        connection waits."""
        try:
            conn, address = sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        return conn, address

    # A server's accept: the peer as the loop keeps it (see _peer_address); here, as it came.
    _accept_connection = _accept_now

    @staticmethod
    def _peer_address(peer: Any) -> Any:
        """The address of a peer that _accept_connection gave. The C core keeps an IP address
        as the kernel wrote it until asked, to spare every idle connection the Python form."""
        return peer

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        self._check_sock(sock)
        data = self._recv_now(sock, n)
        if data is None:
            operation = functools.partial(self._recv_now, sock, n)
            data = await self._wait_readable(sock, operation, none_means_wait=True)
        return data

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        self._check_sock(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return await self._wait_readable(sock, lambda: sock.recv_into(buf))

    async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> tuple[bytes, Any]:
        self._check_sock(sock)
        try:
            return self._recvfrom(sock, bufsize)
        except (BlockingIOError, InterruptedError):
            return await self._wait_readable(sock, lambda: self._recvfrom(sock, bufsize))

    async def sock_recvfrom_into(
        self, sock: socket.socket, buf: Any, nbytes: int = 0
    ) -> tuple[int, Any]:
        self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            return await self._wait_readable(sock, lambda: sock.recvfrom_into(buf, nbytes))

    async def sock_sendto(self, sock: socket.socket, data: Any, address: Any) -> int:
        self._check_sock(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            return await self._wait_writable(sock, lambda: sock.sendto(data, address))

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        self._check_sock(sock)
        sent = self._send_now(sock, data)
        if type(data) in (bytes, bytearray) and sent == len(data):
            return  # hot path: all of it went, no view needed (len counts bytes here)
        view = memoryview(data).cast("B")
        if sent == len(view):
            return
        remaining = [view[sent:]]

        def send_more() -> None:
            chunk = remaining[0]
            sent = sock.send(chunk, socket.MSG_NOSIGNAL)
            if sent < len(chunk):
                remaining[0] = chunk[sent:]
                raise BlockingIOError  # not done: wait for the next writable event

        await self._wait_writable(sock, send_more)

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        self._check_sock(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not (
            _is_numeric_host(address[0]) and isinstance(address[1], int)
        ):
            infos = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto
            )
            address = infos[0][4]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass

        def connected() -> None:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error != 0:
                raise OSError(error, f"Connect call failed {address}")

        await self._wait_writable(sock, connected)

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        self._check_sock(sock)
        accepted = self._accept_now(sock)
        if accepted is None:
            operation = functools.partial(self._accept_now, sock)
            accepted = await self._wait_readable(sock, operation, none_means_wait=True)
        return accepted

    # -- sendfile on a socket ------------------------------------------------------------------

    async def sock_sendfile(
        self,
        sock: socket.socket,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        """Send *file* over *sock* with os.sendfile (zero-copy); when the file cannot be sent
        that way, read and send it in chunks unless *fallback* is false."""
        self._check_sock(sock)
        _check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(
        self, sock: socket.socket, file: Any, offset: int, count: int | None
    ) -> int:
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise SendfileNotAvailableError("not a regular file") from None
        try:
            size = os.fstat(fileno).st_size
        except OSError:
            raise SendfileNotAvailableError("not a regular file") from None
        if not (count or size):
            return 0  # an empty file
        sent = 0

        def send_more() -> int:
            nonlocal offset, sent
            while True:
                want = (count - sent) if count else (1 << 30)
                if want <= 0:
                    return sent
                try:
                    n = _linux.sendfile(sock.fileno(), fileno, offset, want)
                except OSError as exc:
                    if isinstance(exc, (BlockingIOError, InterruptedError)):
                        raise
                    if sent == 0:
                        # Not a file sendfile() can read (a pipe, a special file): fall back.
                        raise SendfileNotAvailableError("os.sendfile call failed") from exc
                    raise
                if n == 0:  # end of file
                    return sent
                offset += n
                sent += n

        try:
            try:
                return send_more()
            except (BlockingIOError, InterruptedError):
                return await self._wait_writable(sock, send_more)
        finally:
            if sent:
                # asyncio leaves the file position after what was sent.
                os.lseek(fileno, offset, os.SEEK_SET)

    async def _sock_sendfile_fallback(
        self, sock: socket.socket, file: Any, offset: int, count: int | None
    ) -> int:
        if offset:
            file.seek(offset)
        blocksize = min(count, _SENDFILE_FALLBACK_BLOCK) if count else _SENDFILE_FALLBACK_BLOCK
        buf = bytearray(blocksize)
        total = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)  # type: ignore[attr-defined]
                if not read:
                    break
                await self.sock_sendall(sock, view[:read])
                total += read
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    # -- DNS ----------------------------------------------------------------------------------

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        """socket.getaddrinfo in the default executor; numeric hosts (and None) resolve here
        and now, since no DNS is involved."""
        if host is None or _is_numeric_host(host):
            numeric = flags | (socket.AI_NUMERICHOST if host is not None else 0)
            return socket.getaddrinfo(host, port, family, type, proto, numeric)
        return await self.run_in_executor(  # type: ignore[attr-defined]
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)  # type: ignore[attr-defined]

    async def _ensure_resolved(
        self,
        address: Any,
        *,
        family: int = 0,
        type: int = socket.SOCK_STREAM,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        host, port = address[:2]
        return await self.getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )

    # -- connections --------------------------------------------------------------------------

    async def create_connection(
        self,
        protocol_factory: Callable[[], Any],
        host: str | None = None,
        port: int | str | None = None,
        *,
        ssl: Any = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: socket.socket | None = None,
        local_addr: Any = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[Any, Any]:
        """Connect to host:port (trying each address, or racing them RFC 8305 style when
        happy_eyeballs_delay is given) or adopt *sock*; wrap it in a transport."""
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        _check_timeouts_need_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1  # RFC 8305: interleave address families when racing

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self._ensure_resolved(
                (host, port), family=family, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            local_infos = None
            if local_addr is not None:
                local_infos = await self._ensure_resolved(
                    local_addr, family=family, proto=proto, flags=flags
                )
                if not local_infos:
                    raise OSError("getaddrinfo() returned empty list")
            if interleave:
                infos = _interleave_addrinfos(infos, interleave)
            sock = await self._connect_any(infos, local_infos, happy_eyeballs_delay, all_errors)
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")

        transport, protocol = await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self._debug:  # type: ignore[attr-defined]
            logger.debug("%r connected to %s:%r: (%r, %r)", sock, host, port, transport, protocol)
        return transport, protocol

    async def _connect_any(
        self,
        infos: list[Any],
        local_infos: list[Any] | None,
        happy_eyeballs_delay: float | None,
        all_errors: bool,
    ) -> socket.socket:
        """The first socket that connects to one of *infos*, or the errors of them all."""
        errors: list[list[OSError]] = []
        sock = None
        if happy_eyeballs_delay is None:
            for info in infos:
                try:
                    sock = await self._connect_sock(errors, info, local_infos)
                    break
                except OSError:
                    continue
        else:
            attempts = (
                functools.partial(self._connect_sock, errors, info, local_infos) for info in infos
            )
            sock, _, _ = await staggered.staggered_race(attempts, happy_eyeballs_delay, loop=self)
        if sock is not None:
            return sock
        flat = [exc for attempt in errors for exc in attempt]
        try:
            if all_errors:
                raise ExceptionGroup("create_connection failed", flat)
            if len(flat) == 1 or all(str(exc) == str(flat[0]) for exc in flat):
                raise flat[0]
            raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in flat)}")
        finally:
            del flat, errors  # the raised error's traceback must not keep the others alive

    async def _connect_sock(
        self, errors: list[list[OSError]], info: Any, local_infos: list[Any] | None
    ) -> socket.socket:
        mine: list[OSError] = []
        errors.append(mine)
        family, type_, proto, _, address = info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_infos is not None:
                for local_family, _, _, _, local_address in local_infos:
                    if local_family != family:
                        continue
                    try:
                        sock.bind(local_address)
                        break
                    except OSError as exc:
                        mine.append(_bind_error(local_address, exc))
                else:
                    if mine:
                        raise mine.pop()
                    raise OSError(f"no matching local address with family={family!r} found")
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            mine.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            errors = mine = None  # type: ignore[assignment]  # (as in _wait_ready)

    async def create_unix_connection(
        self,
        protocol_factory: Callable[[], Any],
        path: str | bytes | os.PathLike[str] | None = None,
        *,
        ssl: Any = None,
        sock: socket.socket | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[Any, Any]:
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            _check_timeouts_need_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory: Callable[[], Any],
        sock: socket.socket,
        *,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[Any, Any]:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        _check_timeouts_need_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        _check_ssl_socket(sock)
        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            "",
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def _create_connection_transport(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], Any],
        ssl: Any,
        server_hostname: str | None,
        server_side: bool = False,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[Any, Any]:
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()  # type: ignore[attr-defined]
        if ssl:
            context = None if isinstance(ssl, bool) else ssl
            transport = self._make_ssl_transport(
                sock,
                protocol,
                context,
                waiter,
                server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        else:
            transport = self._StreamTransport(self, sock, protocol, waiter)
        await connected(transport, waiter)
        return transport, protocol

    def _make_ssl_transport(
        self,
        sock: socket.socket,
        protocol: Any,
        context: Any,
        waiter: Any,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        extra: dict[str, Any] | None = None,
        server: Server | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> Any:
        tls = sslproto.SSLProtocol(
            self,
            protocol,
            context,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        self._StreamTransport(self, sock, tls, extra=extra, server=server)
        return tls._app_transport

    async def start_tls(
        self,
        transport: Any,
        protocol: Any,
        sslcontext: Any,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> Any:
        """Upgrade an open connection to TLS; return the new (TLS) transport."""
        if _ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()  # type: ignore[attr-defined]
        tls = sslproto.SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False,
        )
        # Pause first, so the TLS protocol sees no data before its connection_made.
        transport.pause_reading()
        transport.set_protocol(tls)
        connection_made = self.call_soon(tls.connection_made, transport)  # type: ignore[attr-defined]
        resume = self.call_soon(transport.resume_reading)  # type: ignore[attr-defined]
        try:
            await waiter
        except BaseException:
            transport.close()
            connection_made.cancel()
            resume.cancel()
            raise
        return tls._app_transport

    # -- servers ------------------------------------------------------------------------------

    async def create_server(
        self,
        protocol_factory: Callable[[], Any],
        host: str | Iterable[str] | None = None,
        port: int | str | None = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server:
        """Listen on host:port (every address it resolves to; every interface for None or
        '') or on *sock*; each accepted connection gets protocol_factory()."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_timeouts_need_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = True  # POSIX: restart a server without waiting for TIME_WAIT
            sockets = await self._bind_server_sockets(
                host, port, family, flags, reuse_address, reuse_port, keep_alive
            )
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]
        for listener in sockets:
            listener.setblocking(False)
        server = Server(
            self,
            sockets,
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        if start_serving:
            await server.start_serving()
        if self._debug:  # type: ignore[attr-defined]
            logger.info("%r is serving", server)
        return server

    async def _bind_server_sockets(
        self,
        host: Any,
        port: Any,
        family: int,
        flags: int,
        reuse_address: bool,
        reuse_port: bool | None,
        keep_alive: bool | None,
    ) -> list[socket.socket]:
        if host == "":
            hosts: list[Any] = [None]
        elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
            hosts = [host]
        else:
            hosts = list(host)
        resolved = await tasks.gather(
            *(self._ensure_resolved((h, port), family=family, flags=flags) for h in hosts)
        )
        for h, infos in zip(hosts, resolved, strict=True):
            if not infos:
                raise OSError(f"getaddrinfo({h!r}) returned empty list")
        infos = set(itertools.chain.from_iterable(resolved))
        sockets: list[socket.socket] = []
        completed = False
        try:
            for af, socktype, proto, _, address in infos:
                try:
                    sock = socket.socket(af, socktype, proto)
                except OSError:
                    # A family this machine does not support (IPv6 disabled, say).
                    if self._debug:  # type: ignore[attr-defined]
                        logger.warning(
                            "create_server() failed to create socket.socket(%r, %r, %r)",
                            af,
                            socktype,
                            proto,
                            exc_info=True,
                        )
                    continue
                sockets.append(sock)
                if reuse_address:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                if reuse_port:
                    _set_reuse_port(sock)
                if keep_alive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                if af == socket.AF_INET6:
                    # One socket per family: Linux would otherwise let the IPv6 socket take
                    # IPv4 too, and the IPv4 bind would fail with "address in use".
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                try:
                    sock.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRNOTAVAIL:
                        # The address family is not configured here (bpo-30945): skip it.
                        sockets.pop()
                        sock.close()
                        if self._debug:  # type: ignore[attr-defined]
                            logger.warning(str(_bind_error(address, exc)))
                        continue
                    raise _bind_error(address, exc) from None
            if not sockets:
                raise OSError(
                    f"could not bind on any address out of {[info[4] for info in infos]!r}"
                )
            completed = True
        finally:
            if not completed:
                for sock in sockets:
                    sock.close()
        return sockets

    async def create_unix_server(
        self,
        protocol_factory: Callable[[], Any],
        path: str | bytes | os.PathLike[str] | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
        cleanup_socket: bool | None = None,
    ) -> Server:
        """Listen on a Unix socket *path* (a leading NUL: the abstract namespace) or *sock*.
        With cleanup_socket the socket file is removed when the server closes; the default
        is the running Python's (True from 3.13, whose asyncio added it; before, programs
        remove the file themselves)."""
        if cleanup_socket is None:
            cleanup_socket = sys.version_info >= (3, 13)
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_timeouts_need_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            if not _is_abstract(path):
                _remove_stale_unix_socket(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        unix_paths = {}
        if cleanup_socket:
            bound = sock.getsockname()
            if bound and not _is_abstract(bound):
                try:
                    unix_paths[sock] = (bound, _linux.stat(bound).st_ino)
                except FileNotFoundError:
                    pass
        sock.setblocking(False)
        server = Server(
            self,
            [sock],
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            unix_paths,
        )
        if start_serving:
            await server.start_serving()
        return server

    # -- datagram endpoints -------------------------------------------------------------------

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: Any = None,
        remote_addr: Any = None,
        *,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        sock: socket.socket | None = None,
    ) -> tuple[DatagramSocketTransport, Any]:
        """A datagram endpoint bound to *local_addr* and/or sending to *remote_addr* (a
        connected socket, unless *allow_broadcast*), or over an existing *sock*."""
        remote_address = None
        if sock is not None:
            if sock.type != socket.SOCK_DGRAM and (
                sock.type == socket.SOCK_STREAM or sys.version_info < (3, 13)
            ):
                # 3.13 takes any socket but a stream one (SOCK_SEQPACKET, say); before, UDP only.
                raise ValueError(f"{_DATAGRAM_SOCKET_EXPECTED}, got {sock!r}")
            modifiers = {
                "local_addr": local_addr,
                "remote_addr": remote_addr,
                "family": family,
                "proto": proto,
                "flags": flags,
                "reuse_port": reuse_port,
                "allow_broadcast": allow_broadcast,
            }
            problems = ", ".join(f"{key}={value}" for key, value in modifiers.items() if value)
            if problems:
                raise ValueError(
                    "socket modifier keyword arguments can not be used when sock is "
                    f"specified. ({problems})"
                )
            sock.setblocking(False)
        else:
            candidates = await self._datagram_address_pairs(
                local_addr, remote_addr, family, proto, flags
            )
            errors: list[OSError] = []
            for (sock_family, sock_proto), (local_address, remote) in candidates:
                try:
                    sock = await self._open_datagram_socket(
                        sock_family, sock_proto, local_address, remote, reuse_port, allow_broadcast
                    )
                except OSError as exc:
                    errors.append(exc)
                else:
                    remote_address = remote
                    break
            else:
                raise errors[0]
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = DatagramSocketTransport(self, sock, protocol, remote_address, waiter)
        if self._debug:
            logger.debug(
                "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                local_addr,
                remote_addr,
                transport,
                protocol,
            )
        await connected(transport, waiter)
        return transport, protocol

    async def _datagram_address_pairs(
        self, local_addr: Any, remote_addr: Any, family: int, proto: int, flags: int
    ) -> list[tuple[tuple[int, int], tuple[Any, Any]]]:
        """The (family, proto) → (local address, remote address) choices to try in order: one
        for each family in which every given address resolves."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            return [((family, proto), (None, None))]
        if family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr and not _is_abstract(local_addr):
                _remove_stale_unix_socket(local_addr)
            return [((family, proto), (local_addr, remote_addr))]
        pairs: dict[tuple[int, int], list[Any]] = {}  # insertion order: the resolver's
        for index, addr in enumerate((local_addr, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                raise TypeError("2-tuple is expected")
            infos = await self._ensure_resolved(
                addr, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for info_family, _, info_proto, _, address in infos:
                pairs.setdefault((info_family, info_proto), [None, None])[index] = address
        usable = [
            (key, (local, remote))
            for key, (local, remote) in pairs.items()
            if not (local_addr and local is None) and not (remote_addr and remote is None)
        ]
        if not usable:
            raise ValueError("can not get address information")
        return usable

    async def _open_datagram_socket(
        self,
        family: int,
        proto: int,
        local_address: Any,
        remote_address: Any,
        reuse_port: bool | None,
        allow_broadcast: bool | None,
    ) -> socket.socket:
        sock = socket.socket(family=family, type=socket.SOCK_DGRAM, proto=proto)
        try:
            if reuse_port:
                _set_reuse_port(sock)
            if allow_broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            if local_address:
                sock.bind(local_address)
            if remote_address and not allow_broadcast:
                # Connected: the kernel filters what arrives and reports ICMP errors to us.
                # A broadcast endpoint stays unconnected and addresses each datagram.
                await self.sock_connect(sock, remote_address)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- the accept path ----------------------------------------------------------------------

    def _start_serving(self, server: Server, sock: socket.socket) -> None:
        self._add_reader(sock.fileno(), self._accept_connections, server, sock)

    def _stop_serving(self, sock: socket.socket) -> None:
        self._remove_reader(sock.fileno())

    def _accept_connections(self, server: Server, sock: socket.socket) -> None:
        # Hot path for servers: up to a backlog's worth of connections per wake-up.
        for _ in range(server._backlog):
            try:
                accepted = self._accept_connection(sock)
            except ConnectionAbortedError:
                accepted = None  # the peer gave up already: as good as an empty queue
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise  # the loop's exception handler reports it; the server goes on
                self._pause_accepting(server, sock, exc)
                return
            if accepted is None:
                server._starved = False  # caught up with the listen queue
                return
            conn, peer = accepted
            self._serve_connection(server, conn, peer)

    def _pause_accepting(self, server: Server, sock: socket.socket, exc: OSError) -> None:
        # Out of descriptors or memory. The listening socket stays readable, so watching it
        # would spin: stop until one of this server's connections closes (a descriptor came
        # free: Server._detach resumes at once) or ACCEPT_RETRY_DELAY passes (one freed
        # elsewhere). Waiting clients stay in the listen queue and are served then. The
        # condition is reported once, and again only after the server has caught up with its
        # listen queue: not at every retry, nor every time one closed connection lets one
        # more in.
        if not server._starved:
            server._starved = True
            self.call_exception_handler(  # type: ignore[attr-defined]
                {
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": trsock.TransportSocket(sock),
                }
            )
        self._remove_reader(sock.fileno())
        server._paused[sock] = self.call_later(  # type: ignore[attr-defined]
            constants.ACCEPT_RETRY_DELAY, self._resume_accepting, server, sock
        )

    def _resume_accepting(self, server: Server, sock: socket.socket) -> None:
        retry = server._paused.pop(sock, None)
        if retry is None:
            return
        retry.cancel()
        if server._sockets is not None and sock in server._sockets:
            self._start_serving(server, sock)

    def _serve_connection(self, server: Server, conn: socket.socket, peer: Any) -> None:
        if server._ssl_context is not None:
            # The TLS handshake takes round trips: it runs in a task of its own.
            extra = {"peername": self._peer_address(peer)}
            self.create_task(self._serve_tls_connection(server, conn, extra))  # type: ignore[attr-defined]
            return
        protocol = None
        try:
            protocol = server._protocol_factory()
            self._StreamTransport(self, conn, protocol, server=server, peer=peer)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            self._report_accept_failure(exc, protocol, None)

    async def _serve_tls_connection(
        self, server: Server, conn: socket.socket, extra: dict[str, Any]
    ) -> None:
        protocol = transport = None
        try:
            protocol = server._protocol_factory()
            waiter = self.create_future()  # type: ignore[attr-defined]
            transport = self._make_ssl_transport(
                conn,
                protocol,
                server._ssl_context,
                waiter,
                server_side=True,
                extra=extra,
                server=server,
                ssl_handshake_timeout=server._ssl_handshake_timeout,
                ssl_shutdown_timeout=server._ssl_shutdown_timeout,
            )
            try:
                await waiter
            except BaseException:
                transport.close()
                waiter = None  # no cycle through the exception (gh-109534)
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            self._report_accept_failure(exc, protocol, transport)

    def _report_accept_failure(self, exc: BaseException, protocol: Any, transport: Any) -> None:
        # As asyncio: a connection that could not be set up is worth a report in debug mode.
        if self._debug:  # type: ignore[attr-defined]
            context: dict[str, Any] = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            if transport is not None:
                context["transport"] = transport
            self.call_exception_handler(context)  # type: ignore[attr-defined]

    # -- sendfile on a transport --------------------------------------------------------------

    async def sendfile(
        self,
        transport: Any,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        """Send *file* over *transport*: zero-copy os.sendfile on a plain socket transport,
        otherwise (TLS, or a file sendfile() cannot read) by writing chunks."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        mode = getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)
        if mode is constants._SendfileMode.UNSUPPORTED:
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if mode is constants._SendfileMode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not supported for transport "
                f"{transport!r}"
            )
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(
        self, transport: StreamTransport, file: Any, offset: int, count: int | None
    ) -> int:
        # The transport lends its socket to sock_sendfile while its _empty_waiter is set
        # (_ensure_fd_no_transport lets the fd through meanwhile).
        drained = transport._make_empty_waiter()  # refused if another sendfile holds it
        resume_reading = transport.is_reading()
        transport.pause_reading()
        try:
            await drained  # (a cancellation here too is undone by the finally)
            return await self.sock_sendfile(
                transport._sock,
                file,
                offset,
                count,
                fallback=False,  # type: ignore[arg-type]
            )
        finally:
            transport._reset_empty_waiter()
            if resume_reading:
                transport.resume_reading()

    async def _sendfile_fallback(
        self, transport: Any, file: Any, offset: int, count: int | None
    ) -> int:
        if offset:
            file.seek(offset)
        blocksize = (
            min(count, _TRANSPORT_SENDFILE_FALLBACK_BLOCK)
            if count
            else _TRANSPORT_SENDFILE_FALLBACK_BLOCK
        )
        buf = bytearray(blocksize)
        total = 0
        proto = _SendfileDrain(self, transport)
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        return total
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)  # type: ignore[attr-defined]
                if not read:
                    return total
                await proto.drain()
                transport.write(view[:read])
                total += read
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)
            await proto.restore()


class _SendfileDrain(Protocol):
    """Stands in for a transport's protocol while loop.sendfile writes chunks to it: reading
    is paused, and the transport's pause_writing / resume_writing become a drain() to await.
    restore() gives the transport back to its protocol."""

    def __init__(self, loop: Any, transport: Any) -> None:
        self._loop = loop
        self._transport = transport
        self._protocol = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        self._resume_writing = transport._protocol_paused
        transport.pause_reading()
        transport.set_protocol(self)
        self._writable: Any = loop.create_future() if self._resume_writing else None

    async def drain(self) -> None:
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._writable is not None:
            await self._writable

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set_result(None)
            self._writable = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._writable is not None:
            self._writable.set_exception(exc or ConnectionError("Connection is closed by peer"))
        self._protocol.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self) -> bool | None:
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self) -> None:
        self._transport.set_protocol(self._protocol)
        if self._resume_reading:
            self._transport.resume_reading()
        if self._writable is not None:
            self._writable.cancel()
        if self._resume_writing:
            self._protocol.resume_writing()


def _through_read_buffer(sock: socket.socket, n: int) -> bool:
    """Whether a read of up to *n* bytes goes through the loop's buffer (see Networking._recv):
    too large for the heap, small enough for the buffer, and the socket's recv is socket's."""
    return _HEAP_READ_LIMIT < n <= _READ_BUFFER_SIZE and type(sock) is socket.socket


def _complete_when_ready(future: Any, operation: Callable[[], Any], none_means_wait: bool) -> None:
    """Reader/writer callback of the sock_* operations: one more try."""
    if future.done():
        return
    try:
        result = operation()
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        future.set_exception(exc)
        future = None  # its traceback holds this frame: no cycle through it
    else:
        if result is not None or not none_means_wait:
            future.set_result(result)


def _check_sendfile_params(sock: socket.socket, file: Any, offset: int, count: int | None) -> None:
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if not sock.type == socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


def _set_reuse_port(sock: socket.socket) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def _is_abstract(path: str | bytes) -> bool:
    return path[0] in (0, "\0")


def _remove_stale_unix_socket(path: str | bytes) -> None:
    """A socket file left by a server that died is removed, as asyncio does; anything else
    at that path is left alone (bind will then fail with "address in use")."""
    try:
        if stat.S_ISSOCK(_linux.stat(path).st_mode):
            _linux.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
