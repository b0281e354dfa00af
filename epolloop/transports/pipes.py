"""Pipe transports: connect_read_pipe and connect_write_pipe, with asyncio's semantics.

Like asyncio, they accept pipes, FIFOs, sockets and character devices (ttys, ptys), read them
with os.read and write them with os.write, whatever the fd is. The read and write paths are
the stream transport's own (base.py), driven through ``PipeEnd``, which gives a pipe's fd the
few socket methods those paths call.

Where pipes differ from sockets, as asyncio does it:

- a read pipe at EOF always closes: ``eof_received()`` is called, then ``connection_lost(None)``;
- ``write_eof()`` on a write pipe closes it once the queue has drained (a pipe has no
  half-close);
- a write pipe whose reader has gone is noticed even when nothing is being written: the kernel
  reports the write end of a pipe or socket *readable* (EPOLLERR / EPOLLHUP) once the other end
  is closed, so the transport watches for reading and takes that for the end:
  ``connection_lost(None)``, or ``connection_lost(BrokenPipeError())`` if data was still
  queued. A write to a pipe without a reader ends the same way; nothing is raised into the loop.
"""

from __future__ import annotations

import os
import stat
from asyncio import ReadTransport, Transport
from asyncio.log import logger
from collections.abc import Iterable
from typing import Any

from .base import ByteReading, FdTransport, QueuedWriting


class PipeEnd:
    """A pipe's fd with the socket methods the shared transport paths call."""

    __slots__ = ("_fd", "_pipe")

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._fd = pipe.fileno()
        os.set_blocking(self._fd, False)

    def fileno(self) -> int:
        return self._fd

    def recv(self, size: int) -> bytes:
        return os.read(self._fd, size)

    def recv_into(self, buffer: Any) -> int:
        return os.readv(self._fd, (buffer,))

    def send(self, data: Any, flags: int) -> int:
        return os.write(self._fd, data)

    def sendmsg(self, buffers: Iterable[Any], ancdata: Any, flags: int) -> int:
        return os.writev(self._fd, list(buffers))

    def close(self) -> None:
        self._pipe.close()


def _file_type(pipe: Any, refusal: str) -> int:
    """The fd's file type; anything but a pipe, FIFO, socket or character device is refused
    with ValueError(refusal)."""
    mode = os.fstat(pipe.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        raise ValueError(refusal)
    return mode


class ReadPipeTransport(ByteReading, FdTransport, ReadTransport):
    """The read end of a pipe (or FIFO, socket, character device)."""

    def __init__(
        self, loop: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        _file_type(pipe, "Pipe transport is for pipes/sockets only.")
        extra = {} if extra is None else extra
        extra["pipe"] = pipe
        super().__init__(loop, PipeEnd(pipe), protocol, waiter, extra)

    def _start(self) -> None:
        self._start_reading()

    def _read_eof(self) -> None:
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._loop.call_soon(self._protocol.eof_received)
        self.close()


class WritePipeTransport(QueuedWriting, FdTransport, Transport):
    """The write end of a pipe (or FIFO, socket, character device).

    An asyncio.Transport, not only a WriteTransport, as asyncio's is (through its
    _FlowControlMixin): pause_reading() and the like are asyncio.ReadTransport's own, which
    refuse, as on asyncio."""

    _dropped_write_warning = "pipe closed by peer or os.write(pipe, data) raised exception."
    _drops_writes_after_close = True

    def __init__(
        self, loop: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        mode = _file_type(pipe, "Pipe transport is only for pipes, sockets and character devices")
        # Only pipes and sockets report a vanished reader; a character device never does.
        self._watch_peer = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        extra = {} if extra is None else extra
        extra["pipe"] = pipe
        super().__init__(loop, PipeEnd(pipe), protocol, waiter, extra)

    def _start(self) -> None:
        if self._watch_peer and not self._closing:
            self._loop._add_reader(self._fd, self._peer_closed)

    def _peer_closed(self) -> None:
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._force_close(BrokenPipeError() if self._buffer else None)

    def write_eof(self) -> None:
        self.close()  # a pipe has no half-close: the reader sees EOF once the queue drained
