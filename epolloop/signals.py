"""Signal handlers on the loop: add_signal_handler / remove_signal_handler, as asyncio has them.

A signal interrupts whatever the main thread is doing, so the handler cannot run there and
then. CPython's own C-level handler records the signal and, if a wake-up fd is set
(``signal.set_wakeup_fd``), writes the signal's number to it as one byte. We give it the write
end of a non-blocking socketpair whose read end the reactor watches: the loop wakes, reads the
numbers and schedules each signal's handler as an ordinary callback. The eventfd the loop uses
for other threads cannot serve: it accepts only 8-byte writes.

Nothing is blocked or masked, so child processes inherit no signal mask (signalfd would need
the signals blocked in every thread, and a blocked mask survives exec). Python-level handlers
the loop installs do nothing; the socket carries the news. As in asyncio: main thread only
(set_wakeup_fd's rule), SIGKILL and SIGSTOP refused with RuntimeError, unknown numbers with
ValueError, non-ints with TypeError; removing a handler restores the default disposition
(``default_int_handler`` for SIGINT); closing the loop removes them all.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
import warnings
from asyncio import coroutines, events
from asyncio.log import logger
from collections.abc import Callable
from typing import Any


def _do_nothing(signum: int, frame: Any) -> None:
    """The Python-level handler: the wake-up fd already told the loop."""


def _check_signal(sig: Any) -> None:
    if not isinstance(sig, int):
        raise TypeError(f"sig must be an int, not {sig!r}")
    if sig not in signal.valid_signals():
        raise ValueError(f"invalid signal number {sig}")


def _stop_waking(reason: str) -> None:
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError) as exc:
        logger.info("set_wakeup_fd(-1) failed (%s): %s", reason, exc)


class Signals:
    """Mixin for Loop: needs ``_signal_handlers`` (a dict) and ``_signal_socket`` (None)."""

    _signal_handlers: dict[int, events.Handle]
    _signal_socket: tuple[socket.socket, socket.socket] | None
    _check_closed: Callable[[], None]
    _add_reader: Callable[..., Any]
    call_soon: Callable[..., Any]

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Run callback(*args) in the loop whenever signal *sig* arrives (main thread only)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        _check_signal(sig)
        self._check_closed()
        if self._signal_socket is None:
            self._signal_socket = socket.socketpair()
            for end in self._signal_socket:
                end.setblocking(False)
            self._add_reader(self._signal_socket[0].fileno(), self._read_signals)
        try:
            # Raises ValueError outside the main thread of the main interpreter.
            signal.set_wakeup_fd(self._signal_socket[1].fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        self._signal_handlers[sig] = events.Handle(callback, args, self, None)  # type: ignore[arg-type]
        try:
            signal.signal(sig, _do_nothing)
            # A signal must not make a blocking call in another thread fail with EINTR.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                _stop_waking("after a refused handler")
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for *sig* and restore the default; False if there was none."""
        _check_signal(sig)
        if self._signal_handlers.pop(sig, None) is None:
            return False
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not self._signal_handlers:
            _stop_waking("no handler left")
        return True

    def _read_signals(self) -> None:
        assert self._signal_socket is not None
        try:
            numbers = self._signal_socket[0].recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in numbers:
            handle = self._signal_handlers.get(signum)
            if handle is None:
                continue  # a signal whose handler was removed meanwhile
            if handle._cancelled:
                self.remove_signal_handler(signum)
            else:
                self.call_soon(handle._run)

    def _close_signals(self) -> None:
        """The loop closes: every handler goes, the default dispositions come back."""
        if sys.is_finalizing():
            # Too late to touch the signal module; the process is going anyway.
            if self._signal_handlers:
                warnings.warn(
                    f"Closing the loop {self!r} on interpreter shutdown stage, "
                    "skipping signal handlers removal",
                    ResourceWarning,
                    stacklevel=3,
                    source=self,
                )
                self._signal_handlers.clear()
        else:
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        if self._signal_socket is not None:  # the reactor, closed already, watches it no more
            for end in self._signal_socket:
                end.close()
            self._signal_socket = None
