"""Pipe transports: loop.connect_read_pipe and loop.connect_write_pipe, on every loop, over
os.pipe, a FIFO, a socketpair, a pty and /dev/null, and asyncio's StreamReader on a read pipe.

Stock asyncio is the reference (unix_events._UnixReadPipeTransport and
_UnixWritePipeTransport, the same from 3.11 to 3.13): every assertion that runs on it holds
there; where uvloop differs, the test says so with an xfail and its reason.

What asyncio does, in short: both transports accept a FIFO, a socket or a character device
(anything else is a ValueError before connection_made); they make the file descriptor
non-blocking and own the pipe object, which they close right after connection_lost. A read
pipe reports EOF as eof_received then connection_lost(None), whatever eof_received returns.
A write pipe on a FIFO or a socket also watches its fd for reading, which is how it learns
that the reader went away: connection_lost(None) if nothing was waiting to be written,
BrokenPipeError if something was. A write that fails is never raised to the caller: the
transport closes with connection_lost(the error). write_eof() and close() are the same thing
for a write pipe: drain the buffer, then close the pipe.

Waits are on futures set by the protocol callbacks, or on loop iterations (``until``,
``spin``), never on timed sleeps; ``wait``'s guard only turns a callback that never comes into
a failure instead of a hang. Every test fails if it leaves a file descriptor open.
"""

from __future__ import annotations

import array
import asyncio
import errno
import gc
import hashlib
import io
import logging
import os
import random
import socket
import stat
import threading
import time
import tty
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import GUARD, spin, until, wait, warnings_logged

pytestmark = pytest.mark.usefixtures("no_leaked_fds")

KiB = 1024
MiB = 1024 * KiB

# asyncio logs 'pipe closed by peer or os.write(pipe, data) raised exception.' from the write
# that finds this many earlier refused writes or losses counted
# (asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES).
LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5
DROPPED_WRITE_WARNING = "pipe closed by peer or os.write(pipe, data) raised exception."

# The messages of asyncio's ValueError for a file that is not a pipe, socket or character
# device (the read and the write transport word it differently).
READ_PIPE_REFUSED = "Pipe transport is for pipes/sockets only."
WRITE_PIPE_REFUSED = "Pipe transport is only for pipes, sockets and character devices"

# The events every pipe protocol records, flow control aside.
MADE, DATA, EOF, LOST = "connection_made", "data_received", "eof_received", "connection_lost"
FLOW = ("pause_writing", "resume_writing")


def payload(size: int, seed: int = 0) -> bytes:
    """*size* reproducible random bytes (random data catches reordering and duplication)."""
    return random.Random(seed).randbytes(size)


def squeeze(events: list[str]) -> list[str]:
    """*events* without the flow-control ones, runs of the same event collapsed into one."""
    out: list[str] = []
    for event in events:
        if event not in FLOW and (not out or out[-1] != event):
            out.append(event)
    return out


def xfail_uvloop(loop_name: str, reason: str) -> None:
    if loop_name == "uvloop":
        pytest.xfail(f"uvloop: {reason}")


# -- pipe ends --------------------------------------------------------------------------------


class Ends:
    """Makes a test's pipe ends (unbuffered file objects, or sockets); whatever is still open
    at the end of the test is closed then. Transports close the ends they were given."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._made: list[Any] = []

    def track(self, end: Any) -> Any:
        self._made.append(end)
        return end

    def file(self, fd: int, mode: str) -> io.FileIO:
        return self.track(open(fd, mode, buffering=0))  # closed at teardown

    def pipe(self) -> tuple[io.FileIO, io.FileIO]:
        """(read end, write end) of an os.pipe()."""
        r, w = os.pipe()
        return self.file(r, "rb"), self.file(w, "wb")

    def fifo(self) -> tuple[io.FileIO, io.FileIO]:
        """(read end, write end) of a FIFO made with os.mkfifo; both opened non-blocking (the
        read end first: opening the write end of a FIFO nobody reads fails with ENXIO)."""
        path = self._directory / "fifo"
        os.mkfifo(path)
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        read_end = self.file(r, "rb")
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        return read_end, self.file(w, "wb")

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        return self.track(a), self.track(b)

    def pty(self) -> tuple[io.FileIO, io.FileIO]:
        """(master, slave) of a pseudo-terminal in raw mode: no echo, no line editing, bytes
        pass through as they are."""
        master, slave = os.openpty()
        master_end, slave_end = self.file(master, "r+b"), self.file(slave, "r+b")
        tty.setraw(slave)
        return master_end, slave_end

    def close_all(self) -> None:
        for end in self._made:
            try:
                end.close()
            except OSError:  # its fd closed behind its back (see the uvloop xfails)
                pass


@pytest.fixture
def ends(tmp_path: Path) -> Iterator[Ends]:
    made = Ends(tmp_path)
    try:
        yield made
    finally:
        made.close_all()


def assert_closed(end: Any, fd: int) -> None:
    """The transport closed *end*, the pipe object it was given, and so its file descriptor
    *fd* (no other test code runs in between that could reuse the number)."""
    if isinstance(end, socket.socket):
        assert end.fileno() == -1
    else:
        assert end.closed
    with pytest.raises(OSError) as caught:
        os.fstat(fd)
    assert caught.value.errno == errno.EBADF


async def read_raw(end: Any, count: int | None = None) -> bytes:
    """Read from *end* (not attached to the loop) without blocking the loop: until EOF, or
    until *count* bytes have come."""
    fd = end.fileno()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    got = 0
    deadline = time.monotonic() + GUARD
    while count is None or got < count:
        try:
            chunk = os.read(fd, 1 * MiB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise AssertionError(f"read_raw: only {got} bytes within {GUARD} s") from None
            await asyncio.sleep(0)
            continue
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def start_writer(end: Any, data: bytes) -> threading.Thread:
    """A thread that writes *data* to *end* with blocking writes, then closes it."""

    def write() -> None:
        view = memoryview(data)
        while view:
            view = view[end.write(view) :]
        end.close()

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def fill(transport: Any, extra: int = 0, block: int = 64 * KiB) -> int:
    """Write (without yielding to the loop) until the transport has to buffer data because the
    kernel takes no more (the reader is not reading), then *extra* bytes more; returns the
    number of bytes written."""
    written = 0
    data = b"f" * block
    while transport.get_write_buffer_size() == 0:
        transport.write(data)
        written += block
        assert written < 64 * MiB, "the kernel never stopped taking data"
    if extra:
        transport.write(b"e" * extra)
    return written + extra


# -- protocol ---------------------------------------------------------------------------------


class PipeProtocol(asyncio.Protocol):
    """Records every callback, in order, in ``events``; keeps the bytes received (or, with
    ``keep=False``, only counts and hashes them).

    ``eof_received`` returns *eof_result*. Futures ``made``, ``eof`` and ``lost`` resolve at
    those callbacks; ``writable`` is cleared by pause_writing and set by resume_writing, which
    record the write buffer size they see. ``received_at_least(n)`` waits for *n* bytes."""

    def __init__(self, *, keep: bool = True, eof_result: bool | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.keep = keep
        self.eof_result = eof_result
        self.events: list[str] = []
        self.transport: Any = None
        self.received = bytearray()
        self.count = 0
        self.digest = hashlib.sha256()
        self.made: asyncio.Future[Any] = self.loop.create_future()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[BaseException | None] = self.loop.create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.paused_at: list[int] = []
        self.resumed_at: list[int] = []
        self.while_not_reading = 0  # data_received calls that came while the transport was paused
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def connection_made(self, transport: Any) -> None:
        self.events.append(MADE)
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        self.events.append(DATA)
        if not self.transport.is_reading():
            self.while_not_reading += 1
        self.count += len(data)
        self.digest.update(data)
        if self.keep:
            self.received += data
        for waiter in [w for w in self._waiters if self.count >= w[0]]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(None)

    def eof_received(self) -> bool | None:
        self.events.append(EOF)
        self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(LOST)
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

    async def received_at_least(self, count: int) -> None:
        if self.count < count:
            if self.lost.done():
                raise AssertionError(f"connection lost after {self.count} bytes")
            waiter = self.loop.create_future()
            self._waiters.append((count, waiter))
            await wait(waiter)


async def read_pipe(end: Any, **kw: Any) -> tuple[Any, PipeProtocol]:
    loop = asyncio.get_running_loop()
    return await wait(loop.connect_read_pipe(lambda: PipeProtocol(**kw), end))


async def write_pipe(end: Any) -> tuple[Any, PipeProtocol]:
    loop = asyncio.get_running_loop()
    return await wait(loop.connect_write_pipe(PipeProtocol, end))


async def xfail_uvloop_write_eof(loop_name: str, transport: Any, protocol: PipeProtocol) -> None:
    """Just after write_eof(): on uvloop, which does not close the pipe, end the transport and
    xfail."""
    if loop_name == "uvloop" and not transport.is_closing():
        if not protocol.lost.done():
            transport.abort()
        await wait(protocol.lost)
        pytest.xfail(
            "uvloop: write_eof() on a pipe is a shutdown(): is_closing() stays False, and once "
            "the buffer has drained the transport fails with ENOTSOCK"
        )


def record_loop_errors(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """Route the loop's exception handler calls into a list (and so keep them off the log)."""
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    return contexts


# -- connecting -------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["read", "write"])
async def test_connect_returns_after_connection_made(ends: Ends, direction: str) -> None:
    """connect_*_pipe returns (the transport, the factory's protocol) once connection_made has
    been called with that transport; the transport exposes the pipe object it was given."""
    r, w = ends.pipe()
    end = r if direction == "read" else w
    fd = end.fileno()
    made: list[PipeProtocol] = []

    def factory() -> PipeProtocol:
        made.append(PipeProtocol())
        return made[-1]

    loop = asyncio.get_running_loop()
    connect = loop.connect_read_pipe if direction == "read" else loop.connect_write_pipe
    transport, protocol = await wait(connect(factory, end))
    assert made == [protocol]
    assert protocol.events == [MADE]
    assert protocol.transport is transport
    assert transport.get_protocol() is protocol
    assert transport.get_extra_info("pipe") is end
    assert transport.get_extra_info("no such key") is None
    assert transport.get_extra_info("no such key", 42) == 42
    assert not transport.is_closing()
    assert not os.get_blocking(end.fileno())  # the transport made the fd non-blocking
    if direction == "read":
        assert transport.is_reading()
    else:
        assert transport.get_write_buffer_size() == 0
        assert transport.can_write_eof()
    transport.close()
    assert transport.is_closing()
    assert await wait(protocol.lost) is None
    assert protocol.events == [MADE, LOST]
    assert_closed(end, fd)


async def test_the_other_directions_methods(ends: Ends, loop_name: str) -> None:
    """asyncio's write pipe transport is an asyncio.Transport (through _FlowControlMixin): the
    read side's methods are there and raise NotImplementedError. Its read pipe transport is a
    ReadTransport alone: write() is not there."""
    reader, reader_protocol = await read_pipe(ends.pipe()[0])
    r, w = ends.pipe()
    writer, writer_protocol = await write_pipe(w)
    for method in ("pause_reading", "resume_reading"):
        with pytest.raises(NotImplementedError):
            getattr(writer, method)()
    try:
        is_reading = writer.is_reading()
    except NotImplementedError:
        is_reading = NotImplementedError
    with pytest.raises((AttributeError, NotImplementedError)):  # asyncio's; uvloop's
        reader.write(b"wat")
    assert not writer.is_closing()
    assert "read=" not in repr(writer)
    writer.write(b"still writable")
    assert await read_raw(r, 14) == b"still writable"
    reader.close()
    writer.close()
    assert await wait(reader_protocol.lost) is None
    assert await wait(writer_protocol.lost) is None
    if is_reading is not NotImplementedError:
        xfail_uvloop(loop_name, f"a write pipe transport's is_reading() returns {is_reading}")
    assert is_reading is NotImplementedError


@pytest.mark.parametrize(
    ("direction", "message"), [("read", READ_PIPE_REFUSED), ("write", WRITE_PIPE_REFUSED)]
)
async def test_regular_file_is_refused(
    ends: Ends, loop_name: str, tmp_path: Path, direction: str, message: str
) -> None:
    """A regular file is no pipe: ValueError, before connection_made; the file stays open (the
    caller still owns it)."""
    # (uvloop hands the fd to libuv, whose epoll_ctl fails with EPERM: it aborts the process)
    xfail_uvloop(loop_name, "a regular file aborts the process (libuv asserts) instead of raising")
    path = tmp_path / "regular"
    path.write_bytes(b"not a pipe")
    end = ends.file(os.open(path, os.O_RDWR), "r+b" if direction == "read" else "wb")
    loop = asyncio.get_running_loop()
    connect = loop.connect_read_pipe if direction == "read" else loop.connect_write_pipe
    protocols: list[PipeProtocol] = []

    def factory() -> PipeProtocol:
        protocols.append(PipeProtocol())
        return protocols[-1]

    with pytest.raises(ValueError) as caught:
        await wait(connect(factory, end))
    assert str(caught.value) == message
    await spin(3)
    assert all(p.events == [] for p in protocols)  # no callback, not even connection_made
    assert not end.closed
    assert os.get_blocking(end.fileno())  # refused before being made non-blocking
    assert stat.S_ISREG(os.fstat(end.fileno()).st_mode)


# -- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("eof_result", [None, True], ids=["eof-None", "eof-True"])
async def test_read_pipe_eof_then_connection_lost(
    ends: Ends, loop_name: str, eof_result: bool | None
) -> None:
    """The writer closes: every byte, then eof_received, then connection_lost(None), in that
    order. A read pipe cannot stay half open: it closes even if eof_received returns True.
    Then the transport has closed the pipe."""
    r, w = ends.pipe()
    fd = r.fileno()
    data = payload(1 * MiB)
    transport, protocol = await read_pipe(r, eof_result=eof_result)
    thread = start_writer(w, data)  # the pipe holds 64 KiB: the loop reads the rest meanwhile
    try:
        await wait(protocol.eof)
        await spin(3)  # asyncio calls connection_lost in the same step as eof_received
        if loop_name == "uvloop" and eof_result and not protocol.lost.done():
            transport.close()
            await wait(protocol.lost)
            pytest.xfail("uvloop: a read pipe stays open if eof_received() returns True")
        assert await wait(protocol.lost) is None
    finally:
        thread.join(GUARD)
    assert bytes(protocol.received) == data
    assert squeeze(protocol.events) == [MADE, DATA, EOF, LOST]
    assert transport.is_closing()
    assert not transport.is_reading()
    assert_closed(r, fd)


async def test_read_pipe_eof_before_any_data(ends: Ends) -> None:
    r, w = ends.pipe()
    fd = r.fileno()
    w.close()
    transport, protocol = await read_pipe(r)
    assert await wait(protocol.lost) is None
    assert protocol.events == [MADE, EOF, LOST]
    assert transport.is_closing()
    assert not transport.is_reading()
    assert_closed(r, fd)


async def test_read_pipe_pause_and_resume_reading(ends: Ends) -> None:
    r, w = ends.pipe()
    transport, protocol = await read_pipe(r)
    assert transport.is_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    transport.pause_reading()  # pausing twice is fine
    assert not transport.is_reading()

    w.write(b"while paused")
    await spin(20)
    assert protocol.received == b""  # the data waits in the pipe
    assert DATA not in protocol.events

    transport.resume_reading()
    assert transport.is_reading()
    transport.resume_reading()  # resuming twice is fine
    await protocol.received_at_least(12)
    assert protocol.received == b"while paused"

    w.write(b" and after")
    await protocol.received_at_least(22)
    assert protocol.received == b"while paused and after"
    assert protocol.while_not_reading == 0

    transport.pause_reading()
    transport.close()  # closing a paused read pipe
    assert transport.is_closing()
    assert not transport.is_reading()
    transport.resume_reading()  # no effect once closing
    assert not transport.is_reading()
    assert await wait(protocol.lost) is None
    assert protocol.events == [MADE, DATA, DATA, LOST]


class SlowReader(PipeProtocol):
    """Pauses reading after each chunk, and resumes two loop iterations later."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.transport.pause_reading()
        self.loop.call_soon(self.loop.call_soon, self.transport.resume_reading)


async def test_pause_reading_inside_data_received(ends: Ends) -> None:
    """pause_reading() from data_received: no more data_received until resume_reading()."""
    r, w = ends.pipe()
    data = payload(512 * KiB)
    loop = asyncio.get_running_loop()
    _, protocol = await wait(loop.connect_read_pipe(SlowReader, r))
    thread = start_writer(w, data)
    try:
        assert await wait(protocol.lost) is None
    finally:
        thread.join(GUARD)
    assert bytes(protocol.received) == data
    assert protocol.while_not_reading == 0
    assert protocol.events.count(DATA) >= len(data) // (256 * KiB)


async def test_read_pipe_close_stops_delivery(ends: Ends) -> None:
    """close() with data still in the pipe: no data_received after it, then
    connection_lost(None); the pipe is closed, unread data and all."""
    r, w = ends.pipe()
    fd = r.fileno()
    transport, protocol = await read_pipe(r)
    transport.pause_reading()
    w.write(b"never read")
    transport.resume_reading()  # the data is there: the next poll would deliver it
    transport.close()
    transport.close()  # closing twice is fine
    assert transport.is_closing()
    assert await wait(protocol.lost) is None
    await spin(3)
    assert protocol.events == [MADE, LOST]
    assert_closed(r, fd)


# -- writing ----------------------------------------------------------------------------------


async def test_round_trip_64_mib_with_write_flow_control(ends: Ends) -> None:
    """64 MiB from a write pipe to a read pipe on the same loop, written as fast as flow
    control allows: pause_writing once the buffer is past the high-water mark, resume_writing
    once it has drained to the low-water mark, alternately; every byte arrives in order; then
    close() drains the buffer and closes both ends."""
    r, w = ends.pipe()
    data = payload(64 * MiB)
    _, reader = await read_pipe(r, keep=False)
    writer_t, writer = await write_pipe(w)
    low, high = writer_t.get_write_buffer_limits()
    view = memoryview(data)
    chunk = 1 * MiB  # bigger than the pipe and the high-water mark: every write pauses
    for start in range(0, len(data), chunk):
        await wait(writer.writable.wait())
        writer_t.write(view[start : start + chunk])
    writer_t.close()
    assert await wait(writer.lost) is None
    assert await wait(reader.lost) is None
    assert reader.count == len(data)
    assert reader.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert squeeze(reader.events) == [MADE, DATA, EOF, LOST]

    flow = [e for e in writer.events if e in FLOW]
    assert flow == ["pause_writing", "resume_writing"] * (len(data) // chunk)  # one per write
    assert all(size > high for size in writer.paused_at)
    assert all(size <= low for size in writer.resumed_at)
    # resume_writing comes before connection_lost: the last one once the buffer has drained
    assert writer.events[0] == MADE
    assert writer.events[-2:] == ["resume_writing", LOST]


async def test_write_buffer_limits(ends: Ends) -> None:
    """set_write_buffer_limits(high, low): pause_writing when a write leaves more than *high*
    bytes buffered, resume_writing when the buffer drains to *low* or less."""
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    transport.set_write_buffer_limits(high=8 * KiB, low=2 * KiB)
    assert transport.get_write_buffer_limits() == (2 * KiB, 8 * KiB)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=1 * KiB, low=2 * KiB)
    fill(transport, block=1 * KiB)
    buffered = transport.get_write_buffer_size()
    assert buffered == 1 * KiB
    assert protocol.paused_at == []
    transport.write(b"b" * (8 * KiB - buffered))  # exactly at the mark: not past it
    assert transport.get_write_buffer_size() == 8 * KiB
    assert protocol.paused_at == []
    transport.write(b"!")
    assert protocol.paused_at == [8 * KiB + 1]
    transport.write(b"more")  # already paused: not again
    assert protocol.paused_at == [8 * KiB + 1]
    await read_raw(r, 1)  # one read takes all the pipe holds: room for the whole buffer
    await wait(protocol.writable.wait())
    assert len(protocol.resumed_at) == 1
    assert protocol.resumed_at[0] <= 2 * KiB
    transport.close()
    assert await wait(protocol.lost) is None


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("method", ["write", "writelines"])
async def test_write_bytes_like(ends: Ends, kind: type, method: str) -> None:
    data = payload(300 * KiB)
    pieces = [kind(data[i : i + 50 * KiB]) for i in range(0, len(data), 50 * KiB)]
    pieces.append(memoryview(b"..a slice of a larger buffer..")[2:-2])
    expected = data + b"a slice of a larger buffer"
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    transport.write(kind(b""))  # nothing to write: a no-op
    if method == "write":
        for piece in pieces:
            transport.write(piece)
    else:
        transport.writelines(pieces)
    transport.close()
    assert await wait(read_raw(r)) == expected
    assert await wait(protocol.lost) is None


async def check_wide_items_written_whole(ends: Ends, method: str) -> None:
    """A memoryview whose items are wider than a byte (array('i'): 4 items, 16 bytes) is
    written byte for byte, all of it; then close() closes the pipe as usual (a transport that
    counted items as bytes would keep an empty remainder queued and never finish its close)."""
    view = memoryview(array.array("i", range(4)))
    assert (len(view), view.nbytes) == (4, 16)
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    if method == "write":
        transport.write(view)
    else:
        transport.writelines([view])
    transport.close()
    assert await wait(read_raw(r)) == view.tobytes()  # to EOF: the transport closed the pipe
    assert await wait(protocol.lost) is None
    assert protocol.events == [MADE, LOST]


# asyncio's write() compares the bytes written with the view's length in items: it keeps a
# writer for an empty buffer, whose _write_ready then fails 'Data should not be empty' at every
# loop iteration
@pytest.mark.epolloop_only
async def test_write_memoryview_of_wide_items(ends: Ends) -> None:
    await check_wide_items_written_whole(ends, "write")


async def test_writelines_memoryview_of_wide_items(ends: Ends) -> None:
    await check_wide_items_written_whole(ends, "writelines")


async def test_writelines_takes_any_iterable(ends: Ends) -> None:
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    transport.writelines(piece for piece in (b"from ", b"a ", b"generator"))
    transport.writelines(())
    transport.close()
    assert await wait(read_raw(r)) == b"from a generator"
    assert await wait(protocol.lost) is None


async def test_buffered_bytearray_mutated_after_write_is_written_as_it_was(
    ends: Ends, loop_name: str
) -> None:
    """The data has to wait in the transport's buffer: still, what was written is written (the
    asyncio pipe transport copies it into its buffer)."""
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    filled = fill(transport)
    buffer = bytearray(b"original")
    transport.write(buffer)
    buffer[:] = b"mutated!"
    transport.close()
    received = await wait(read_raw(r))
    assert len(received) == filled + 8
    if loop_name == "uvloop" and received[filled:] == b"mutated!":
        pytest.xfail("uvloop: keeps a reference to the buffered bytearray, not a copy")
    assert received[filled:] == b"original"
    assert await wait(protocol.lost) is None


@pytest.mark.parametrize("bad", ["text", 42, [b"a list"]])
async def test_write_refuses_non_bytes(ends: Ends, loop_name: str, bad: Any) -> None:
    """write() of something that is not bytes-like raises at once and writes nothing; the
    transport stays usable."""
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    # asyncio's write() checks with an assert statement (an AssertionError, and nothing at all
    # under python -O); uvloop raises TypeError, as a loop should.
    expected = AssertionError if loop_name == "asyncio" else TypeError
    with pytest.raises(expected):
        transport.write(bad)
    with pytest.raises(TypeError):  # writelines() refuses the lot: nothing is written
        transport.writelines([b"fine", "text" if isinstance(bad, list) else bad])
    transport.write(b"still usable")
    transport.close()
    received = await wait(read_raw(r))
    if loop_name == "uvloop" and received == b"finestill usable":
        pytest.xfail("uvloop: writelines() writes the items before the one it refuses")
    assert received == b"still usable"
    assert await wait(protocol.lost) is None


@pytest.mark.parametrize("method", ["write_eof", "close"])
async def test_write_eof_and_close_drain_then_close(
    ends: Ends, loop_name: str, method: str
) -> None:
    """write_eof() and close() with data buffered: the transport is closing at once, writes
    out what it holds, and only then closes the pipe (connection_lost(None)): the reader gets
    every byte, then EOF."""
    r, w = ends.pipe()
    fd = w.fileno()
    transport, protocol = await write_pipe(w)
    assert transport.can_write_eof()
    filled = fill(transport, extra=100 * KiB)
    assert transport.get_write_buffer_size() > 100 * KiB
    getattr(transport, method)()
    await xfail_uvloop_write_eof(loop_name, transport, protocol)
    assert transport.is_closing()
    await spin(5)
    assert not protocol.lost.done()  # the reader has not read: the buffer is still there
    assert transport.get_write_buffer_size() > 100 * KiB
    received = await wait(read_raw(r))  # reads to EOF: the write end was closed
    assert len(received) == filled
    assert received.endswith(b"e" * 100 * KiB)
    assert await wait(protocol.lost) is None
    assert transport.get_write_buffer_size() == 0
    assert squeeze(protocol.events) == [MADE, LOST]
    assert_closed(w, fd)


@pytest.mark.parametrize("method", ["write_eof", "close"])
async def test_write_eof_and_close_with_nothing_buffered(
    ends: Ends, loop_name: str, method: str
) -> None:
    r, w = ends.pipe()
    fd = w.fileno()
    transport, protocol = await write_pipe(w)
    transport.write(b"all of it fits in the pipe")
    assert transport.get_write_buffer_size() == 0
    getattr(transport, method)()
    await xfail_uvloop_write_eof(loop_name, transport, protocol)
    assert transport.is_closing()
    assert protocol.events == [MADE]  # connection_lost comes from the loop, not from the call
    getattr(transport, method)()  # a second time is fine
    assert await wait(protocol.lost) is None
    assert protocol.events == [MADE, LOST]
    assert_closed(w, fd)
    assert await wait(read_raw(r)) == b"all of it fits in the pipe"


async def test_abort_drops_buffered_data(ends: Ends, loop_name: str) -> None:
    """abort(): what the transport still holds is dropped; connection_lost(None); the reader
    gets what the kernel had already taken, then EOF."""
    r, w = ends.pipe()
    fd = w.fileno()
    transport, protocol = await write_pipe(w)
    filled = fill(transport, extra=100 * KiB)
    buffered = transport.get_write_buffer_size()
    assert buffered > 100 * KiB
    transport.abort()
    assert transport.is_closing()
    assert squeeze(protocol.events) == [MADE]
    assert await wait(protocol.lost) is None
    assert squeeze(protocol.events) == [MADE, LOST]
    assert_closed(w, fd)
    received = await wait(read_raw(r))
    assert len(received) == filled - buffered
    assert not received.endswith(b"e")  # none of the extra: it was all still buffered
    if loop_name == "uvloop" and transport.get_write_buffer_size() == buffered:
        pytest.xfail("uvloop: get_write_buffer_size() still counts what abort() dropped")
    assert transport.get_write_buffer_size() == 0


async def test_write_after_close_with_data_queued_is_dropped(ends: Ends, loop_name: str) -> None:
    """close() while data is still queued: the transport drains it before it closes the pipe,
    but a write() made after close() is dropped, not queued behind it: the reader gets the
    queued data, then EOF; connection_lost(None); a write() after that raises nothing."""
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    data = payload(1 * MiB)
    transport.write(data)  # more than the pipe holds
    queued = transport.get_write_buffer_size()
    assert queued > 0
    transport.close()
    transport.write(b"AFTER")
    grew = transport.get_write_buffer_size() - queued
    received = await wait(read_raw(r))
    assert await wait(protocol.lost) is None
    if loop_name == "uvloop" and received == data + b"AFTER":
        pytest.xfail("uvloop: write() after close() is queued and written after the data")
    assert grew == 0
    assert len(received) == len(data)
    assert received == data
    transport.write(b"late")  # dropped too: nothing raised
    assert squeeze(protocol.events) == [MADE, LOST]


# -- the reader goes away ---------------------------------------------------------------------


async def test_reader_closed_with_nothing_buffered(ends: Ends, loop_name: str) -> None:
    """The write pipe watches its fd for reading: it sees the reader go away without writing
    anything, and closes with connection_lost(None)."""
    r, w = ends.pipe()
    fd = w.fileno()
    transport, protocol = await write_pipe(w)
    transport.write(b"taken by the kernel")
    assert transport.get_write_buffer_size() == 0
    r.close()
    assert await wait(protocol.lost) is None
    assert transport.is_closing()
    assert_closed(w, fd)
    if loop_name == "uvloop" and EOF in protocol.events:
        pytest.xfail("uvloop: calls eof_received() on a write pipe's protocol")
    assert protocol.events == [MADE, LOST]


async def test_reader_closed_with_data_buffered(ends: Ends, loop_name: str) -> None:
    """The reader goes away while the transport holds data: connection_lost(BrokenPipeError),
    the buffer dropped; the error is the protocol's, not the loop's (no exception handler
    call, nothing logged)."""
    contexts = record_loop_errors(asyncio.get_running_loop())
    r, w = ends.pipe()
    fd = w.fileno()
    transport, protocol = await write_pipe(w)
    fill(transport, extra=10 * KiB)
    r.close()
    exc = await wait(protocol.lost)
    assert isinstance(exc, BrokenPipeError)
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    assert contexts == []
    assert_closed(w, fd)
    if loop_name == "uvloop" and EOF in protocol.events:
        pytest.xfail("uvloop: calls eof_received() on a write pipe's protocol")
    assert squeeze(protocol.events) == [MADE, LOST]


async def test_write_after_reader_closed(ends: Ends) -> None:
    """A write that finds the reader gone (before the loop noticed): nothing is raised to the
    caller, the transport closes with connection_lost(BrokenPipeError), and no error reaches
    the loop's exception handler or the log."""
    contexts = record_loop_errors(asyncio.get_running_loop())
    r, w = ends.pipe()
    fd = w.fileno()
    transport, protocol = await write_pipe(w)
    r.close()
    transport.write(b"nobody reads this")  # EPIPE (Python ignores SIGPIPE): not raised
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    exc = await wait(protocol.lost)
    assert isinstance(exc, BrokenPipeError)
    assert exc.errno == errno.EPIPE
    assert contexts == []
    assert protocol.events == [MADE, LOST]
    assert_closed(w, fd)


@pytest.mark.parametrize("how", ["write_eof", "reader_closed"])
async def test_writes_after_closing_are_dropped(
    ends: Ends, loop_name: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After write_eof() (or once the reader has gone), write() neither raises nor writes;
    asyncio counts those writes and logs a warning (never an error) from about the
    LOG_THRESHOLD_FOR_CONNLOST_WRITES-th one on, once per write."""
    assert asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES == LOG_THRESHOLD_FOR_CONNLOST_WRITES
    r, w = ends.pipe()
    transport, protocol = await write_pipe(w)
    if how == "write_eof":
        transport.write(b"before")
        transport.write_eof()
        if loop_name == "uvloop":
            with pytest.raises(RuntimeError):
                transport.write(b"dropped")
            transport.close()
            await wait(protocol.lost)
            pytest.xfail("uvloop: write() after write_eof() raises RuntimeError")
    else:
        r.close()
        assert await wait(protocol.lost) is None
        await spin(3)
        xfail_uvloop(loop_name, "write() after connection_lost raises RuntimeError")

    def warnings() -> int:
        return warnings_logged(caplog, DROPPED_WRITE_WARNING)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for _ in range(LOG_THRESHOLD_FOR_CONNLOST_WRITES - 1):
            transport.write(b"dropped")
        assert warnings() == 0
        transport.write(b"dropped")
        transport.write(b"dropped")
        # The first warning comes with the threshold-th dropped write or the next: asyncio's
        # pipes do not count the close itself as a loss, its sockets (and epolloop) do.
        first = warnings()
        assert first in (1, 2)
        transport.write(memoryview(b"dropped"))
        assert warnings() == first + 1
        transport.write(b"")  # nothing to write: not counted
        assert warnings() == first + 1
    assert transport.is_closing()
    assert await wait(protocol.lost) is None
    if how == "write_eof":
        assert await wait(read_raw(r)) == b"before"
    assert protocol.events.count(LOST) == 1


# -- other kinds of pipe ----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "finish"), [("fifo", "close"), ("socketpair", "write_eof")])
async def test_fifo_and_socket_ends_as_pipes(
    ends: Ends, loop_name: str, kind: str, finish: str
) -> None:
    """A FIFO's ends and a socketpair's are pipes too: the object given is the 'pipe' extra,
    closed by the transport after connection_lost; close() and write_eof() both end the write
    side (the reader sees EOF)."""
    r, w = getattr(ends, kind)()
    rfd, wfd = r.fileno(), w.fileno()
    data = payload(1 * MiB)
    reader_t, reader = await read_pipe(r)
    writer_t, writer = await write_pipe(w)
    assert reader_t.get_extra_info("pipe") is r
    assert writer_t.get_extra_info("pipe") is w
    assert writer_t.can_write_eof()
    writer_t.write(data)
    getattr(writer_t, finish)()
    assert await wait(writer.lost) is None
    assert await wait(reader.lost) is None
    assert bytes(reader.received) == data
    assert squeeze(reader.events) == [MADE, DATA, EOF, LOST]
    assert_closed(r, rfd)
    assert_closed(w, wfd)
    if loop_name == "uvloop" and EOF in writer.events:
        pytest.xfail("uvloop: calls eof_received() on a write pipe's protocol")
    assert squeeze(writer.events) == [MADE, LOST]


@pytest.mark.parametrize("kind", ["fifo", "socketpair"])
async def test_write_pipe_sees_its_reader_close(ends: Ends, loop_name: str, kind: str) -> None:
    r, w = getattr(ends, kind)()
    transport, protocol = await write_pipe(w)
    transport.write(b"to the reader")
    assert os.read(r.fileno(), 100) == b"to the reader"
    r.close()
    assert await wait(protocol.lost) is None
    assert transport.is_closing()
    if loop_name == "uvloop" and EOF in protocol.events:
        pytest.xfail("uvloop: calls eof_received() on a write pipe's protocol")
    assert protocol.events == [MADE, LOST]


async def test_pty_master_as_read_pipe(ends: Ends, loop_name: str) -> None:
    """A character device (a pty master) is a read pipe: the bytes written on the slave come
    through. When the slave closes, Linux makes the master's read fail with EIO: asyncio takes
    that for the end of the pipe, quietly (no exception handler call): connection_lost with
    that OSError, and no eof_received."""
    contexts = record_loop_errors(asyncio.get_running_loop())
    master, slave = ends.pty()
    fd = master.fileno()
    assert stat.S_ISCHR(os.fstat(fd).st_mode)
    transport, protocol = await read_pipe(master)
    data = payload(2 * KiB)
    slave.write(data)
    await protocol.received_at_least(len(data))
    assert bytes(protocol.received) == data
    slave.close()
    exc = await wait(protocol.lost)
    assert contexts == []
    assert transport.is_closing()
    assert_closed(master, fd)
    if loop_name == "uvloop" and exc is None:
        pytest.xfail("uvloop: EIO from a pty master is an EOF (eof_received, then None)")
    assert isinstance(exc, OSError)
    assert exc.errno == errno.EIO
    assert squeeze(protocol.events) == [MADE, DATA, LOST]


async def test_pty_master_as_write_pipe(ends: Ends) -> None:
    """A character device is a write pipe too (with no watch for the reader going away)."""
    master, slave = ends.pty()
    fd = master.fileno()
    transport, protocol = await write_pipe(master)
    data = payload(2 * KiB)
    transport.write(data)
    assert await wait(read_raw(slave, len(data))) == data
    transport.close()
    assert await wait(protocol.lost) is None
    assert protocol.events == [MADE, LOST]
    assert_closed(master, fd)


async def test_dev_null_as_write_pipe(ends: Ends, loop_name: str) -> None:
    """/dev/null is a character device that epoll refuses (EPERM): asyncio never polls a
    character device for reading, and /dev/null takes every write at once."""
    xfail_uvloop(loop_name, "/dev/null aborts the process (libuv cannot poll it)")
    null = ends.file(os.open(os.devnull, os.O_WRONLY), "wb")
    fd = null.fileno()
    transport, protocol = await write_pipe(null)
    transport.write(b"x" * (4 * MiB))
    assert transport.get_write_buffer_size() == 0
    await spin(3)
    transport.write_eof()
    assert await wait(protocol.lost) is None
    assert protocol.events == [MADE, LOST]
    assert_closed(null, fd)


# -- StreamReader -----------------------------------------------------------------------------


async def test_stream_reader_reads_a_pipe_to_the_end(ends: Ends, loop_name: str) -> None:
    """asyncio.StreamReader through connect_read_pipe (StreamReaderProtocol): readline, then
    read() up to EOF, with a thread writing (and pausing reads: the data is more than the
    StreamReader's limit)."""
    r, w = ends.pipe()
    fd = r.fileno()
    data = b"first line\n" + payload(4 * MiB)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * KiB)
    transport, _ = await wait(
        loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), r)
    )
    thread = start_writer(w, data)
    try:
        assert await wait(reader.readline()) == b"first line\n"
        assert await wait(reader.read()) == data[len(b"first line\n") :]
    finally:
        thread.join(GUARD)
    assert reader.at_eof()
    # StreamReaderProtocol.eof_received returns True (keep open), which a read pipe ignores
    await spin(3)
    if loop_name == "uvloop" and not transport.is_closing():
        transport.close()
        await until(lambda: r.closed, "the transport closes the pipe")
        pytest.xfail("uvloop: a read pipe stays open if eof_received() returns True")
    assert transport.is_closing()
    await until(lambda: r.closed, "the transport closes the pipe")
    assert_closed(r, fd)


# -- garbage ----------------------------------------------------------------------------------


async def test_unclosed_read_pipe_transport_warns(ends: Ends, loop_name: str) -> None:
    """A read pipe transport collected while still open: a ResourceWarning ('unclosed
    transport <...>' in asyncio), and the pipe closed. (Paused first: a transport the loop is
    polling stays referenced by the loop.)"""
    gc.collect()  # the garbage of earlier tests, whatever it warns about, goes first
    r, _ = ends.pipe()
    fd = r.fileno()
    transport, protocol = await read_pipe(r)
    transport.pause_reading()
    await spin(3)
    del transport, protocol
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    messages = [str(x.message) for x in caught if issubclass(x.category, ResourceWarning)]
    assert len(messages) == 1
    assert messages[0].startswith("unclosed")
    if loop_name == "uvloop" and not r.closed:
        pytest.xfail("uvloop: closes the fd, but not the pipe object it belongs to")
    assert_closed(r, fd)


async def test_closed_pipe_transports_do_not_warn(ends: Ends) -> None:
    gc.collect()  # the garbage of earlier tests, whatever it warns about, goes first
    r, w = ends.pipe()
    reader_t, reader = await read_pipe(r)
    writer_t, writer = await write_pipe(w)
    writer_t.close()
    await wait(reader.lost)
    await wait(writer.lost)
    del reader_t, reader, writer_t, writer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [str(x.message) for x in caught if issubclass(x.category, ResourceWarning)]
