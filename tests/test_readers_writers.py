"""add_reader / add_writer / remove_reader / remove_writer, on every loop.

Stock asyncio is the reference: every assertion here holds on asyncio's SelectorEventLoop.
Waits are on events (futures set by the callbacks), never on sleeps; ``wait``'s guard only turns
a callback that never comes into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _helpers import noop, socketpair_at, spin, wait


def _xfail_uvloop_remove_result(loop_name: str) -> None:
    if loop_name == "uvloop":
        pytest.xfail("uvloop: remove_reader/remove_writer return None instead of True/False")


class CountingCallback:
    """A callback that counts its calls and keeps their arguments. At call number *until* it
    runs *then* (if given) and resolves ``reached`` with what *then* returned."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        until: int = 0,
        then: Callable[[], Any] | None = None,
    ) -> None:
        self.calls = 0
        self.args: list[tuple[Any, ...]] = []
        self.reached: asyncio.Future[Any] = loop.create_future()
        self._until = until
        self._then = then

    def __call__(self, *args: Any) -> None:
        self.calls += 1
        self.args.append(args)
        if self.calls == self._until:
            self.reached.set_result(self._then() if self._then is not None else None)


def read_once(
    loop: asyncio.AbstractEventLoop, watched: Any, recv: Callable[[], bytes]
) -> CountingCallback:
    """Add a reader on *watched* that removes itself at its first call and resolves
    ``reached`` with recv()."""

    def remove_and_read() -> bytes:
        loop.remove_reader(watched)
        return recv()

    reader = CountingCallback(loop, until=1, then=remove_and_read)
    loop.add_reader(watched, reader)
    return reader


@contextlib.contextmanager
def socketpairs(
    loop: asyncio.AbstractEventLoop, count: int
) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """*count* connected socketpairs; afterwards nothing stays watched on the first socket of
    each, and every socket is closed."""
    pairs = [socket.socketpair() for _ in range(count)]
    try:
        yield pairs
    finally:
        for sock, peer in pairs:
            loop.remove_reader(sock)
            loop.remove_writer(sock)
            sock.close()
            peer.close()


class FileLike:
    """The smallest object add_reader accepts besides an int: something with fileno()."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


class Channel:
    """One direction of bytes: ``rx`` is watched for reading, ``tx`` for writing, ``send``
    feeds ``rx`` from its peer. For a socketpair ``rx`` and ``tx`` are the same socket."""

    def __init__(self, medium: str, kind: str) -> None:
        self.medium = medium
        self.kind = kind
        self._files: list[Any] = []
        if medium == "socketpair":
            self.sock, self.peer = socket.socketpair()
            self.sock.setblocking(False)
            self.peer.setblocking(False)
            self._files += [self.sock, self.peer]
            self.rx_fd = self.tx_fd = self.sock.fileno()
            native: Any = self.sock
            self.rx_obj = self.tx_obj = native
        else:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self.rx_file = os.fdopen(r, "rb", buffering=0)
            self.tx_file = os.fdopen(w, "wb", buffering=0)
            self._files += [self.rx_file, self.tx_file]
            self.rx_fd, self.tx_fd = r, w
            self.rx_obj, self.tx_obj = self.rx_file, self.tx_file

    def _as(self, fd: int, native: Any) -> Any:
        if self.kind == "int":
            return fd
        if self.kind == "native":
            return native
        return FileLike(fd)

    @property
    def rx(self) -> Any:
        return self._as(self.rx_fd, self.rx_obj)

    @property
    def tx(self) -> Any:
        return self._as(self.tx_fd, self.tx_obj)

    def send(self, data: bytes) -> None:
        if self.medium == "socketpair":
            self.peer.sendall(data)
        else:
            self.tx_file.write(data)

    def recv(self, size: int = 65536) -> bytes:
        if self.medium == "socketpair":
            return self.sock.recv(size)
        return os.read(self.rx_fd, size)

    def close_peer_of_rx(self) -> None:
        """The writing side of rx goes away: rx reads EOF."""
        if self.medium == "socketpair":
            self.peer.close()
        else:
            self.tx_file.close()

    def close_peer_of_tx(self) -> None:
        """The reading side of tx goes away: writing to tx fails with EPIPE."""
        if self.medium == "socketpair":
            self.peer.close()
        else:
            self.rx_file.close()

    def write_tx(self, data: bytes) -> int:
        if self.medium == "socketpair":
            return self.sock.send(data)
        return os.write(self.tx_fd, data)

    def fill_tx(self) -> int:
        """Write to tx until it would block; returns how many bytes that took."""
        sent = 0
        try:
            while True:
                sent += self.write_tx(b"x" * 65536)
        except BlockingIOError:
            pass
        return sent

    # A direction is "reader" (add_reader on rx) or "writer" (add_writer on tx).

    def watch(
        self, loop: asyncio.AbstractEventLoop, direction: str, callback: Any, *args: Any
    ) -> None:
        if direction == "reader":
            loop.add_reader(self.rx, callback, *args)
        else:
            loop.add_writer(self.tx, callback, *args)

    def unwatch(self, loop: asyncio.AbstractEventLoop, direction: str) -> bool:
        if direction == "reader":
            return loop.remove_reader(self.rx)
        return loop.remove_writer(self.tx)

    def make_ready(self, direction: str) -> None:
        """Make the direction's fd ready: data for rx; tx is writable from the start."""
        if direction == "reader":
            self.send(b"x")

    def close(self) -> None:
        for f in self._files:
            f.close()


@pytest.fixture(
    params=[
        ("socketpair", "int"),
        ("socketpair", "native"),
        ("socketpair", "filelike"),
        ("pipe", "int"),
        ("pipe", "native"),
        ("pipe", "filelike"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def chan(request: pytest.FixtureRequest) -> Iterator[Channel]:
    c = Channel(*request.param)
    yield c
    c.close()


@pytest.fixture(params=["int", "native", "filelike"])
def sockchan(request: pytest.FixtureRequest) -> Iterator[Channel]:
    c = Channel("socketpair", request.param)
    yield c
    c.close()


# -- readers and writers alike ---------------------------------------------------------------


@pytest.mark.parametrize("direction", ["reader", "writer"])
async def test_callback_keeps_firing_while_ready(chan: Channel, direction: str) -> None:
    """Level-triggered: a callback that does nothing about the readiness is called again, with
    its arguments, until it is removed."""
    loop = asyncio.get_running_loop()
    callback = CountingCallback(loop, until=5, then=lambda: chan.unwatch(loop, direction))
    chan.watch(loop, direction, callback, "tag")
    try:
        chan.make_ready(direction)
        await wait(callback.reached)
        await spin()
        assert callback.calls == 5
        assert callback.args == [("tag",)] * 5
        if direction == "reader":
            assert chan.recv() == b"x"
    finally:
        chan.unwatch(loop, direction)


@pytest.mark.parametrize("direction", ["reader", "writer"])
async def test_adding_again_replaces_the_callback(chan: Channel, direction: str) -> None:
    loop = asyncio.get_running_loop()
    old = CountingCallback(loop)
    # Level-triggered: the new one fires again and again; the old must never be among them.
    new = CountingCallback(loop, until=3, then=lambda: chan.unwatch(loop, direction))
    chan.watch(loop, direction, old)
    chan.watch(loop, direction, new)
    try:
        chan.make_ready(direction)
        await wait(new.reached)
        await spin()
        assert old.calls == 0
        assert new.calls == 3
    finally:
        chan.unwatch(loop, direction)


# -- readers ---------------------------------------------------------------------------------


async def test_reader_fires_when_data_arrives(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    reader = read_once(loop, chan.rx, chan.recv)
    try:
        await spin()
        assert reader.calls == 0, "reader fired before any data arrived"
        chan.send(b"hello")
        assert await wait(reader.reached) == b"hello"
        await spin()
        assert reader.calls == 1
    finally:
        loop.remove_reader(chan.rx)


async def test_reader_stops_firing_once_drained(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    drained = loop.create_future()
    calls = 0

    def on_readable() -> None:
        nonlocal calls
        calls += 1
        assert sockchan.recv() == b"abc"
        if not drained.done():
            drained.set_result(None)

    loop.add_reader(sockchan.rx, on_readable)
    try:
        sockchan.send(b"abc")
        await wait(drained)
        await spin(10)
        assert calls == 1
    finally:
        loop.remove_reader(sockchan.rx)


async def test_reader_args_passed_through(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    marker = object()

    def on_readable(*args: Any, **kwargs: Any) -> None:
        loop.remove_reader(chan.rx)
        got.set_result((args, kwargs))

    loop.add_reader(chan.rx, on_readable, 1, "two", marker)
    chan.send(b"x")
    args, kwargs = await wait(got)
    assert args == (1, "two", marker)
    assert args[2] is marker
    assert kwargs == {}


async def test_peer_close_wakes_reader_with_eof(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    reader = read_once(loop, chan.rx, chan.recv)
    try:
        chan.close_peer_of_rx()
        assert await wait(reader.reached) == b""
    finally:
        loop.remove_reader(chan.rx)


async def test_data_then_peer_close(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    eof = loop.create_future()
    chunks: list[bytes] = []

    def on_readable() -> None:
        data = sockchan.recv()
        chunks.append(data)
        if not data:
            loop.remove_reader(sockchan.rx)
            eof.set_result(None)

    loop.add_reader(sockchan.rx, on_readable)
    try:
        sockchan.send(b"last words")
        sockchan.close_peer_of_rx()
        await wait(eof)
        assert b"".join(chunks) == b"last words"
        assert chunks[-1] == b""
    finally:
        loop.remove_reader(sockchan.rx)


# -- writers ---------------------------------------------------------------------------------


async def test_writer_waits_for_room(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    sent = sockchan.fill_tx()
    writer = CountingCallback(loop, until=1, then=lambda: loop.remove_writer(sockchan.tx))
    loop.add_writer(sockchan.tx, writer)
    try:
        await spin()
        assert writer.calls == 0, "writer fired while the send buffer was full"
        received = 0
        while received < sent:
            try:
                received += len(sockchan.peer.recv(1 << 20))
            except BlockingIOError:
                break
        await wait(writer.reached)
        assert writer.calls == 1
    finally:
        loop.remove_writer(sockchan.tx)


async def test_writer_woken_when_reading_side_goes_away(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()
    state = "full"
    # Fill the buffer first, so that only the peer's departure can make tx "ready".
    chan.fill_tx()

    def on_ready() -> None:
        loop.remove_writer(chan.tx)
        try:
            chan.write_tx(b"y")
        except OSError as exc:
            outcome.set_result((state, exc))
        else:
            outcome.set_result((state, None))

    loop.add_writer(chan.tx, on_ready)
    try:
        await spin()
        assert not outcome.done(), "writer fired while the buffer was full"
        state = "peer closed"
        chan.close_peer_of_tx()
        seen_state, exc = await wait(outcome)
        assert seen_state == "peer closed"
        assert isinstance(exc, BrokenPipeError)
    finally:
        loop.remove_writer(chan.tx)


# -- reader and writer on one fd -------------------------------------------------------------


async def test_remove_writer_keeps_reader(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    writer = CountingCallback(loop, until=1)
    reader = read_once(loop, sockchan.rx, sockchan.recv)
    loop.add_writer(sockchan.tx, writer)
    try:
        await wait(writer.reached)
        loop.remove_writer(sockchan.tx)
        calls_at_removal = writer.calls
        await spin()
        assert not reader.reached.done()
        sockchan.send(b"still here")
        assert await wait(reader.reached) == b"still here"
        await spin()
        assert writer.calls == calls_at_removal
    finally:
        loop.remove_reader(sockchan.rx)
        loop.remove_writer(sockchan.tx)


async def test_remove_reader_keeps_writer(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    reader = CountingCallback(loop)
    writer = CountingCallback(loop, until=3)
    loop.add_reader(sockchan.rx, reader)
    loop.add_writer(sockchan.tx, writer)
    try:
        loop.remove_reader(sockchan.rx)
        sockchan.send(b"unwatched")  # readable now, but nobody is watching
        await wait(writer.reached)
        await spin()
        assert reader.calls == 0
        assert writer.calls >= 3
        assert sockchan.recv() == b"unwatched"
    finally:
        loop.remove_reader(sockchan.rx)
        loop.remove_writer(sockchan.tx)


async def test_reader_and_writer_fire_independently(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    both = loop.create_future()
    seen: set[str] = set()

    def mark(which: str) -> None:
        seen.add(which)
        if which == "w":
            loop.remove_writer(sockchan.tx)
        else:
            loop.remove_reader(sockchan.rx)
            assert sockchan.recv() == b"x"
        if seen == {"r", "w"}:
            both.set_result(None)

    loop.add_writer(sockchan.tx, mark, "w")
    loop.add_reader(sockchan.rx, mark, "r")
    try:
        sockchan.send(b"x")
        await wait(both)
    finally:
        loop.remove_reader(sockchan.rx)
        loop.remove_writer(sockchan.tx)


# -- remove_* return values ------------------------------------------------------------------


async def test_remove_return_values(sockchan: Channel, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    results = []
    results.append(loop.remove_reader(sockchan.rx))  # never added
    results.append(loop.remove_writer(sockchan.tx))
    loop.add_reader(sockchan.rx, lambda: None)
    results.append(loop.remove_writer(sockchan.tx))  # only the reader is there
    results.append(loop.remove_reader(sockchan.rx))
    results.append(loop.remove_reader(sockchan.rx))  # already removed
    loop.add_writer(sockchan.tx, lambda: None)
    loop.add_reader(sockchan.rx, lambda: None)
    results.append(loop.remove_writer(sockchan.tx))
    results.append(loop.remove_reader(sockchan.rx))
    results.append(loop.remove_writer(sockchan.tx))
    _xfail_uvloop_remove_result(loop_name)
    assert results == [False, False, False, True, False, True, True, False]


async def test_remove_by_other_spelling_of_same_fd(sockchan: Channel, loop_name: str) -> None:
    """Added as an object, removed as the int (and the other way round): same fd."""
    loop = asyncio.get_running_loop()
    fd = sockchan.rx_fd
    loop.add_reader(sockchan.rx, lambda: None)
    removed_int = loop.remove_reader(fd)
    loop.add_reader(fd, lambda: None)
    removed_obj = loop.remove_reader(FileLike(fd))
    _xfail_uvloop_remove_result(loop_name)
    assert (removed_int, removed_obj) == (True, True)
    assert loop.remove_reader(fd) is False


# -- bad input -------------------------------------------------------------------------------


class NoFileno:
    pass


class NegativeFileno:
    def fileno(self) -> int:
        return -1


def _closed_fd() -> int:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r  # nothing opens a file before the caller uses it


def _never_opened_fd() -> int:
    fd = max(int(name) for name in os.listdir("/proc/self/fd")) + 64
    with pytest.raises(OSError):
        os.fstat(fd)
    return fd


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
@pytest.mark.parametrize(
    ("case", "exc_type", "err"),
    [
        ("negative", ValueError, None),
        ("no-fileno", ValueError, None),
        ("negative-fileno", ValueError, None),
        ("string", ValueError, None),
        ("closed", OSError, errno.EBADF),
        ("never-opened", OSError, errno.EBADF),
        ("regular-file", PermissionError, errno.EPERM),
        ("far-beyond-the-open-ones", OSError, errno.EBADF),  # no table that large either
        ("largest-int", OSError, errno.EBADF),
        ("too-large", OverflowError, None),
    ],
)
async def test_bad_fd_is_refused(
    method: str, case: str, exc_type: type[Exception], err: int | None, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryFile() as regular:
        bad: Any = {
            "negative": -1,
            "no-fileno": NoFileno(),
            "negative-fileno": NegativeFileno(),
            "string": "3",
            "regular-file": regular.fileno(),
            "never-opened": _never_opened_fd(),
            "far-beyond-the-open-ones": 10**9,
            "largest-int": (1 << 31) - 1,
            "too-large": 1 << 31,
        }.get(case)
        # A registration made before the failure must survive it.
        healthy = Channel("socketpair", "int")
        healthy_reader = read_once(loop, healthy.rx, healthy.recv)
        if case == "closed":
            bad = _closed_fd()
        never = CountingCallback(loop)
        try:
            with pytest.raises(exc_type) as info:
                getattr(loop, method)(bad, never)
            if err is not None:
                assert info.value.errno == err
            # The loop is unharmed.
            healthy.send(b"alive")
            assert await wait(healthy_reader.reached) == b"alive"
        finally:
            loop.remove_reader(healthy.rx)
            healthy.close()
        assert never.calls == 0
        if exc_type is ValueError:
            with pytest.raises(ValueError):
                loop.remove_reader(bad)
            return
        # Nothing was left registered under that fd number.
        removed = (loop.remove_reader(bad), loop.remove_writer(bad))
        _xfail_uvloop_remove_result(loop_name)
        assert removed == (False, False)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
async def test_failed_add_leaves_fd_number_usable(method: str) -> None:
    """After add_* refused a closed fd, a new socket that gets the number works normally."""
    loop = asyncio.get_running_loop()
    number = _closed_fd()
    with pytest.raises(OSError):
        getattr(loop, method)(number, lambda: None)
    sock, peer = socketpair_at(number)
    with sock, peer:
        reader = read_once(loop, sock, lambda: sock.recv(100))
        peer.sendall(b"fresh")
        assert await wait(reader.reached) == b"fresh"


async def test_regular_file_refused_for_both_directions_then_pipe_works() -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryFile() as regular:
        with pytest.raises(PermissionError):
            loop.add_reader(regular, lambda: None)
        with pytest.raises(PermissionError):
            loop.add_writer(regular.fileno(), lambda: None)
    c = Channel("pipe", "int")
    try:
        reader = read_once(loop, c.rx, c.recv)
        c.send(b"ok")
        assert await wait(reader.reached) == b"ok"
    finally:
        c.close()


def test_add_on_closed_loop(new_loop: Any, loop_name: str) -> None:
    loop = new_loop()
    a, b = socket.socketpair()
    with a, b:
        loop.close()
        with pytest.raises(RuntimeError):
            loop.add_reader(a, lambda: None)
        with pytest.raises(RuntimeError):
            loop.add_writer(a, lambda: None)
        removed = (loop.remove_reader(a), loop.remove_writer(a))
        _xfail_uvloop_remove_result(loop_name)
        assert removed == (False, False)


# -- fd reuse --------------------------------------------------------------------------------


async def test_fd_number_reused_after_remove_and_close() -> None:
    loop = asyncio.get_running_loop()
    old, old_peer = socket.socketpair()
    number = old.fileno()
    old_reader = CountingCallback(loop)
    loop.add_reader(old, old_reader)
    loop.remove_reader(old)
    old.close()
    old_peer.close()

    new, new_peer = socketpair_at(number)
    with new, new_peer:
        assert new.fileno() == number
        new_reader = read_once(loop, number, lambda: new.recv(100))
        new_peer.sendall(b"new")
        assert await wait(new_reader.reached) == b"new"
        await spin()
        assert (old_reader.calls, new_reader.calls) == (0, 1)


# -- errors in callbacks ---------------------------------------------------------------------


async def test_reader_exception_goes_to_handler_and_loop_keeps_running() -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    reported = loop.create_future()

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        contexts.append(context)
        if len(contexts) == 2:
            reported.set_result(None)

    loop.set_exception_handler(handler)
    try:
        with socketpairs(loop, 2) as [(a, b), (c, d)]:
            calls = 0

            def broken() -> None:
                nonlocal calls
                calls += 1
                if calls == 2:
                    loop.remove_reader(a)
                raise ZeroDivisionError("boom")

            loop.add_reader(a, broken)
            b.sendall(b"x")
            await wait(reported)

            # The loop survives, keeps calling the reader (level-triggered) and other fds work.
            healthy = read_once(loop, c, lambda: c.recv(10))
            d.sendall(b"fine")
            assert await wait(healthy.reached) == b"fine"
            await spin()
            assert calls == 2
            assert len(contexts) == 2
            for context in contexts:
                assert isinstance(context["exception"], ZeroDivisionError)
                assert "handle" in context
    finally:
        loop.set_exception_handler(None)


@pytest.mark.loop_errors
async def test_reader_exception_is_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    with a, b:
        raised = loop.create_future()

        def broken() -> None:
            loop.remove_reader(a)
            raised.set_result(None)
            raise ZeroDivisionError("boom")

        with caplog.at_level("ERROR", logger="asyncio"):
            loop.add_reader(a, broken)
            b.sendall(b"x")
            await wait(raised)
            await spin()
        errors = [r for r in caplog.records if r.name == "asyncio" and r.levelname == "ERROR"]
        assert len(errors) == 1
        assert errors[0].exc_info is not None
        assert errors[0].exc_info[0] is ZeroDivisionError


# -- removal and replacement from inside callbacks of the same iteration ---------------------


async def test_reader_removed_by_earlier_callback_in_same_iteration_does_not_run() -> None:
    loop = asyncio.get_running_loop()
    ran: list[int] = []
    done = loop.create_future()
    with socketpairs(loop, 2) as pairs:
        socks = [p[0] for p in pairs]

        def on_readable(me: int) -> None:
            ran.append(me)
            # Whichever runs first removes both readers: the other was made ready by the
            # same wait, and must not run.
            loop.remove_reader(socks[0])
            loop.remove_reader(socks[1])
            loop.call_soon(done.set_result, None)

        for i, s in enumerate(socks):
            loop.add_reader(s, on_readable, i)
        # Both readable before the loop next waits: one iteration reports both.
        for _, peer in pairs:
            peer.sendall(b"x")
        await wait(done)
        await spin()
        assert len(ran) == 1


async def test_reader_replaced_by_earlier_callback_in_same_iteration() -> None:
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    replacement_ran = loop.create_future()
    with socketpairs(loop, 2) as pairs:
        socks = [p[0] for p in pairs]

        def replacement(me: int) -> None:
            ran.append(f"replacement{me}")
            loop.remove_reader(socks[me])
            replacement_ran.set_result(me)

        def original(me: int) -> None:
            ran.append(f"original{me}")
            loop.remove_reader(socks[me])
            other = 1 - me
            loop.add_reader(socks[other], replacement, other)

        for i, s in enumerate(socks):
            loop.add_reader(s, original, i)
        for _, peer in pairs:
            peer.sendall(b"x")
        other = await wait(replacement_ran)
        await spin()
        assert ran == [f"original{1 - other}", f"replacement{other}"]


async def test_writer_removed_by_reader_in_same_iteration() -> None:
    """Reader and writer of one fd, both ready in one wait; the one that runs first removes
    the other, which must not run."""
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    done = loop.create_future()
    with socketpairs(loop, 1) as [(a, b)]:

        def first(me: str) -> None:
            ran.append(me)
            loop.remove_reader(a)
            loop.remove_writer(a)
            loop.call_soon(done.set_result, None)

        b.sendall(b"x")
        loop.add_reader(a, first, "reader")
        loop.add_writer(a, first, "writer")
        await wait(done)
        await spin()
        assert len(ran) == 1


# -- many fds --------------------------------------------------------------------------------


async def test_many_fds_each_deliver_one_message() -> None:
    loop = asyncio.get_running_loop()
    count = 500
    received: dict[int, bytes] = {}
    all_in = loop.create_future()
    with socketpairs(loop, count) as pairs:
        for s, _ in pairs:
            s.setblocking(False)

        def on_readable(i: int, s: socket.socket) -> None:
            loop.remove_reader(s)
            assert i not in received
            received[i] = s.recv(100)
            if len(received) == count:
                all_in.set_result(None)

        for i, (s, _) in enumerate(pairs):
            loop.add_reader(s.fileno(), on_readable, i, s)
        for i, (_, peer) in enumerate(pairs):
            peer.sendall(b"msg %d" % i)
        await wait(all_in)
        assert received == {i: b"msg %d" % i for i in range(count)}


def test_remove_reader_finds_a_socket_closed_since_it_was_added(new_loop, loop_name):
    # asyncio's selectors find the registration of a closed file object by identity.
    loop = new_loop()
    rx, tx = socket.socketpair()
    try:
        loop.add_reader(rx, noop)
        rx.close()
        removed = loop.remove_reader(rx)
        if loop_name == "uvloop" and removed is None:
            pytest.xfail("uvloop: remove_reader/remove_writer return None instead of True/False")
        assert removed is True
        with pytest.raises(ValueError):  # no longer registered, and no usable fd
            loop.remove_reader(rx)
    finally:
        rx.close()
        tx.close()
