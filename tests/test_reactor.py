"""epolloop only: the kernel layer (_linux) and the reactor's own guarantees (DESIGN.md, "The
reactor contract"). These use epolloop directly and are not run on the other loops; the reactor
tests run on each epolloop core (the conftest's epolloop loops: "epolloop", the live core, and
"epolloop-pure" beside the C core).

Both cores offer the same view of their insides, and these tests use nothing else:
``loop._timers`` (the heap: a list of (deadline, sequence, TimerHandle); the C core returns a
fresh copy at each access, so read it again after every step and never change it),
``loop._watchers`` (fd -> [reader handle or None, writer handle or None]; a copy too), the
kernel objects' numbers ``loop._epoll_fd``, ``loop._timer_fd`` and ``loop._wakeup_fd``, and
``loop._run_once()``. What the reactor did with its kernel objects is asked of the kernel:
/proc/self/fdinfo shows a timerfd's deadline and the flags of its last timerfd_settime, and an
eventfd's counter; /proc/self/task/<tid>/syscall the syscall a thread is blocked in, and
/proc/thread-self/io how many write(2)s the calling thread has made.

Steps are driven by hand with ``loop._run_once()`` where a test needs to see one iteration.
A blocking step (epoll_wait with timeout -1) is made to return at once by keeping a
"wake" socket readable with a reader registered on it; waits are on events, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import importlib.util
import math
import os
import platform
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import NamedTuple

import pytest
from _helpers import GUARD, LoopFactory, socketpair_at

import epolloop
from epolloop import _linux

# Every loop test here runs on each of epolloop's cores (the `loop_factory` parameter).
pytestmark = pytest.mark.epolloop_only


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


def _readable(fd: int, timeout: float = 0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


@pytest.fixture
def loop(loop_factory: LoopFactory) -> Iterator[epolloop.Loop]:
    loop = loop_factory()
    try:
        yield loop  # type: ignore[misc]
    finally:
        loop.close()


@pytest.fixture
def wake(loop: epolloop.Loop) -> Iterator[socket.socket]:
    """Keeps the loop's blocking waits short: a readable socket with a do-nothing reader, so
    epoll_wait(-1) returns at once and every step still takes the blocking path."""
    a, b = socket.socketpair()
    b.sendall(b"w")
    loop.add_reader(a, lambda: None)
    try:
        yield a
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


# -- the kernel layer ------------------------------------------------------------------------


def _load_ctypes_linux() -> ModuleType:
    """A private copy of epolloop._linux built as if os.timerfd_* did not exist (the path
    Python < 3.13 takes), so both timerfd implementations are tested on every interpreter."""
    saved = {name: getattr(os, name) for name in dir(os) if name.startswith("timerfd_")}
    spec = importlib.util.spec_from_file_location("_epolloop_linux_ctypes", _linux.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        for name in saved:
            delattr(os, name)
        spec.loader.exec_module(module)
    finally:
        for name, value in saved.items():
            setattr(os, name, value)
    return module


@pytest.fixture(params=["live", "ctypes"])
def linux(request: pytest.FixtureRequest) -> ModuleType:
    return _linux if request.param == "live" else _load_ctypes_linux()


@pytest.fixture
def timer_fd(linux: ModuleType) -> Iterator[int]:
    fd = linux.timerfd_create()
    try:
        yield fd
    finally:
        os.close(fd)


def test_timerfd_arm_at_closed_fd_is_ebadf(linux: ModuleType) -> None:
    fd = linux.timerfd_create()
    os.close(fd)
    with pytest.raises(OSError) as info:
        linux.timerfd_arm_at(fd, time.monotonic() + 1)
    assert info.value.errno == errno.EBADF


def test_timerfd_arm_at_non_timer_fd_is_einval(linux: ModuleType) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            linux.timerfd_arm_at(r, time.monotonic() + 1)
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)


def test_timerfd_is_nonblocking_and_cloexec(timer_fd: int) -> None:
    assert not os.get_blocking(timer_fd)
    assert not os.get_inheritable(timer_fd)


def test_timerfd_fires_at_absolute_deadline_not_before(linux: ModuleType, timer_fd: int) -> None:
    ep = select.epoll()
    try:
        ep.register(timer_fd, select.EPOLLIN)
        deadline = time.monotonic() + 0.05
        linux.timerfd_arm_at(timer_fd, deadline)
        early = _readable(timer_fd)
        checked_at = time.monotonic()
        assert not early or checked_at >= deadline, "fired before its deadline"
        events = ep.poll(GUARD)
        woke = time.monotonic()
        assert events == [(timer_fd, select.EPOLLIN)]
        assert woke >= deadline
        assert int.from_bytes(os.read(timer_fd, 8), "little") == 1
    finally:
        ep.close()


def test_timerfd_deadline_is_rounded_up(linux: ModuleType, timer_fd: int) -> None:
    # A deadline a fraction of a nanosecond past an integer nanosecond count must not fire at
    # the nanosecond below it: absolute deadlines are rounded up.
    assert linux._deadline_ns(1.0000000001) == 1_000_000_001
    assert linux._deadline_ns(2.5) == 2_500_000_000
    deadline = time.monotonic() + 0.02
    linux.timerfd_arm_at(timer_fd, deadline)
    assert _readable(timer_fd, GUARD)
    assert time.monotonic() >= deadline


@pytest.mark.parametrize("deadline", [0.0, -5.0, 1e-12])
def test_timerfd_past_deadline_fires_at_once(
    linux: ModuleType, timer_fd: int, deadline: float
) -> None:
    # 0 would mean "disarm" to the kernel and negatives are refused: both must fire instead.
    linux.timerfd_arm_at(timer_fd, deadline)
    assert _readable(timer_fd, GUARD)
    assert int.from_bytes(os.read(timer_fd, 8), "little") == 1
    assert not _readable(timer_fd)


def test_timerfd_rearm_replaces_deadline(linux: ModuleType, timer_fd: int) -> None:
    linux.timerfd_arm_at(timer_fd, time.monotonic() + 3600)
    linux.timerfd_arm_at(timer_fd, 0.0)
    assert _readable(timer_fd, GUARD)
    # Arming again (the reactor never reads its timerfd) clears the expiration.
    linux.timerfd_arm_at(timer_fd, time.monotonic() + 3600)
    assert not _readable(timer_fd)


def test_timerfd_disarm_clears_an_expiration(linux: ModuleType, timer_fd: int) -> None:
    linux.timerfd_disarm(timer_fd)  # never armed: no error
    linux.timerfd_arm_at(timer_fd, 0.0)
    assert _readable(timer_fd, GUARD)
    linux.timerfd_disarm(timer_fd)
    assert not _readable(timer_fd)
    with pytest.raises(BlockingIOError):
        os.read(timer_fd, 8)  # nothing to read: disarmed, and no expiration counted


def test_epoll_is_cloexec() -> None:
    ep = _linux.epoll()
    try:
        assert not os.get_inheritable(ep.fileno())
    finally:
        ep.close()


def test_eventfd_signal_and_drain() -> None:
    fd = _linux.eventfd()
    try:
        assert not os.get_blocking(fd)
        assert not os.get_inheritable(fd)
        _linux.eventfd_drain(fd)  # empty: must not raise
        assert not _readable(fd)
        for _ in range(3):
            _linux.eventfd_signal(fd)
        assert _readable(fd)
        _linux.eventfd_drain(fd)
        assert not _readable(fd)
        _linux.eventfd_drain(fd)  # drained twice: still fine
    finally:
        os.close(fd)


def test_eventfd_signal_on_saturated_counter_does_not_raise() -> None:
    fd = _linux.eventfd()
    try:
        os.eventfd_write(fd, 0xFFFFFFFFFFFFFFFE)  # the maximum counter value
        _linux.eventfd_signal(fd)  # would block: swallowed, the reader will wake anyway
        assert _readable(fd)
        _linux.eventfd_drain(fd)
        assert not _readable(fd)
    finally:
        os.close(fd)


def test_eventfd_errors_surface_as_oserror() -> None:
    fd = _linux.eventfd()
    os.close(fd)
    with pytest.raises(OSError) as info:
        _linux.eventfd_signal(fd)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        _linux.eventfd_drain(fd)
    assert info.value.errno == errno.EBADF


# -- what the reactor did with its kernel objects, asked of the kernel -----------------------


def _fdinfo(fd: int) -> dict[str, str]:
    """The kernel's /proc/self/fdinfo entries for *fd*."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        return {
            key.strip(): value.strip() for key, _, value in (line.partition(":") for line in info)
        }


class _Timerfd(NamedTuple):
    flags: int  # the flags of the last timerfd_settime (0 if there was none)
    # Bounds of the armed absolute deadline (ns of CLOCK_MONOTONIC); None if not armed.
    deadline: tuple[int, int] | None


def _timerfd(fd: int) -> _Timerfd:
    # fdinfo tells the time left; the clock read on both sides bounds the absolute deadline.
    before = time.monotonic_ns()
    info = _fdinfo(fd)
    after = time.monotonic_ns()
    seconds, nanoseconds = map(int, info["it_value"].strip("()").split(","))
    left = seconds * 1_000_000_000 + nanoseconds
    return _Timerfd(int(info["settime flags"], 8), (before + left, after + left) if left else None)


def _ns(when: float) -> int:
    return math.ceil(when * 1e9)


def _armed_for(fd: int, when: float) -> bool:
    """Whether the timerfd *fd* is armed for the deadline *when* (loop.time() seconds)."""
    deadline = _timerfd(fd).deadline
    # 1 us of slack for the cores' conversions of a float deadline to nanoseconds.
    return deadline is not None and deadline[0] - 1000 <= _ns(when) <= deadline[1] + 1000


# Flags no core uses: TFD_TIMER_CANCEL_ON_SET does nothing on CLOCK_MONOTONIC, but fdinfo shows
# it among the flags of the last timerfd_settime until the next call replaces them.
_MARK = _linux.TFD_TIMER_ABSTIME | 2


@functools.cache
def _ctypes_linux() -> ModuleType:
    return _load_ctypes_linux()


def _mark(fd: int, when: float | None) -> None:
    """Set the timerfd *fd* again to the deadline it holds (*when*; None: disarmed), with the
    _MARK flags: until the reactor calls timerfd_settime itself, _rearmed() is False."""
    linux = _ctypes_linux()
    seconds, nanoseconds = divmod(0 if when is None else _ns(when), 1_000_000_000)
    spec = linux._Itimerspec(it_value=linux._Timespec(seconds, nanoseconds))
    if linux._timerfd_settime(fd, _MARK, spec, None) < 0:
        linux._raise_errno()
    assert not _rearmed(fd)


def _rearmed(fd: int) -> bool:
    """Whether the reactor has called timerfd_settime on *fd* since _mark()."""
    return _timerfd(fd).flags != _MARK


def _eventfd_count(fd: int) -> int:
    """The eventfd's counter: what was written to it since it was last read."""
    return int(_fdinfo(fd)["eventfd-count"], 16)


def _writes_by_this_thread() -> int:
    """How many write(2)-family syscalls the calling thread has made (the kernel's per-task I/O
    accounting)."""
    with open("/proc/thread-self/io") as io:
        counts = dict(line.split(":") for line in io)
    return int(counts["syscw"])


needs_write_counts = pytest.mark.skipif(
    not os.path.exists("/proc/thread-self/io"),
    reason="the kernel keeps no per-task I/O counts (CONFIG_TASK_IO_ACCOUNTING)",
)

# The syscalls a loop can wait in (epoll_wait, epoll_pwait, epoll_pwait2) on this machine.
_EPOLL_WAITS = {"x86_64": {232, 281, 441}, "aarch64": {22, 441}}.get(platform.machine())

needs_epoll_wait_numbers = pytest.mark.skipif(
    _EPOLL_WAITS is None,
    reason=f"the epoll_wait syscall numbers of {platform.machine()} are not listed here",
)


def _in_epoll_wait(native_id: int) -> bool:
    """Whether the thread *native_id* (threading.get_native_id()) is inside an epoll wait."""
    assert _EPOLL_WAITS is not None
    with open(f"/proc/self/task/{native_id}/syscall") as syscall:
        number = syscall.read().split()[0]  # "running" unless blocked in a syscall
    return number.isdigit() and int(number) in _EPOLL_WAITS


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll (from a thread other than the loop's) until predicate() holds; GUARD bounds it."""
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {GUARD} s")
        time.sleep(0.001)


# -- timers ----------------------------------------------------------------------------------


def test_timerfd_rearmed_only_for_an_earlier_deadline(
    loop: epolloop.Loop, wake: socket.socket
) -> None:
    fd = loop._timer_fd
    now = loop.time()
    earliest = loop.call_at(now + 1000, pytest.fail, "must not run")
    loop._run_once()
    assert _armed_for(fd, now + 1000)
    _mark(fd, now + 1000)

    later = [loop.call_at(now + 2000 + i, pytest.fail, "must not run") for i in range(1000)]
    for _ in range(3):
        loop._run_once()
    assert not _rearmed(fd), "later timers re-armed the timerfd"

    # The earliest goes away: the armed deadline is left to fire early, no syscall now.
    earliest.cancel()
    loop._run_once()
    loop._run_once()
    assert not _rearmed(fd), "a later earliest deadline re-armed the timerfd"
    assert _armed_for(fd, now + 1000)

    sooner = loop.call_at(now + 500, pytest.fail, "must not run")
    loop._run_once()
    assert _rearmed(fd)
    assert _armed_for(fd, now + 500)
    _mark(fd, now + 500)
    loop._run_once()
    assert not _rearmed(fd)
    for timer in [sooner, *later]:
        timer.cancel()


@needs_epoll_wait_numbers
def test_timerfd_that_fires_early_is_rearmed_for_the_live_deadline(loop: epolloop.Loop) -> None:
    fd = loop._timer_fd
    loop_thread = threading.get_native_id()
    now = loop.time()
    doomed = loop.call_at(now + 0.02, pytest.fail, "cancelled: must not run")
    live = loop.call_at(now + 1000, pytest.fail, "must not run: the test stops the loop first")
    armed_for_doomed: list[bool] = []
    armed_for_live: list[bool] = []
    failures: list[BaseException] = []

    def watch() -> None:
        # The timerfd fires early, the loop finds nothing due, arms it again and sleeps.
        try:
            _wait_until(
                lambda: _rearmed(fd) and _in_epoll_wait(loop_thread),
                "the loop sleeping with the timerfd armed again",
            )
            armed_for_live.append(_armed_for(fd, now + 1000))
        except BaseException as exc:
            failures.append(exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    watcher = threading.Thread(target=watch)

    # Data already waiting: the first step arms the timerfd for `doomed` on its way into
    # epoll_wait, which returns at once with the reader, which cancels `doomed`.
    rx, tx = socket.socketpair()

    def cancel_doomed() -> None:
        try:
            rx.recv(1)
            loop.remove_reader(rx)
            # (Unless a loaded machine let its deadline pass before this first step ended.)
            armed_for_doomed.append(_armed_for(fd, now + 0.02) or loop.time() >= now + 0.02)
            doomed.cancel()
            _mark(fd, now + 0.02)
        finally:
            watcher.start()  # which stops the loop in any case

    try:
        tx.send(b"x")
        loop.add_reader(rx, cancel_doomed)
        loop.run_forever()
    finally:
        if watcher.is_alive():
            watcher.join(GUARD)
        rx.close()
        tx.close()
        live.cancel()
    assert not failures, failures
    # Armed for the cancelled timer, which fired early and found nothing; then for the live one.
    assert armed_for_doomed == [True]
    assert armed_for_live == [True]


@needs_epoll_wait_numbers
def test_timerfd_that_fired_is_clear_while_the_loop_sleeps(loop: epolloop.Loop) -> None:
    # The reactor never reads its timerfd: disarming it once the last timer has run is what
    # stops it polling readable. A readable one would end every blocking wait at once.
    fd = loop._timer_fd
    loop_thread = threading.get_native_id()
    readable_while_asleep: list[bool] = []
    failures: list[BaseException] = []

    def watch() -> None:
        try:
            _wait_until(lambda: _in_epoll_wait(loop_thread), "the loop asleep after its timer")
            readable_while_asleep.append(bool(select.select([fd], [], [], 0)[0]))
        except BaseException as exc:
            failures.append(exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    watcher = threading.Thread(target=watch)
    loop.call_later(0.001, watcher.start)
    try:
        loop.run_forever()
    finally:
        watcher.join(GUARD)
    assert not failures, failures
    assert readable_while_asleep == [False]


def test_timerfd_not_armed_without_timers(loop: epolloop.Loop, wake: socket.socket) -> None:
    fd = loop._timer_fd
    _mark(fd, None)
    for _ in range(3):
        loop._run_once()
    assert not _rearmed(fd)
    assert _timerfd(fd).deadline is None


def test_timerfd_wakes_blocking_loop_not_before_deadline(loop: epolloop.Loop) -> None:
    """No fd, no callback: only the timerfd can end the blocking waits."""
    fired: list[float] = []
    when = loop.time() + 0.05
    loop.call_at(when, lambda: (fired.append(loop.time()), loop.stop()))
    loop.run_forever()
    assert len(fired) == 1
    assert fired[0] >= when


def test_timers_never_fire_early(loop: epolloop.Loop) -> None:
    base = loop.time()
    seen: list[tuple[float, float]] = []
    count = 50

    def check(when: float) -> None:
        seen.append((when, loop.time()))
        if len(seen) == count:
            loop.stop()

    for i in range(count):
        when = base + 0.001 * ((i * 37) % count)
        loop.call_at(when, check, when)
    loop.run_forever()
    assert len(seen) == count
    for when, at in seen:
        assert at >= when
    assert [when for when, _ in seen] == sorted(when for when, _ in seen)


def test_equal_deadlines_run_in_call_order(loop: epolloop.Loop) -> None:
    order: list[tuple[str, int]] = []
    now = loop.time()
    later, sooner = now + 0.02, now + 0.01
    for i in range(1000):
        # Interleaved: two groups, each with one deadline shared by 500 timers.
        loop.call_at(later if i % 2 else sooner, order.append, ("later" if i % 2 else "sooner", i))
    loop.call_at(later, loop.stop)
    loop.run_forever()
    assert order == [("sooner", i) for i in range(0, 1000, 2)] + [
        ("later", i) for i in range(1, 1000, 2)
    ]


def test_equal_past_deadlines_run_in_call_order_in_one_step(loop: epolloop.Loop) -> None:
    order: list[int] = []
    when = loop.time() - 1
    for i in range(1000):
        loop.call_at(when, order.append, i)
    loop._run_once()  # all due: the wait does not block, every one runs in this step
    assert order == list(range(1000))
    assert loop._timers == []


def test_cancelled_timers_are_compacted(loop: epolloop.Loop) -> None:
    now = loop.time()
    timers = [loop.call_at(now + 1000 + (i * 7919) % 1000, pytest.fail) for i in range(1000)]
    live = {t for i, t in enumerate(timers) if i % 10 == 0}
    for timer in timers:
        if timer not in live:
            timer.cancel()
    assert len(live) == 100
    loop.call_soon(lambda: None)  # the step must not block
    loop._run_once()
    heap = loop._timers
    assert {entry[2] for entry in heap} == live
    assert len(heap) == 100
    # Still a heap ordered by (deadline, sequence).
    for i in range(1, len(heap)):
        assert heap[(i - 1) // 2][:2] <= heap[i][:2]
    for timer in live:
        timer.cancel()


def test_compacted_heap_still_runs_live_timers_in_order(loop: epolloop.Loop) -> None:
    order: list[int] = []
    when = loop.time() + 0.01
    timers = [loop.call_at(when + (i % 7) * 1e-4, order.append, i) for i in range(1000)]
    for i, timer in enumerate(timers):
        if i % 10:
            timer.cancel()
    loop.call_at(when + 1e-3, loop.stop)
    loop.run_forever()
    expected = sorted(range(0, 1000, 10), key=lambda i: (i % 7, i))
    assert order == expected


def test_cancelled_earliest_timer_does_not_run_and_next_one_does(loop: epolloop.Loop) -> None:
    ran: list[str] = []
    now = loop.time()
    first = loop.call_at(now + 0.01, ran.append, "first")
    loop.call_at(now + 0.02, lambda: (ran.append("second"), loop.stop()))
    first.cancel()
    loop.run_forever()
    assert ran == ["second"]


# -- cross-thread wake-ups -------------------------------------------------------------------


def test_threadsafe_calls_while_busy_do_not_write_eventfd(loop: epolloop.Loop) -> None:
    total = 10_000
    busy = threading.Event()
    finished_calling = threading.Event()
    written_while_busy: list[int] = []
    ran = 0

    def callback() -> None:
        nonlocal ran
        ran += 1
        if ran == total:
            loop.stop()

    def other_thread() -> None:
        assert busy.wait(GUARD)
        for _ in range(total):
            loop.call_soon_threadsafe(callback)
        finished_calling.set()

    def keep_loop_busy() -> None:
        busy.set()
        assert finished_calling.wait(GUARD), "the other thread never finished"
        # Busy here, the loop has not read the eventfd: its counter holds every write.
        written_while_busy.append(_eventfd_count(loop._wakeup_fd))

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        loop.call_soon(keep_loop_busy)
        loop.run_forever()
    finally:
        finished_calling.set()
        busy.set()
        thread.join(GUARD)
    assert ran == total
    assert written_while_busy == [0]


@needs_epoll_wait_numbers
@needs_write_counts
def test_threadsafe_call_while_blocked_wakes_the_loop_with_one_write(loop: epolloop.Loop) -> None:
    loop_thread = threading.get_native_id()
    ran: list[int] = []
    writes: list[int] = []
    failures: list[BaseException] = []

    def other_thread() -> None:
        try:
            _wait_until(lambda: _in_epoll_wait(loop_thread), "the loop blocking in epoll_wait")
            before = _writes_by_this_thread()
            loop.call_soon_threadsafe(lambda: (ran.append(threading.get_ident()), loop.stop()))
            writes.append(_writes_by_this_thread() - before)
        except BaseException as exc:
            failures.append(exc)
            loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        loop.run_forever()  # nothing to do: blocks until the other thread's call
    finally:
        thread.join(GUARD)
    assert not failures, failures
    assert ran == [threading.get_ident()]
    assert writes == [1]
    assert not _readable(loop._wakeup_fd), "the eventfd was not drained"


def test_threadsafe_call_from_loop_thread_does_not_write(loop: epolloop.Loop) -> None:
    ran: list[int] = []
    written: list[int] = []

    def from_a_callback() -> None:
        for i in range(100, 200):
            loop.call_soon_threadsafe(ran.append, i)
        written.append(_eventfd_count(loop._wakeup_fd))
        loop.call_soon(loop.stop)

    for i in range(100):
        loop.call_soon_threadsafe(ran.append, i)
    written.append(_eventfd_count(loop._wakeup_fd))
    loop.call_soon(from_a_callback)
    loop.run_forever()
    assert ran == list(range(200))
    assert written == [0, 0]


# -- fairness --------------------------------------------------------------------------------


def test_callback_scheduled_by_callback_runs_next_step(loop: epolloop.Loop) -> None:
    ran: list[str] = []

    def a() -> None:
        ran.append("A")
        loop.call_soon(ran.append, "B")

    loop.call_soon(a)
    loop._run_once()
    assert ran == ["A"]
    loop._run_once()
    assert ran == ["A", "B"]


def test_io_callbacks_join_the_step_after_ready_callbacks(loop: epolloop.Loop) -> None:
    ran: list[str] = []
    a, b = socket.socketpair()
    try:

        def reader() -> None:
            ran.append("reader")
            loop.remove_reader(a)
            loop.call_soon(ran.append, "scheduled by reader")

        loop.add_reader(a, reader)
        b.sendall(b"x")
        loop.call_soon(ran.append, "ready before the wait")
        loop._run_once()
        assert ran == ["ready before the wait", "reader"]
        loop._run_once()
        assert ran[-1] == "scheduled by reader"
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


def test_due_timer_scheduling_call_soon_runs_next_step(loop: epolloop.Loop) -> None:
    ran: list[str] = []

    def timer() -> None:
        ran.append("timer")
        loop.call_soon(ran.append, "soon")
        loop.call_at(loop.time() - 1, ran.append, "due timer")

    loop.call_at(loop.time() - 1, timer)
    loop._run_once()
    assert ran == ["timer"]
    loop._run_once()
    assert ran == ["timer", "soon", "due timer"]


# -- registrations and fd reuse --------------------------------------------------------------


def _leave_stale_entry(loop: epolloop.Loop, *directions: str) -> tuple[int, list[str]]:
    """Watch a socket (with add_reader, add_writer or both), then close it without removing it:
    the loop keeps a stale entry under a number that is free again. Returns the number and the
    list the stale callbacks would append to."""
    old, old_peer = socket.socketpair()
    number = old.fileno()
    old_calls: list[str] = []
    for direction in directions:
        getattr(loop, f"add_{direction}")(old, old_calls.append, f"old {direction}")
    old.close()
    old_peer.close()
    return number, old_calls


@contextlib.contextmanager
def _socketpair_reusing(
    loop: epolloop.Loop, number: int
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A new socketpair whose first socket has the fd number *number*; afterwards nothing is
    watched on the number and both sockets are closed."""
    new, new_peer = socketpair_at(number)
    try:
        yield new, new_peer
    finally:
        loop.remove_reader(number)
        loop.remove_writer(number)
        new.close()
        new_peer.close()


@pytest.mark.parametrize("then", ["add_reader", "add_writer"])
def test_stale_registration_never_reaches_a_reused_fd(loop: epolloop.Loop, then: str) -> None:
    number, old_calls = _leave_stale_entry(loop, "reader")
    with _socketpair_reusing(loop, number) as (new, new_peer):
        assert new.fileno() == number
        new_calls: list[str] = []
        new_peer.sendall(b"for the new socket")  # readable before anyone asks
        loop.call_soon(lambda: None)
        loop._run_once()  # not registered with the kernel: nothing fires
        assert old_calls == []

        if then == "add_writer":

            def on_writable() -> None:
                new_calls.append("new writer")
                loop.remove_writer(number)
                loop.stop()

            loop.add_writer(number, on_writable)
            loop.run_forever()
            assert new_calls == ["new writer"]
            # The stale reader went with the stale entry.
            assert loop.remove_reader(number) is False

        def on_readable() -> None:
            new_calls.append("new reader")
            loop.remove_reader(new)
            assert new.recv(100) == b"for the new socket"
            loop.stop()

        loop.add_reader(new, on_readable)
        loop.run_forever()
        assert new_calls[-1] == "new reader"
        assert old_calls == []
        assert number not in loop._watchers


def test_stale_registration_with_both_directions(loop: epolloop.Loop) -> None:
    number, old_calls = _leave_stale_entry(loop, "reader", "writer")
    with _socketpair_reusing(loop, number) as (new, new_peer):
        got: list[bytes] = []

        def on_readable() -> None:
            got.append(new.recv(10))
            loop.remove_reader(new)
            loop.stop()

        loop.add_reader(new, on_readable)
        # Registered for reading only, not for the stale writer's interest too: a writable
        # socket would otherwise be reported at every poll with no one to call.
        assert not select.select([loop._epoll_fd], [], [], 0)[0]
        new_peer.sendall(b"x")
        loop.run_forever()
        assert got == [b"x"]
        assert old_calls == []
        # The stale writer is gone too: nothing is watched on the number any more.
        assert number not in loop._watchers
        assert loop.remove_writer(number) is False


def test_failed_add_reader_leaves_no_entry(loop: epolloop.Loop) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as info:
        loop.add_reader(r, lambda: None)
    assert info.value.errno == errno.EBADF
    assert r not in loop._watchers


def test_failed_add_on_stale_entry_reused_by_regular_file(loop: epolloop.Loop, tmp_path) -> None:
    number, old_calls = _leave_stale_entry(loop, "reader")
    path = tmp_path / "regular"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    if fd != number:
        os.dup2(fd, number)
        os.close(fd)
    try:
        with pytest.raises(PermissionError):
            loop.add_writer(number, lambda: None)
        assert number not in loop._watchers
        assert loop.remove_reader(number) is False
    finally:
        os.close(number)
    assert old_calls == []


@contextlib.contextmanager
def _loops_epoll(loop: epolloop.Loop) -> Iterator[select.epoll]:
    """The loop's epoll instance, through a dup of its fd (closed afterwards)."""
    epoll = select.epoll.fromfd(os.dup(loop._epoll_fd))
    try:
        yield epoll
    finally:
        epoll.close()


def test_one_registration_carries_both_directions(loop: epolloop.Loop) -> None:
    a, b = socket.socketpair()
    try:
        with _loops_epoll(loop) as epoll:
            loop.add_reader(a, lambda: None)
            loop.add_writer(a, lambda: None)
            # epoll knows the fd once: registering it again is refused by the kernel.
            with pytest.raises(FileExistsError):
                epoll.register(a.fileno(), select.EPOLLIN)
            loop.remove_reader(a)
            loop.remove_writer(a)
            # Fully removed: the kernel forgot it too.
            epoll.register(a.fileno(), select.EPOLLIN)
            epoll.unregister(a.fileno())
    finally:
        a.close()
        b.close()


# -- kernel objects and fd leaks -------------------------------------------------------------


def test_close_releases_epoll_timerfd_and_eventfd(loop_factory: LoopFactory) -> None:
    loop: epolloop.Loop = loop_factory()  # type: ignore[assignment]
    try:
        fds = [loop._epoll_fd, loop._timer_fd, loop._wakeup_fd]
        assert all(_is_open(fd) for fd in fds)
    finally:
        loop.close()
    assert [_is_open(fd) for fd in fds] == [False, False, False]
    loop.close()  # idempotent, and closes nothing twice


def test_hundred_loops_leak_no_fds(loop_factory: LoopFactory) -> None:
    gc.collect()
    before = _fd_count()
    for i in range(100):
        loop = loop_factory()
        try:
            if i == 0:
                assert _fd_count() == before + 3  # the count does see a loop's fds
        finally:
            loop.close()
    assert _fd_count() == before


def test_thousand_loops_run_and_closed_leak_no_fds(loop_factory: LoopFactory) -> None:
    gc.collect()
    before = _fd_count()

    async def tick() -> int:
        fut = epolloop_loop.create_future()
        epolloop_loop.call_later(0, fut.set_result, 1)
        return await fut

    for _ in range(1000):
        epolloop_loop = loop_factory()
        try:
            assert epolloop_loop.run_until_complete(tick()) == 1
        finally:
            epolloop_loop.close()
    gc.collect()
    assert _fd_count() == before


def test_unclosed_loop_releases_fds_when_collected(loop_factory: LoopFactory) -> None:
    gc.collect()
    before = _fd_count()
    loop = loop_factory()
    assert _fd_count() == before + 3
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del loop
        gc.collect()
    assert _fd_count() == before


def test_a_nan_deadline_is_refused(loop: epolloop.Loop) -> None:
    # asyncio 3.11 runs such a timer at once and 3.13 fails later inside the selector; a NaN
    # in epolloop's heap would never be due and would hold back every timer behind it.
    with pytest.raises(ValueError, match="NaN"):
        loop.call_at(float("nan"), pytest.fail)
    with pytest.raises(ValueError, match="NaN"):
        loop.call_later(float("nan"), pytest.fail)
    assert loop._timers == []


def test_forked_child_running_the_inherited_loop_leaves_the_parent_alone(
    loop: epolloop.Loop,
) -> None:
    # The child arms "its" timerfd far into the future and wakes "its" loop; with shared kernel
    # objects that would move the parent's timer and drain the parent's wake-ups.
    child_status = loop.create_future()

    def fork_and_run_child() -> None:
        pid = os.fork()
        if pid == 0:
            try:
                loop.call_later(1000, pytest.fail)
                loop.call_soon_threadsafe(lambda: None)
                loop._run_once()
                loop._run_once()
                os._exit(0)
            finally:
                os._exit(1)
        # Reaped in a thread, so that the parent's loop keeps running its own timers.
        threading.Thread(
            target=lambda: loop.call_soon_threadsafe(child_status.set_result, os.waitpid(pid, 0)[1])
        ).start()

    async def parent() -> int:
        loop.call_soon(fork_and_run_child)
        await asyncio.sleep(0.05)  # the parent's own timer must still fire
        return await child_status

    status = loop.run_until_complete(asyncio.wait_for(parent(), GUARD))
    assert os.waitstatus_to_exitcode(status) == 0
