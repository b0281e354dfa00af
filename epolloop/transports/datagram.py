"""The datagram transport: UDP and Unix datagram sockets, with asyncio's semantics.

Each readiness event reads one datagram and hands it to ``datagram_received(data, addr)``. An
OSError on a datagram socket is news about one datagram, not the end of the transport: the
kernel reports an ICMP error (port unreachable, say) on the next call on a connected socket,
and asyncio passes such errors to ``error_received(exc)`` and carries on. Only an exception
from the protocol itself is fatal.

``sendto`` sends at once while the kernel takes datagrams and queues (data, address) pairs
when it would block; flow control (flow.py) counts the queued bytes. A transport made with a
remote address sends only there: ``sendto(data)`` or ``sendto(data, that_address)``. Empty
datagrams follow the running Python's asyncio: sent, and counted with 8 bytes of header by
flow control, from 3.13; silently dropped before.
"""

from __future__ import annotations

import collections
import socket
import sys
from asyncio import DatagramTransport, Transport
from typing import Any

from .base import FdTransport, Reading, SocketExtra
from .flow import WriteFlowControl

# From 3.13 asyncio sends empty datagrams, and counts 8 bytes of UDP header for each queued
# one so that empty ones still weigh on flow control; before, it dropped them.
_SENDS_EMPTY = sys.version_info >= (3, 13)
_HEADER_SIZE = 8 if _SENDS_EMPTY else 0


class DatagramSocketTransport(
    SocketExtra, Reading, WriteFlowControl, FdTransport, Transport, DatagramTransport
):
    """A datagram socket driven by the loop's epoll reactor. Like asyncio's, it is also an
    ``asyncio.Transport`` (so it can pause and resume reading); the stream-only methods of
    that class are not its own."""

    def __init__(
        self,
        loop: Any,
        sock: socket.socket,
        protocol: Any,
        address: Any = None,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._address = address  # the only destination, when made with a remote address
        self._buffer: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._buffer_size = 0
        super().__init__(loop, sock, protocol, waiter, extra)
        self._connected = self.get_extra_info("peername") is not None
        loop._transports.add(self._fd, self)

    def _start(self) -> None:
        self._start_reading()

    def _read_ready(self) -> None:
        if self._conn_lost:
            return
        try:
            buffer = self._loop._read_buffer()
            nbytes, addr = self._sock.recvfrom_into(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return
        self._protocol.datagram_received(buffer[:nbytes].tobytes(), addr)

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if not data and not _SENDS_EMPTY:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost:
            self._write_after_loss()
            return
        if not self._buffer:
            if self._sent(data, addr):
                return
            self._loop._add_writer(self._fd, self._send_queued)
        self._buffer.append((bytes(data), addr))  # the caller may reuse a mutable buffer
        self._buffer_size += len(data) + _HEADER_SIZE
        self._maybe_pause_protocol()

    def _sent(self, data: Any, addr: Any) -> bool:
        """Try to send one datagram: False if the kernel would block; True once it is dealt
        with (sent, or its error reported)."""
        try:
            if self._connected:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._protocol.error_received(exc)  # news about this datagram: carry on
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal write error on datagram transport")
        return True

    def _send_queued(self) -> None:
        buffer = self._buffer
        while buffer:
            data, addr = buffer[0]
            if not self._sent(data, addr):
                break  # the rest waits for the next writable event
            if self._conn_lost:
                return  # a fatal error closed the transport and emptied the queue
            buffer.popleft()
            self._buffer_size -= len(data) + _HEADER_SIZE
        self._maybe_resume_protocol()  # may send, and so queue more
        if not buffer:
            self._loop._remove_writer(self._fd)
            if self._closing:
                self._conn_lost += 1
                self._call_connection_lost(None)
