"""add_reader / add_writer / remove_reader / remove_writer, on every loop.

Stock asyncio is the reference: every assertion here holds on asyncio's SelectorEventLoop.
Waits are on events (futures set by the callbacks), never on sleeps; ``_GUARD`` only turns a
callback that never comes into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

_GUARD = 30.0  # seconds: a failure guard, never a synchronisation


async def _wait(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, _GUARD)


async def _spin(steps: int = 5) -> None:
    """Let the loop run a few full iterations (each sleep(0) is one step)."""
    for _ in range(steps):
        await asyncio.sleep(0)


def _xfail_uvloop_remove_result(loop_name: str) -> None:
    if loop_name == "uvloop":
        pytest.xfail("uvloop: remove_reader/remove_writer return None instead of True/False")


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


# -- readers ---------------------------------------------------------------------------------


async def test_reader_fires_when_data_arrives(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()
    calls = 0

    def on_readable() -> None:
        nonlocal calls
        calls += 1
        loop.remove_reader(chan.rx)
        got.set_result(chan.recv())

    loop.add_reader(chan.rx, on_readable)
    try:
        await _spin()
        assert calls == 0, "reader fired before any data arrived"
        chan.send(b"hello")
        assert await _wait(got) == b"hello"
        await _spin()
        assert calls == 1
    finally:
        loop.remove_reader(chan.rx)


async def test_reader_is_level_triggered(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    fired_enough = loop.create_future()
    calls = 0

    def on_readable() -> None:
        # Reads nothing: a level-triggered readiness keeps being reported.
        nonlocal calls
        calls += 1
        if calls == 5:
            loop.remove_reader(chan.rx)
            fired_enough.set_result(None)

    loop.add_reader(chan.rx, on_readable)
    try:
        chan.send(b"x")
        await _wait(fired_enough)
        assert calls == 5
        assert chan.recv() == b"x"
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
        await _wait(drained)
        await _spin(10)
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
    args, kwargs = await _wait(got)
    assert args == (1, "two", marker)
    assert args[2] is marker
    assert kwargs == {}


async def test_replacing_reader_replaces_callback(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    new_fired = loop.create_future()
    old_calls = 0
    new_calls = 0

    def old() -> None:
        nonlocal old_calls
        old_calls += 1

    def new() -> None:
        nonlocal new_calls
        new_calls += 1
        if new_calls == 3:  # level-triggered: fires again; old must never be among them
            loop.remove_reader(chan.rx)
            new_fired.set_result(None)

    loop.add_reader(chan.rx, old)
    loop.add_reader(chan.rx, new)
    try:
        chan.send(b"x")
        await _wait(new_fired)
        await _spin()
        assert old_calls == 0
        assert new_calls == 3
    finally:
        loop.remove_reader(chan.rx)


async def test_peer_close_wakes_reader_with_eof(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    got = loop.create_future()

    def on_readable() -> None:
        loop.remove_reader(chan.rx)
        got.set_result(chan.recv())

    loop.add_reader(chan.rx, on_readable)
    try:
        chan.close_peer_of_rx()
        assert await _wait(got) == b""
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
        await _wait(eof)
        assert b"".join(chunks) == b"last words"
        assert chunks[-1] == b""
    finally:
        loop.remove_reader(sockchan.rx)


# -- writers ---------------------------------------------------------------------------------


async def test_writer_fires_while_writable(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    fired_enough = loop.create_future()
    calls = 0

    def on_writable(tag: str) -> None:
        assert tag == "tag"
        nonlocal calls
        calls += 1
        if calls == 3:
            loop.remove_writer(chan.tx)
            fired_enough.set_result(None)

    loop.add_writer(chan.tx, on_writable, "tag")
    try:
        await _wait(fired_enough)
        await _spin()
        assert calls == 3
    finally:
        loop.remove_writer(chan.tx)


async def test_writer_waits_for_room(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        while True:
            sent += sockchan.write_tx(b"x" * 65536)
    except BlockingIOError:
        pass
    writable = loop.create_future()
    calls = 0

    def on_writable() -> None:
        nonlocal calls
        calls += 1
        loop.remove_writer(sockchan.tx)
        writable.set_result(None)

    loop.add_writer(sockchan.tx, on_writable)
    try:
        await _spin()
        assert calls == 0, "writer fired while the send buffer was full"
        received = 0
        while received < sent:
            try:
                received += len(sockchan.peer.recv(1 << 20))
            except BlockingIOError:
                break
        await _wait(writable)
        assert calls == 1
    finally:
        loop.remove_writer(sockchan.tx)


async def test_replacing_writer_replaces_callback(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    new_fired = loop.create_future()
    old_calls = 0
    new_calls = 0

    def old() -> None:
        nonlocal old_calls
        old_calls += 1

    def new() -> None:
        nonlocal new_calls
        new_calls += 1
        if new_calls == 3:
            loop.remove_writer(chan.tx)
            new_fired.set_result(None)

    loop.add_writer(chan.tx, old)
    loop.add_writer(chan.tx, new)
    try:
        await _wait(new_fired)
        await _spin()
        assert old_calls == 0
        assert new_calls == 3
    finally:
        loop.remove_writer(chan.tx)


async def test_writer_woken_when_reading_side_goes_away(chan: Channel) -> None:
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()
    state = "full"
    # Fill the buffer first, so that only the peer's departure can make tx "ready".
    try:
        while True:
            chan.write_tx(b"x" * 65536)
    except BlockingIOError:
        pass

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
        await _spin()
        assert not outcome.done(), "writer fired while the buffer was full"
        state = "peer closed"
        chan.close_peer_of_tx()
        seen_state, exc = await _wait(outcome)
        assert seen_state == "peer closed"
        assert isinstance(exc, BrokenPipeError)
    finally:
        loop.remove_writer(chan.tx)


# -- reader and writer on one fd -------------------------------------------------------------


async def test_remove_writer_keeps_reader(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    writer_fired = loop.create_future()
    read = loop.create_future()
    writer_calls = 0

    def on_writable() -> None:
        nonlocal writer_calls
        writer_calls += 1
        if not writer_fired.done():
            writer_fired.set_result(None)

    def on_readable() -> None:
        read.set_result(sockchan.recv())

    loop.add_reader(sockchan.rx, on_readable)
    loop.add_writer(sockchan.tx, on_writable)
    try:
        await _wait(writer_fired)
        loop.remove_writer(sockchan.tx)
        calls_at_removal = writer_calls
        await _spin()
        assert not read.done()
        sockchan.send(b"still here")
        assert await _wait(read) == b"still here"
        await _spin()
        assert writer_calls == calls_at_removal
    finally:
        loop.remove_reader(sockchan.rx)
        loop.remove_writer(sockchan.tx)


async def test_remove_reader_keeps_writer(sockchan: Channel) -> None:
    loop = asyncio.get_running_loop()
    writes = loop.create_future()
    reader_calls = 0
    writer_calls = 0

    def on_readable() -> None:
        nonlocal reader_calls
        reader_calls += 1

    def on_writable() -> None:
        nonlocal writer_calls
        writer_calls += 1
        if writer_calls == 3:
            writes.set_result(None)

    loop.add_reader(sockchan.rx, on_readable)
    loop.add_writer(sockchan.tx, on_writable)
    try:
        loop.remove_reader(sockchan.rx)
        sockchan.send(b"unwatched")  # readable now, but nobody is watching
        await _wait(writes)
        await _spin()
        assert reader_calls == 0
        assert writer_calls >= 3
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
        await _wait(both)
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
            "too-large": 1 << 31,
        }.get(case)
        # A registration made before the failure must survive it.
        healthy = Channel("socketpair", "int")
        got = loop.create_future()

        def on_healthy() -> None:
            loop.remove_reader(healthy.rx)
            got.set_result(healthy.recv())

        loop.add_reader(healthy.rx, on_healthy)
        if case == "closed":
            bad = _closed_fd()
        calls = 0

        def never() -> None:
            nonlocal calls
            calls += 1

        try:
            with pytest.raises(exc_type) as info:
                getattr(loop, method)(bad, never)
            if err is not None:
                assert info.value.errno == err
            # The loop is unharmed.
            healthy.send(b"alive")
            assert await _wait(got) == b"alive"
        finally:
            loop.remove_reader(healthy.rx)
            healthy.close()
        assert calls == 0
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
    sock, peer = _socketpair_at(number)
    with sock, peer:
        got = loop.create_future()

        def on_readable() -> None:
            loop.remove_reader(sock)
            got.set_result(sock.recv(100))

        loop.add_reader(sock, on_readable)
        peer.sendall(b"fresh")
        assert await _wait(got) == b"fresh"


async def test_regular_file_refused_for_both_directions_then_pipe_works() -> None:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryFile() as regular:
        with pytest.raises(PermissionError):
            loop.add_reader(regular, lambda: None)
        with pytest.raises(PermissionError):
            loop.add_writer(regular.fileno(), lambda: None)
    c = Channel("pipe", "int")
    try:
        got = loop.create_future()

        def on_readable() -> None:
            loop.remove_reader(c.rx)
            got.set_result(c.recv())

        loop.add_reader(c.rx, on_readable)
        c.send(b"ok")
        assert await _wait(got) == b"ok"
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


def _socketpair_at(fd: int) -> tuple[socket.socket, socket.socket]:
    """A connected socketpair whose first socket has the fd number *fd* (which is free)."""
    first, second = socket.socketpair()
    if first.fileno() != fd:
        os.dup2(first.fileno(), fd, inheritable=False)
        first.close()
        first = socket.socket(fileno=fd)
    first.setblocking(False)
    second.setblocking(False)
    return first, second


async def test_fd_number_reused_after_remove_and_close() -> None:
    loop = asyncio.get_running_loop()
    old, old_peer = socket.socketpair()
    number = old.fileno()
    old_calls = 0

    def old_reader() -> None:
        nonlocal old_calls
        old_calls += 1

    loop.add_reader(old, old_reader)
    loop.remove_reader(old)
    old.close()
    old_peer.close()

    new, new_peer = _socketpair_at(number)
    with new, new_peer:
        assert new.fileno() == number
        got = loop.create_future()
        new_calls = 0

        def new_reader() -> None:
            nonlocal new_calls
            new_calls += 1
            loop.remove_reader(new)
            got.set_result(new.recv(100))

        loop.add_reader(number, new_reader)
        new_peer.sendall(b"new")
        assert await _wait(got) == b"new"
        await _spin()
        assert (old_calls, new_calls) == (0, 1)


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
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        calls = 0

        def broken() -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                loop.remove_reader(a)
            raise ZeroDivisionError("boom")

        loop.add_reader(a, broken)
        b.sendall(b"x")
        await _wait(reported)

        # The loop survives, keeps calling the reader (level-triggered) and other fds work.
        got = loop.create_future()

        def healthy() -> None:
            loop.remove_reader(c)
            got.set_result(c.recv(10))

        loop.add_reader(c, healthy)
        d.sendall(b"fine")
        assert await _wait(got) == b"fine"
        await _spin()
        assert calls == 2
        assert len(contexts) == 2
        for context in contexts:
            assert isinstance(context["exception"], ZeroDivisionError)
            assert "handle" in context
    finally:
        loop.set_exception_handler(None)
        loop.remove_reader(a)
        loop.remove_reader(c)
        for s in (a, b, c, d):
            s.close()


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
            await _wait(raised)
            await _spin()
        errors = [r for r in caplog.records if r.name == "asyncio" and r.levelname == "ERROR"]
        assert len(errors) == 1
        assert errors[0].exc_info is not None
        assert errors[0].exc_info[0] is ZeroDivisionError


# -- removal and replacement from inside callbacks of the same iteration ---------------------


async def test_reader_removed_by_earlier_callback_in_same_iteration_does_not_run() -> None:
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair(), socket.socketpair()]
    ran: list[int] = []
    done = loop.create_future()
    try:
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
        await _wait(done)
        await _spin()
        assert len(ran) == 1
    finally:
        for p in pairs:
            loop.remove_reader(p[0])
            p[0].close()
            p[1].close()


async def test_reader_replaced_by_earlier_callback_in_same_iteration() -> None:
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair(), socket.socketpair()]
    ran: list[str] = []
    replacement_ran = loop.create_future()
    try:
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
        other = await _wait(replacement_ran)
        await _spin()
        assert ran == [f"original{1 - other}", f"replacement{other}"]
    finally:
        for p in pairs:
            loop.remove_reader(p[0])
            p[0].close()
            p[1].close()


async def test_writer_removed_by_reader_in_same_iteration() -> None:
    """Reader and writer of one fd, both ready in one wait; the one that runs first removes
    the other, which must not run."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    ran: list[str] = []
    done = loop.create_future()
    try:

        def first(me: str) -> None:
            ran.append(me)
            loop.remove_reader(a)
            loop.remove_writer(a)
            loop.call_soon(done.set_result, None)

        b.sendall(b"x")
        loop.add_reader(a, first, "reader")
        loop.add_writer(a, first, "writer")
        await _wait(done)
        await _spin()
        assert len(ran) == 1
    finally:
        loop.remove_reader(a)
        loop.remove_writer(a)
        a.close()
        b.close()


# -- many fds --------------------------------------------------------------------------------


async def test_many_fds_each_deliver_one_message() -> None:
    loop = asyncio.get_running_loop()
    count = 500
    pairs = [socket.socketpair() for _ in range(count)]
    received: dict[int, bytes] = {}
    all_in = loop.create_future()
    try:
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
        await _wait(all_in)
        assert received == {i: b"msg %d" % i for i in range(count)}
    finally:
        for s, peer in pairs:
            loop.remove_reader(s)
            s.close()
            peer.close()
