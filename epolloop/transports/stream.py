"""The stream transport: TCP and Unix stream sockets, with asyncio's semantics.

Built from the parts in base.py (lifecycle, byte reading, queued writing); what is the
socket's own lives here: the connection's addresses, TCP_NODELAY, half-close with
shutdown(SHUT_WR), a peer's EOF that the protocol may answer by staying half-open, the server
that accepted the connection, and loop.sendfile's hand-over of the socket.
"""

from __future__ import annotations

import socket
from asyncio import BufferedProtocol, Protocol, Transport, constants
from typing import Any

from .._native import core
from .base import ByteReading, FdTransport, QueuedWriting, SocketExtra


class StreamTransport(SocketExtra, ByteReading, QueuedWriting, FdTransport, Transport):
    """A connected stream socket (TCP or Unix) driven by the loop's epoll reactor."""

    def __init__(
        self,
        loop: Any,
        sock: socket.socket,
        protocol: Protocol | BufferedProtocol,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
        peer: Any = None,
    ) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            # Small writes go out at once, as asyncio does for its TCP transports.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(loop, sock, protocol, waiter, extra)
        if peer is not None:
            self._peer = peer
        if server is not None:
            self._server = server
            server._attach(self)
        loop._transports.add(self._fd, self)

    def _start(self) -> None:
        self._start_reading()

    def _shut_write(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    # -- sendfile support (loop.sendfile) ------------------------------------------------------

    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def _make_empty_waiter(self) -> Any:
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if not self._buffer:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self) -> None:
        self._empty_waiter = None


if core is not None:

    class CStreamTransport(core.StreamTransportBase, StreamTransport):  # type: ignore[misc]
        """StreamTransport with its hot paths in C (epolloop/_core/stream.c): both read paths
        and write()'s direct send. Off those paths the C methods call back into the Python
        parts, write() into QueuedWriting's as _write_slowly."""

        _write_slowly = QueuedWriting.write

else:
    CStreamTransport = StreamTransport  # type: ignore[misc]
