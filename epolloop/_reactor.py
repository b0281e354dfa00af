"""The reactor in pure Python: one epoll instance, one timerfd, one eventfd.

This is the readable reference for the reactor contract (see DESIGN.md); the C core implements
the same methods with the same semantics. ``Loop`` inherits from the live core's ``Reactor``,
so the public scheduling methods below *are* the loop's methods, with no layer in between.

The contract
------------
Public, with asyncio's signatures and errors: ``time``, ``call_soon``, ``call_soon_threadsafe``,
``call_later``, ``call_at``, ``add_reader``, ``remove_reader``, ``add_writer``, ``remove_writer``,
``stop``, ``get_debug``, ``create_future``, ``_timer_handle_cancelled`` (asyncio's TimerHandle
calls it).
For the loop: ``_add_reader`` / ``_add_writer`` / ``_remove_reader`` / ``_remove_writer`` take int
fds and return the handle; ``_add_waiting_reader`` is ``_add_reader`` for one sock_* wait (a
one-shot registration that outlives the wait, disarmed: see below); ``_run_until_stopped()``
runs steps until ``stop()``; ``_close_reactor()`` releases the kernel objects; ``_closed``,
``_debug``, ``_stopping``, ``_thread_id`` and ``_current_handle`` are state the two share.
The loop provides ``_report_slow_callback(handle, seconds)`` and ``call_exception_handler``,
which debug mode and handles call back into.

One step of the loop
--------------------
1. Wait in epoll_wait: not at all when callbacks are ready or a stop is pending, otherwise until
   something happens. Timers wake us through the timerfd, other threads through the eventfd, so
   the timeout is always 0 or -1 and no deadline is ever rounded to milliseconds.
2. Queue the callbacks of every ready fd, then every timer whose deadline has passed, in
   deadline order (equal deadlines in call order).
3. Run exactly the callbacks that were queued when step 2 ended. What they schedule runs in
   the next step, after another look at I/O: asyncio's fairness rule, which user code (and the
   ordering guarantees of Futures and Tasks) relies on.

What we rely on from the kernel, and the traps around it
--------------------------------------------------------
* Level-triggered epoll: a ready fd is reported again on every wait until it is drained, so a
  reader may consume as much or as little as it likes; nothing is lost between steps.
* EPOLLERR and EPOLLHUP are reported whether or not they were asked for. As asyncio does, any
  event other than "writable" wakes the reader and any other than "readable" wakes the writer,
  so the callback sees the error when it touches the fd.
* A registration belongs to the open file *description*, not to the fd number. Closing an fd
  silently removes the registration only when no other fd (a dup, a forked child's copy) still
  refers to the description; otherwise events keep arriving under the old number and cannot be
  removed through it. Unregister before closing; we cannot defend against a description kept
  alive elsewhere.
* An fd closed without unregistering leaves our table with a stale entry. If its number is
  reused, EPOLL_CTL_MOD answers ENOENT: we drop the stale callbacks and register afresh, so a
  new file never inherits an old file's callback. That is also why adding a reader always
  issues an epoll_ctl, even when the interest set does not change.
* EPOLLONESHOT: a one-shot registration reports once, then stays in the epoll instance,
  disarmed, until EPOLL_CTL_MOD re-arms it; a disarmed one never reports, whatever happens to its
  file. So a sock_* wait (``_add_waiting_reader``) that its readiness completed leaves its
  registration parked instead of deleting it, and the fd's next wait re-arms it: one epoll_ctl
  per wait instead of an ADD and a DEL, which profiling showed to be about a third of a sock_*
  echo server's time. A parked registration whose file lives on in a dup after its fd closed is
  harmless, where a level-triggered one left behind would be reported at every poll. A wait
  whose readiness found nothing is re-armed before the loop next blocks, or two steps after it
  fired while the loop stays busy (see _rearm_waiting_readers).
* timerfd with TFD_TIMER_ABSTIME on CLOCK_MONOTONIC, the clock behind time.monotonic(): the
  deadline handed to the kernel is exactly the heap's, rounded up to the nanosecond, so a timer
  never fires early and is late only by the scheduler's wake-up latency. An expired one-shot
  timerfd stays readable until read or set again: we never read it, since arming it for the
  next deadline (or disarming it when no timer is left) before the next blocking wait clears
  the expiration too, a syscall fewer per wake-up. It is re-armed only for an earlier deadline
  than the one it holds (see _arm_timerfd).
* After fork() the child shares the parent's epoll instance, timerfd and eventfd (the open
  file descriptions): a child re-arming "its" timer would move the parent's. So every reactor
  gets fresh kernel objects in a forked child (_renew_after_fork).
* eventfd: writes add to a counter, one read drains it. Other threads write it only while the
  loop may be inside epoll_wait (``_polling``); the loop sets that flag *before* its last look at
  the ready queue, so a callback appended after that look always comes with a write.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import sys
import threading
import traceback
import weakref
from asyncio import Future, coroutines, events, format_helpers
from collections.abc import Callable
from contextvars import Context, copy_context
from heapq import heapify, heappop, heappush
from numbers import Real
from time import monotonic
from typing import Any

from . import _linux
from ._linux import EPOLLIN, EPOLLONESHOT, EPOLLOUT

# Compact the timer heap when more than half of it (and more than this many) is cancelled.
_MIN_TIMERS_TO_COMPACT = 100

_READ, _WRITE = 0, 1
_INTEREST = (EPOLLIN, EPOLLOUT)
# Everything but "writable" concerns the reader, everything but "readable" the writer.
_WAKES_READER = ~EPOLLOUT
_WAKES_WRITER = ~EPOLLIN


class Handle(events.Handle):
    """asyncio's Handle, built in one frame.

    Hot path: every call_soon (and so every Future completion and Task step) makes one. The
    stock __init__ calls loop.get_debug(); this one reads the flag, and in debug mode records
    where the handle was created, as asyncio does, ending at the caller of the loop.
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: Reactor,
        context: Context | None = None,
    ) -> None:
        self._context = copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = _creation_stack() if loop._debug else None


class TimerHandle(events.TimerHandle):
    """asyncio's TimerHandle, built in two frames instead of four (hot path: call_later)."""

    __slots__ = ()

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: Reactor,
        context: Context | None = None,
    ) -> None:
        Handle.__init__(self, callback, args, loop, context)  # type: ignore[arg-type]
        self._when = when
        self._scheduled = False


def _creation_stack() -> traceback.StackSummary:
    """The stack that created a handle, up to the frame that called into the loop."""
    frame = sys._getframe(1)
    while frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
    return format_helpers.extract_stack(frame)


def _fileobj_to_fd(fileobj: Any) -> int:
    """An fd number from an int or an object with fileno(), with the errors selectors raise."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class Reactor:
    """The reactor core in pure Python; ``Loop`` derives from it."""

    def __init__(self) -> None:
        self._closed = True  # until every kernel object exists (Loop.__del__ looks at it)
        self._open_kernel_objects()
        # fd -> [reader handle or None, writer handle or None]: what we registered with epoll
        # (the kernel drops a registration by itself when the file is closed; see above).
        self._watchers: dict[int, list[Handle | None]] = {}
        # fd -> the file object it was registered as, for removal after the object is closed.
        self._fileobjs: dict[int, Any] = {}
        # Waiting readers (see _add_waiting_reader): fd -> whether its one-shot registration
        # fired (the kernel disarmed it); the fds that fired in the last step and in the one
        # before (see _rearm_waiting_readers); and fds whose disarmed registration stays in
        # the kernel with no watcher (the fd's next registration modifies it).
        self._waiting_fired: dict[int, bool] = {}
        self._fired_last: list[int] = []
        self._fired_earlier: list[int] = []
        self._parked: set[int] = set()
        # Callbacks to run in the next step, in order. deque.append is atomic, which is what
        # makes call_soon_threadsafe safe without a lock.
        self._ready: collections.deque[Handle] = collections.deque()
        # Timers: a heap of (deadline, sequence, handle); the sequence keeps equal deadlines in
        # call order. Cancelled entries stay until they reach the top or compaction.
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_sequence = itertools.count()
        self._cancelled_timers = 0
        # Loop state shared with Loop.
        self._polling = False  # inside (or about to enter) a blocking epoll_wait
        # Re-entrant: a signal handler or a __del__ run by the collector may call
        # call_soon_threadsafe again in a thread that already holds it.
        self._wakeup_lock = threading.RLock()
        self._stopping = False
        self._debug = False
        self._thread_id: int | None = None
        self._current_handle: Handle | None = None
        self._closed = False
        _live_reactors.add(self)

    def _open_kernel_objects(self) -> None:
        """The epoll instance, watching our timerfd and eventfd (and, later, user fds)."""
        with contextlib.ExitStack() as undo:
            self._epoll = _linux.epoll()
            self._epoll_fd = self._epoll.fileno()
            undo.callback(self._epoll.close)
            self._timer_fd = _linux.timerfd_create()
            undo.callback(os.close, self._timer_fd)
            self._wakeup_fd = _linux.eventfd()
            undo.callback(os.close, self._wakeup_fd)
            self._epoll.register(self._timer_fd, EPOLLIN)
            self._epoll.register(self._wakeup_fd, EPOLLIN)
            undo.pop_all()
        self._armed_deadline: float | None = None  # what the timerfd holds, None if disarmed
        self._timer_expired = False  # it fired and polls readable until set again

    def _renew_after_fork(self) -> None:
        """In a forked child: kernel objects of our own, so nothing we do reaches the parent."""
        if self._closed:
            return
        inherited = (self._epoll, self._timer_fd, self._wakeup_fd)
        self._open_kernel_objects()
        self._wakeup_lock = threading.RLock()  # another thread may have held it at the fork
        self._polling = False
        self._parked.clear()  # (the new epoll instance has none of them)
        for fd, watchers in list(self._watchers.items()):
            if fd in self._waiting_fired:
                events = EPOLLIN | EPOLLONESHOT
                self._waiting_fired[fd] = False
            else:
                events = _interest(watchers, _READ) | _interest(watchers, _WRITE)
            try:
                self._epoll.register(fd, events)
            except OSError:
                self._forget(fd)  # closed without being unwatched
        inherited[0].close()
        os.close(inherited[1])
        os.close(inherited[2])

    # -- time and callbacks -------------------------------------------------------------------

    def time(self) -> float:
        """The loop's clock: time.monotonic(), at full resolution."""
        return monotonic()

    def _now(self) -> float:
        """The scheduler's clock: a ``time`` set on the loop itself (as
        ``mock.patch.object(loop, "time")`` does) while there is one, since asyncio's scheduler
        calls self.time(); time.monotonic() otherwise."""
        clock = self.__dict__.get("time")
        return monotonic() if clock is None else clock()

    def get_debug(self) -> bool:
        return self._debug

    def create_future(self) -> Future[Any]:
        """A new asyncio.Future of this loop (a reactor method because the C core makes it in C:
        every sleep, read wait and gather makes one)."""
        return Future(loop=self)  # type: ignore[arg-type]

    def call_soon(
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> Handle:
        """Run callback(*args) in the next step, after callbacks already scheduled."""
        if self._closed or self._debug or not callable(callback):
            self._check_call(callback, "call_soon", check_thread=True)
        handle = Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> Handle:
        """call_soon from any thread: wakes the loop if it may be asleep."""
        if self._closed or self._debug or not callable(callback):
            self._check_call(callback, "call_soon_threadsafe")
        handle = Handle(callback, args, self, context)
        self._ready.append(handle)
        if self._polling:
            # Once: after one write the loop is certain to run its next step (a burst from
            # another thread would otherwise make a syscall per call). The lock (taken only
            # when the loop may sleep) keeps the write from racing close(): a closed eventfd's
            # number may already belong to another file.
            self._polling = False
            with self._wakeup_lock:
                if not self._closed:
                    _linux.eventfd_signal(self._wakeup_fd)
        return handle

    def call_later(
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> TimerHandle:
        """Run callback(*args) *delay* seconds from now (at once if delay <= 0)."""
        if delay is None:
            raise TypeError("delay must not be None")
        return self._schedule(self._now() + delay, callback, args, context, "call_later")

    def call_at(
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> TimerHandle:
        """Run callback(*args) when loop.time() reaches *when*."""
        if not isinstance(when, (int, float, Real)):
            if when is None:
                raise TypeError("when cannot be None")
            raise TypeError(f"when must be a number, got {when!r}")
        return self._schedule(when, callback, args, context, "call_at")

    def _schedule(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: Context | None,
        method: str,
    ) -> TimerHandle:
        if self._closed or self._debug or not callable(callback):
            self._check_call(callback, method, check_thread=True)
        if when != when:
            # A NaN deadline is never due and would stall every timer behind it in the heap.
            raise ValueError("the deadline of a timer cannot be NaN")
        timer = TimerHandle(when, callback, args, self, context)
        heappush(self._timers, (when, next(self._timer_sequence), timer))
        timer._scheduled = True
        return timer

    def _timer_handle_cancelled(self, handle: TimerHandle) -> None:
        if handle._scheduled:
            self._cancelled_timers += 1

    def _check_call(self, callback: object, method: str, check_thread: bool = False) -> None:
        """The scheduling methods' checks, off their fast path: callers come here only when
        the loop is closed, in debug mode, or for a callback that cannot be called."""
        if self._closed:
            raise RuntimeError("Event loop is closed")
        self._check_callback(callback, method, check_thread)

    def _check_callback(self, callback: object, method: str, check_thread: bool = False) -> None:
        # What cannot be called is always refused; debug mode adds asyncio's fuller checks
        # (the thread check only where asyncio makes it: call_soon, call_later, call_at).
        if self._debug:
            if check_thread:
                self._check_thread()
            if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
                raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            if coroutines.iscoroutine(callback):
                raise TypeError(f"coroutines cannot be used with {method}()")
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def _check_thread(self) -> None:
        """In debug mode, refuse non-thread-safe calls from a thread other than the loop's."""
        if self._thread_id is not None and self._thread_id != threading.get_ident():
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    # -- file descriptors ---------------------------------------------------------------------

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        """Call callback(*args) whenever *fd* is readable (replacing any previous reader)."""
        self._watch(self._fd_of(fd), _READ, callback, args)

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        """Call callback(*args) whenever *fd* is writable (replacing any previous writer)."""
        self._watch(self._fd_of(fd), _WRITE, callback, args)

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching *fd* for reading; True if a reader was registered."""
        return self._unwatch(self._registered_fd(fd), _READ)

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching *fd* for writing; True if a writer was registered."""
        return self._unwatch(self._registered_fd(fd), _WRITE)

    def _fd_of(self, fileobj: Any) -> int:
        fd = _fileobj_to_fd(fileobj)
        if fd is not fileobj:
            self._fileobjs[fd] = fileobj
        return fd

    def _registered_fd(self, fileobj: Any) -> int:
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            # Closed since it was registered (fileno() now says -1): as asyncio's selectors
            # do, find its registration by the object itself.
            for fd, registered in self._fileobjs.items():
                if registered is fileobj:
                    return fd
            raise

    # The loop's own users (transports, sock_* operations) pass int fds and want the handle.

    def _add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> Handle:
        return self._watch(fd, _READ, callback, args)

    def _add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> Handle:
        return self._watch(fd, _WRITE, callback, args)

    def _add_waiting_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> Handle:
        """_add_reader for a sock_* wait, which ends at the first readiness that completes it:
        a one-shot registration (EPOLLONESHOT), re-armed if the wait goes on after it fired
        (_rearm_waiting_readers). Once it fired, removing the reader costs no syscall: the
        disarmed registration stays in the kernel, never reports, and the fd's next wait
        modifies it (one epoll_ctl per wait instead of an ADD and a DEL). With a writer on the
        fd it is a plain reader."""
        return self._watch(fd, _READ, callback, args, waiting=True)

    def _remove_reader(self, fd: int) -> bool:
        return self._unwatch(fd, _READ)

    def _remove_writer(self, fd: int) -> bool:
        return self._unwatch(fd, _WRITE)

    def _watch(
        self,
        fd: int,
        direction: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        waiting: bool = False,
    ) -> Handle:
        if self._closed or self._debug or not callable(callback):
            self._check_call(callback, ("add_reader", "add_writer")[direction])
        handle = Handle(callback, args, self, None)
        watchers = self._watchers.get(fd)
        waiting = waiting and (watchers is None or watchers[_WRITE] is None)
        if waiting:
            events = EPOLLIN | EPOLLONESHOT
        else:
            events = _INTEREST[direction]
            if watchers is not None:
                events |= _interest(watchers, 1 - direction)
        if watchers is None:
            if fd in self._parked:
                self._parked.discard(fd)
                self._register_again(fd, events)
            else:
                self._epoll.register(fd, events)  # bad fds fail here, table untouched
            watchers = self._watchers[fd] = [None, None]
        else:
            try:
                self._epoll.modify(fd, events)
            except FileNotFoundError:
                # The fd was closed without being unwatched and its number reused: the kernel
                # dropped the old registration with the old file. Start afresh, with none of
                # the stale entry's interest.
                self._forget(fd)
                events &= _INTEREST[direction] | EPOLLONESHOT
                self._epoll.register(fd, events)
                watchers = self._watchers[fd] = [None, None]
            except OSError:
                self._forget(fd)
                raise
        if waiting:
            self._waiting_fired[fd] = False
        else:
            self._waiting_fired.pop(fd, None)
        previous = watchers[direction]
        watchers[direction] = handle
        if previous is not None:
            previous.cancel()
        return handle

    def _register_again(self, fd: int, events: int) -> None:
        """Register a parked fd: modify its disarmed registration, or, if the kernel dropped it
        with its file (the number now names another), add one."""
        try:
            self._epoll.modify(fd, events)
        except FileNotFoundError:
            self._epoll.register(fd, events)

    def _unwatch(self, fd: int, direction: int) -> bool:
        if self._closed:
            return False
        watchers = self._watchers.get(fd)
        if watchers is None or watchers[direction] is None:
            return False
        watchers[direction].cancel()  # type: ignore[union-attr]
        watchers[direction] = None
        other = 1 - direction
        if watchers[other] is None:
            del self._watchers[fd]
            self._fileobjs.pop(fd, None)
            if self._waiting_fired.pop(fd, False):
                self._parked.add(fd)  # disarmed by the kernel when it fired: left there
                return True
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # already closed: the registration went with the file
        else:
            try:
                self._epoll.modify(fd, _INTEREST[other])
            except OSError:
                # Closed while the other direction was still watched: nothing can fire.
                self._forget(fd)
        return True

    def _rearm_waiting_readers(self, every: bool) -> None:
        """Re-arm the one-shot registrations that fired and are still waited on: the try that
        readiness allowed found nothing after all. Before a blocking poll (*every*), all of
        them: a completed wait would have left a callback ready, so none of them completed.
        Otherwise only those that fired two steps ago: a try that succeeds completes the
        wait's future in the step the reader ran and the waiting task normally removes the
        reader in the next, so re-arming any sooner would mostly cost a completed wait a
        syscall. (Re-arming a completed one is harmless: its removal then deletes it.)"""
        earlier = self._fired_earlier
        if every:
            earlier += self._fired_last
            self._fired_last.clear()
        for fd in earlier:
            if self._waiting_fired.get(fd):
                try:
                    self._epoll.modify(fd, EPOLLIN | EPOLLONESHOT)
                except OSError:
                    self._forget(fd)  # closed under the wait: nothing can fire
                    continue
                self._waiting_fired[fd] = False
        earlier.clear()
        self._fired_earlier, self._fired_last = self._fired_last, earlier

    def _forget(self, fd: int) -> None:
        """Drop a stale table entry whose kernel registration is already gone."""
        self._fileobjs.pop(fd, None)
        self._waiting_fired.pop(fd, None)
        for handle in self._watchers.pop(fd):
            if handle is not None:
                handle.cancel()

    # -- running ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop after the current step (or after one step, if called before running)."""
        self._stopping = True

    def _run_until_stopped(self) -> None:
        run_once = self._run_once
        while True:
            run_once()
            if self._stopping:
                break

    def _run_once(self) -> None:
        # Hot path: runs once per loop iteration; locals on purpose.
        ready = self._ready
        timers = self._timers
        if self._cancelled_timers > _MIN_TIMERS_TO_COMPACT and (
            2 * self._cancelled_timers > len(timers)
        ):
            self._compact_timers()
        if self._fired_last or self._fired_earlier:
            self._rearm_waiting_readers(every=not ready and not self._stopping)

        if ready or self._stopping:
            ready_fds = self._epoll.poll(0)
        else:
            self._polling = True
            try:
                if ready:  # a thread appended between our first look and the flag
                    ready_fds = self._epoll.poll(0)
                elif (clock := self.__dict__.get("time")) is not None:
                    # Not the timerfd, which knows only the real clock: asyncio's timeout.
                    timeout = max(0.0, timers[0][0] - clock()) if timers else -1
                    ready_fds = self._epoll.poll(min(timeout, 86400.0))
                else:
                    if timers or self._timer_expired:
                        self._arm_timerfd()
                    ready_fds = self._epoll.poll(-1)
            finally:
                self._polling = False

        append = ready.append
        if ready_fds:
            watching = self._watchers
            waiting_fired = self._waiting_fired
            for fd, mask in ready_fds:
                watchers = watching.get(fd)
                if watchers is not None:
                    if mask & _WAKES_READER and (reader := watchers[_READ]) is not None:
                        if fd in waiting_fired:
                            waiting_fired[fd] = True  # the kernel disarmed it
                            self._fired_last.append(fd)
                        if reader._cancelled:
                            self._unwatch(fd, _READ)
                        else:
                            append(reader)
                    if mask & _WAKES_WRITER and (writer := watchers[_WRITE]) is not None:
                        if writer._cancelled:
                            self._unwatch(fd, _WRITE)
                        else:
                            append(writer)
                elif fd == self._timer_fd:
                    # Expired: it polls readable until _arm_timerfd sets it again.
                    self._armed_deadline = None
                    self._timer_expired = True
                elif fd == self._wakeup_fd:
                    _linux.eventfd_drain(fd)

        if timers:
            now = self._now()
            while timers and timers[0][0] <= now:
                timer = heappop(timers)[2]
                timer._scheduled = False
                if timer._cancelled:
                    self._cancelled_timers -= 1
                else:
                    append(timer)

        if self._debug:
            self._run_ready_debug(len(ready))
            return
        popleft = ready.popleft
        for _ in range(len(ready)):
            handle = popleft()
            if not handle._cancelled:
                handle._run()

    def _run_ready_debug(self, count: int) -> None:
        """The run phase in debug mode: time every callback and report the slow ones."""
        popleft = self._ready.popleft
        for _ in range(count):
            handle = popleft()
            if handle._cancelled:
                continue
            self._current_handle = handle
            try:
                started = monotonic()
                handle._run()
                elapsed = monotonic() - started
                if elapsed >= self.slow_callback_duration:  # type: ignore[attr-defined]
                    self._report_slow_callback(handle, elapsed)  # type: ignore[attr-defined]
            finally:
                self._current_handle = None

    def _arm_timerfd(self) -> None:
        """Make sure the timerfd fires no later than the earliest live deadline.

        It is re-armed only for an earlier deadline. When the earliest timer is cancelled or
        a later one becomes the earliest (the common "timeout per request" pattern), the armed
        deadline stays: it fires once early, finds nothing due, and the next wait arms the
        timerfd again. One spare wake-up instead of a syscall every time the loop sleeps.
        """
        timers = self._timers
        while timers and timers[0][2]._cancelled:
            heappop(timers)[2]._scheduled = False
            self._cancelled_timers -= 1
        if timers:
            deadline = timers[0][0]
            armed = self._armed_deadline
            if armed is None or deadline < armed:
                _linux.timerfd_arm_at(self._timer_fd, deadline)
                self._armed_deadline = deadline
                self._timer_expired = False
        elif self._timer_expired:
            _linux.timerfd_disarm(self._timer_fd)  # else it would wake every blocking wait
            self._timer_expired = False

    def _compact_timers(self) -> None:
        timers = self._timers
        live = []
        for entry in timers:
            if entry[2]._cancelled:
                entry[2]._scheduled = False
            else:
                live.append(entry)
        timers[:] = live  # in place: the run step holds a reference to this list
        heapify(timers)
        self._cancelled_timers = 0

    def _close_reactor(self, _close_fd: Callable[[int], None] = os.close) -> None:
        """Mark the loop closed, forget every callback and release the kernel objects.
        (os.close is bound early: an unclosed loop may be collected at interpreter exit,
        when this module's globals are already cleared.)"""
        self._ready.clear()
        for _, _, timer in self._timers:
            timer._scheduled = False
        self._timers.clear()
        self._watchers.clear()
        self._fileobjs.clear()
        self._waiting_fired.clear()
        self._fired_last.clear()
        self._fired_earlier.clear()
        self._parked.clear()
        self._epoll.close()
        _close_fd(self._timer_fd)
        with self._wakeup_lock:
            self._closed = True
            _close_fd(self._wakeup_fd)


# Every open reactor, so that a forked child can give each its own kernel objects.
_live_reactors: weakref.WeakSet[Reactor] = weakref.WeakSet()


def _renew_reactors_after_fork() -> None:
    for reactor in list(_live_reactors):
        reactor._renew_after_fork()


os.register_at_fork(after_in_child=_renew_reactors_after_fork)


def _interest(watchers: list[Handle | None], direction: int) -> int:
    return _INTEREST[direction] if watchers[direction] is not None else 0
