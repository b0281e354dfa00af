"""Write-side flow control, as asyncio's transports do it.

A transport buffers what the kernel would not take; when the buffer grows past the high-water
mark the protocol is told to pause_writing(), and once it drains to the low-water mark, to
resume_writing(). Each call happens once per crossing. A protocol that fails in either is
reported to the loop's exception handler; the transport carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_HIGH_WATER = 64 * 1024


class WriteFlowControl:
    """Mixin for transports: needs ``_loop``, ``_protocol`` and ``get_write_buffer_size()``."""

    _loop: Any
    _protocol: Any
    get_write_buffer_size: Callable[[], int]
    _high_water = DEFAULT_HIGH_WATER
    _low_water = DEFAULT_HIGH_WATER // 4
    _protocol_paused = False

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._protocol_paused or self.get_write_buffer_size() <= self._high_water:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report_protocol_failure("protocol.pause_writing() failed", exc)

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or self.get_write_buffer_size() > self._low_water:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report_protocol_failure("protocol.resume_writing() failed", exc)

    def _report_protocol_failure(self, message: str, exc: BaseException) -> None:
        self._loop.call_exception_handler(
            {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
        )
