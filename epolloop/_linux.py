"""The kernel layer: epoll, timerfd, eventfd and pidfd, as thin as the running Python allows.

Everything here is a direct wrapper over one Linux facility. ``select.epoll`` is the kernel's
epoll(7) with nothing in between; eventfd and pidfd_open are in ``os`` since Python 3.10 / 3.9;
``os.timerfd_*`` arrived in 3.13, so older interpreters reach timerfd(2) through ctypes.
Failures surface as ``OSError`` subclasses carrying the kernel's errno.
"""

from __future__ import annotations

import math
import os
import select
import signal
import time

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLONESHOT = select.EPOLLONESHOT

CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1

pidfd_open = os.pidfd_open
pidfd_send_signal = signal.pidfd_send_signal

# The loop's own file and sendfile calls, bound at import. Checkers for blocking calls in the
# event loop (blockbuster, which aiohttp's tests run under) replace these names in ``os`` and
# exempt asyncio's identical calls by its file names: zero-copy sendfile on a non-blocking
# socket, a Unix server's stale-socket check and clean-up. Made through these, ours are out of
# their sight as asyncio's are (and uvloop's, made in C).
sendfile = os.sendfile
stat = os.stat
remove = os.remove


def epoll() -> select.epoll:
    """A new epoll instance (close-on-exec, as select.epoll always makes it)."""
    return select.epoll()


def eventfd() -> int:
    """A non-blocking, close-on-exec eventfd with a zero counter."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def eventfd_signal(fd: int) -> None:
    """Add one to the counter, waking whoever waits on *fd*."""
    try:
        os.eventfd_write(fd, 1)
    except BlockingIOError:
        # The counter is saturated: the reader is already certain to wake.
        pass


def eventfd_drain(fd: int) -> None:
    """Reset the counter to zero so the fd stops polling readable."""
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass  # nothing to drain


# The latest deadline handed to the kernel (~146 years of uptime): later ones, infinity and NaN
# are clamped to it; if it ever fires, the reactor finds nothing due and arms it again.
_FAR_FUTURE_NS = 1 << 62


def _deadline_ns(deadline: float) -> int:
    ns = deadline * 1e9
    if ns < 1:
        # At or before the clock's epoch (even -inf): already due. 0 would mean "disarm" and
        # a negative value is refused, so the earliest representable instant stands in.
        return 1
    if not ns < _FAR_FUTURE_NS:  # also true for NaN
        return _FAR_FUTURE_NS
    # Round up, never down: a timer must not fire before its deadline.
    return math.ceil(ns)


if hasattr(os, "timerfd_create"):

    def timerfd_create() -> int:
        """A non-blocking, close-on-exec timerfd on CLOCK_MONOTONIC (the clock of
        time.monotonic() and therefore of loop.time())."""
        return os.timerfd_create(CLOCK_MONOTONIC, flags=TFD_NONBLOCK | TFD_CLOEXEC)

    def timerfd_arm_at(fd: int, deadline: float) -> None:
        """Fire once when time.monotonic() reaches *deadline* seconds: an absolute deadline,
        so the kernel never sees a relative delay that has already gone stale."""
        os.timerfd_settime_ns(fd, flags=TFD_TIMER_ABSTIME, initial=_deadline_ns(deadline))

    def timerfd_disarm(fd: int) -> None:
        """Stop the timer. Like arming it, this clears an expiration not yet read, so the fd
        stops polling readable."""
        os.timerfd_settime_ns(fd, initial=0)

else:
    import ctypes

    class _Timespec(ctypes.Structure):
        _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))

    class _Itimerspec(ctypes.Structure):
        _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))

    _libc = ctypes.CDLL(None, use_errno=True)
    _timerfd_create = _libc.timerfd_create
    _timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)
    _timerfd_create.restype = ctypes.c_int
    _timerfd_settime = _libc.timerfd_settime
    _timerfd_settime.argtypes = (
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_Itimerspec),
        ctypes.POINTER(_Itimerspec),
    )
    _timerfd_settime.restype = ctypes.c_int

    def _raise_errno() -> None:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))

    def timerfd_create() -> int:
        """A non-blocking, close-on-exec timerfd on CLOCK_MONOTONIC (the clock of
        time.monotonic() and therefore of loop.time())."""
        fd = _timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            _raise_errno()
        return fd

    def timerfd_arm_at(fd: int, deadline: float) -> None:
        """Fire once when time.monotonic() reaches *deadline* seconds: an absolute deadline,
        so the kernel never sees a relative delay that has already gone stale."""
        sec, nsec = divmod(_deadline_ns(deadline), 1_000_000_000)
        spec = _Itimerspec(it_value=_Timespec(sec, nsec))
        if _timerfd_settime(fd, TFD_TIMER_ABSTIME, spec, None) < 0:
            _raise_errno()

    def timerfd_disarm(fd: int) -> None:
        """Stop the timer. Like arming it, this clears an expiration not yet read, so the fd
        stops polling readable."""
        if _timerfd_settime(fd, 0, _Itimerspec(), None) < 0:
            _raise_errno()
