"""What every fd transport shares: the lifecycle, the byte read paths and the write queue.

A transport is assembled from these parts (stream.py, pipes.py, datagram.py):

- ``FdTransport``, the lifecycle: ``connection_made`` is called soon after construction, then
  the transport's ``_start`` (reading starts only after the protocol knows its transport);
  ``close()`` stops reading, flushes the queue, then closes; ``abort()`` drops the queue and
  closes now. ``connection_lost`` runs exactly once, always from the loop (never inside the
  caller's ``close()``), after which the fd is closed and its epoll registration already gone.
  An OSError (reset, broken pipe) ends the connection quietly with ``connection_lost(exc)``;
  any other exception, which can only come from the protocol, is also reported to the loop's
  exception handler. Either way only this transport is affected.
- ``Reading``: pause_reading / resume_reading, for any transport that reads.
- ``ByteReading``: the read strategy is chosen once, when the protocol is set, by binding
  ``_read_ready`` to the method for the protocol's kind: a ``BufferedProtocol`` gets the bytes
  straight into its own buffer (recv_into), a ``Protocol`` gets ``bytes``. An empty read is
  the peer's EOF.
- ``QueuedWriting``: ``write()`` sends at once while the kernel takes the bytes; the rest is
  queued and flushed, many buffers in one vectored send, when epoll says the fd is writable.
  Flow control (flow.py) tells the protocol to pause and resume as the queue crosses its
  water marks.

The parts drive ``self._sock`` through the socket methods only (recv, recv_into, send,
sendmsg, close): a pipe transport hands them an object with the same methods over os.read and
os.write, so one copy of each hot path serves sockets and pipes alike.
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
import warnings
from asyncio import (
    BufferedProtocol,
    WriteTransport,
    constants,
    futures,
    trsock,
)
from asyncio.log import logger
from collections.abc import Callable
from typing import Any

from .flow import WriteFlowControl

# A peer that has gone makes send() fail with EPIPE; without this flag the kernel would also
# raise SIGPIPE, which kills a process that has not ignored it (Python ignores it, embedders
# may not).
NOSIGNAL = socket.MSG_NOSIGNAL

# How many buffers one sendmsg/writev may carry (the kernel's limit on an iovec array).
try:
    IOV_MAX = os.sysconf("SC_IOV_MAX")
except (OSError, ValueError):
    IOV_MAX = 16


class SocketExtra:
    """get_extra_info() of a socket transport: the socket (wrapped as asyncio does), its
    address and its peer's (None where there is none). They are looked up the first time
    anyone asks, or just before the socket closes (asyncio answers after a close too): an
    idle connection nobody asks about holds none of them, about 200 bytes. An accepted
    connection's peer is the one accept() gave, in the form the loop keeps it
    (loop._peer_address). Goes before FdTransport in a transport's bases."""

    _extra: dict[str, Any]
    _sock: Any
    _loop: Any
    _peer: Any = None  # an accepted connection's peer, as loop._accept_connection gave it

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = self._extra
        if name in _SOCKET_EXTRA and "socket" not in extra:
            self._fill_socket_extra()
        return extra.get(name, default)

    def _fill_socket_extra(self) -> None:
        sock, extra = self._sock, self._extra
        if sock is None or "socket" in extra:
            return
        extra["socket"] = trsock.TransportSocket(sock)
        if self._peer is not None and "peername" not in extra:
            extra["peername"] = self._loop._peer_address(self._peer)
        for key, address_of in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            if key not in extra:
                try:
                    extra[key] = address_of()
                except OSError:
                    extra[key] = None

    def _close_sock(self) -> None:
        self._fill_socket_extra()
        super()._close_sock()  # type: ignore[misc]


_SOCKET_EXTRA = frozenset(("socket", "sockname", "peername"))


async def connected(transport: Any, waiter: Any) -> None:
    """Wait until the transport's protocol has been told of it (the waiter a transport sets
    after connection_made); a caller that gives up (cancellation) leaves no transport behind."""
    try:
        await waiter
    except BaseException:
        transport.close()
        raise


class FdTransport:
    """The lifecycle of a transport over one fd."""

    _sock: Any = None  # the socket, or a pipe end; read by __del__ even if __init__ failed
    _server: Any = None  # the Server that accepted this connection, if any
    _buffer: Any = ()  # the write queue: empty for transports that only read
    _empty_waiter: Any = None  # loop.sendfile waits here for the write queue to drain
    _extra: dict[str, Any]
    _start: Callable[[], None]  # each transport's own: what begins once connection_made ran

    def __init__(
        self,
        loop: Any,
        sock: Any,
        protocol: Any,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(extra)  # type: ignore[call-arg]  # asyncio.BaseTransport's
        self._loop = loop
        self._fd = sock.fileno()
        self._sock = sock  # (after _fd, which __del__ reads when there is a socket)
        self._protocol: Any = None
        self.set_protocol(protocol)
        self._closing = False
        self._conn_lost = 0  # > 0 once connection_lost is scheduled; counts writes after it
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "closing" if self._closing else "open"
        info = [type(self).__name__, state, f"fd={self._fd}"]
        if self._sock is not None:
            if isinstance(self, Reading):  # (a write pipe is a ReadTransport too, as asyncio's)
                info.append(f"read={'polling' if self.is_reading() else 'idle'}")
            if isinstance(self, WriteTransport):
                info.append(f"write=<bufsize={self.get_write_buffer_size()}>")
        return f"<{' '.join(info)}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            self._loop._transports.discard(self._fd, self)  # before anything that may raise
            try:
                _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            finally:
                self._sock.close()
                server, self._server = self._server, None  # (a warning may revive us)
                if server is not None:
                    server._detach(self)

    def _close_sock(self) -> None:
        self._loop._transports.discard(self._fd, self)
        self._sock.close()
        self._sock = None

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._loop.is_closed():
            # Nothing will run connection_lost any more: release the fd now, quietly.
            self._conn_lost += 1
            self._close_sock()
            return
        self._loop._remove_reader(self._fd)
        if not self._buffer:
            self._conn_lost += 1
            self._loop._remove_writer(self._fd)
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    # Logged for each write made long after the connection was lost (asyncio's wording).
    _dropped_write_warning = "socket.send() raised exception."
    # Whether write() after close() is dropped (asyncio's pipes) or flushed before the close
    # (asyncio's sockets).
    _drops_writes_after_close = False

    def _write_after_loss(self) -> None:
        if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning(self._dropped_write_warning)
        self._conn_lost += 1

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):
            # The peer went away or the device failed: an ordinary end, not a bug.
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._loop._remove_writer(self._fd)
        if not self._closing:
            self._closing = True
            self._loop._remove_reader(self._fd)
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            # The fd's epoll registration is gone already (close/_force_close removed it).
            self._close_sock()
            waiter = self._empty_waiter  # loop.sendfile, waiting for the write queue to drain
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("Connection is closed by peer"))
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                server._detach(self)
                self._server = None


class Reading:
    """Pausing and resuming the read side: mixed into an ``FdTransport`` whose ``_read_ready``
    reads once per readiness event."""

    _paused = False  # pause_reading() in effect
    _at_eof = False  # the peer's EOF was read: a half-open transport reads no more

    # Provided by FdTransport and the transport.
    _loop: Any
    _fd: int
    _closing: bool
    _read_ready: Callable[[], None]

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if not self.is_reading():
            return
        self._paused = True
        self._loop._remove_reader(self._fd)
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _start_reading(self) -> None:
        if self.is_reading() and not self._at_eof:
            self._loop._add_reader(self._fd, self._read_ready)


class ByteReading(Reading):
    """The read side for byte streams (sockets, pipes)."""

    _sock: Any
    _protocol: Any
    _conn_lost: int
    _fatal_error: Any
    close: Any

    def set_protocol(self, protocol: Any) -> None:
        # Chosen once here, not tested on every read: which read path this protocol takes.
        replacing = self._protocol is not None
        if isinstance(protocol, BufferedProtocol):
            self._read_ready = self._read_into_buffer
        else:
            self._read_ready = self._read_bytes
        self._protocol = protocol
        if replacing:
            self._start_reading()  # the reactor must call the new read path from now on

    def _read_bytes(self) -> None:
        # Hot path: one read and one data_received per readiness event, through the loop's
        # read buffer (see Networking._read_buffer).
        if self._conn_lost:
            return
        try:
            buffer = self._loop._read_buffer()
            nbytes = self._sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not nbytes:
            self._read_eof()
            return
        try:
            self._protocol.data_received(buffer[:nbytes].tobytes())
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _read_into_buffer(self) -> None:
        # Hot path: the protocol's buffer is filled in place, no bytes object is made.
        if self._conn_lost:
            return
        try:
            buf = self._protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return
        try:
            nbytes = self._sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not nbytes:
            self._read_eof()
            return
        try:
            self._protocol.buffer_updated(nbytes)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")

    def _read_eof(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            # Half-open: the protocol may still write, but nothing more will be read.
            self._at_eof = True
            self._loop._remove_reader(self._fd)
        else:
            self.close()


class QueuedWriting(WriteFlowControl):
    """The write side for byte streams (sockets, pipes): mixed into an ``FdTransport``."""

    _loop: Any
    _sock: Any
    _fd: int
    _closing: bool
    _conn_lost: int
    _empty_waiter: Any
    _fatal_error: Any
    _call_connection_lost: Any
    _write_after_loss: Callable[[], None]
    _shut_write: Callable[[], None]  # each transport's own: end the write side

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The write queue: a deque while data waits for the kernel, () otherwise. An empty
        # deque costs about 760 bytes, which an idle connection does not need.
        self._buffer: collections.deque[bytes | memoryview] | tuple[()] = ()
        self._buffer_size = 0
        self._eof = False  # write_eof() called
        super().__init__(*args, **kwargs)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if type(data) is memoryview:
            data = data.cast("B")  # lengths in bytes, whatever the view's item size
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost:
                self._write_after_loss()
                return
            if self._drops_writes_after_close:
                return
        if not self._buffer:
            # Nothing queued: try to send now, and queue only what the kernel refused.
            try:
                sent = self._sock.send(data, NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop._add_writer(self._fd, self._write_ready)
        self._queue(data)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        if self._eof:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to writelines; sendfile is in progress")
        if self._conn_lost or self._closing:
            if self._conn_lost:
                self._write_after_loss()
                return
            if self._drops_writes_after_close:
                return
        # All or nothing: a bad item (TypeError from memoryview) leaves the queue untouched.
        chunks = [_owned(memoryview(data).cast("B")) for data in list_of_data]
        was_empty = not self._buffer
        for chunk in chunks:
            if chunk:
                self._queue(chunk)
        if was_empty and self._buffer:
            # One vectored send for all of them; the writer waits for whatever is left.
            self._write_ready()
            if self._buffer:
                self._loop._add_writer(self._fd, self._write_ready)
        self._maybe_pause_protocol()

    def _queue(self, data: bytes | bytearray | memoryview) -> None:
        data = _owned(data)
        if not self._buffer:
            self._buffer = collections.deque()
        self._buffer.append(data)  # type: ignore[union-attr]
        self._buffer_size += len(data)

    def _write_ready(self) -> None:
        if self._conn_lost:
            return
        buffer = self._buffer
        try:
            sent = self._sock.sendmsg(itertools.islice(buffer, IOV_MAX), (), NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop._remove_writer(self._fd)
            buffer.clear()
            self._buffer_size = 0
            self._fatal_error(exc, "Fatal write error on socket transport")
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_exception(exc)
            return
        self._buffer_size -= sent
        while sent:
            head = buffer[0]
            if len(head) <= sent:
                sent -= len(head)
                buffer.popleft()
            else:
                buffer[0] = memoryview(head)[sent:]
                break
        self._maybe_resume_protocol()  # may write, and so queue more
        if not self._buffer:
            self._buffer = ()
            self._loop._remove_writer(self._fd)
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_result(None)
            if self._closing:
                self._conn_lost += 1
                self._call_connection_lost(None)
            elif self._eof:
                self._shut_write()

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._shut_write()


def _owned(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """What may be queued: the caller may reuse a mutable buffer once write() returns, so
    anything but immutable bytes (or a view of them) is copied."""
    if type(data) is bytes:
        return data
    if type(data) is memoryview and data.readonly and type(data.obj) is bytes:
        return data
    return bytes(data)
