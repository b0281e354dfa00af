"""epolloop: an asyncio event loop for Linux, written by hand on epoll, timerfd and eventfd.

import asyncio, epolloop
asyncio.run(main(), loop_factory=epolloop.new_event_loop)   # Python 3.12+
epolloop.run(main())                                          # any supported Python
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import _native
from .loop import Loop

__all__ = ["EventLoopPolicy", "Loop", "core", "install", "new_event_loop", "run"]
__version__ = "0.1.0"

#: Which reactor core is live: "c" (the C extension, the default) or "python" (the pure-Python
#: reference core, where the extension is not built or EPOLLOOP_NO_EXTENSIONS is set).
core = "python" if _native.core is None else "c"

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """A new epolloop event loop: the loop_factory for asyncio.run and asyncio.Runner."""
    return Loop()


def run(
    main: Coroutine[Any, Any, _T],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = new_event_loop,
    debug: bool | None = None,
    **run_kwargs: Any,
) -> _T:
    """asyncio.run(main) on a new epolloop loop (asyncio.Runner on Python 3.11)."""
    if sys.version_info >= (3, 12):
        return asyncio.run(main, loop_factory=loop_factory, debug=debug, **run_kwargs)
    if run_kwargs:
        raise TypeError(f"run() got unexpected keyword arguments: {', '.join(run_kwargs)}")
    if asyncio.events._get_running_loop() is not None:
        # asyncio.run's own check, which 3.11's Runner makes only too late.
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with asyncio.Runner(loop_factory=loop_factory, debug=debug) as runner:
        return runner.run(main)


# asyncio's own policy for Unix, child-watcher methods included: programs that still call
# asyncio.set_child_watcher() (deprecated in 3.12) keep working, although epolloop's loops watch
# their children through pidfds and never use a watcher.
_BasePolicy: Any = asyncio.unix_events._UnixDefaultEventLoopPolicy


class EventLoopPolicy(_BasePolicy):  # type: ignore[misc]
    """An event loop policy whose loops are epolloop loops.

    Policies are deprecated from Python 3.14: prefer ``epolloop.run`` or a loop factory
    (``asyncio.run(main, loop_factory=epolloop.new_event_loop)``, ``asyncio.Runner``).
    """

    def _loop_factory(self) -> Loop:
        return new_event_loop()


def install() -> None:
    """Make epolloop the loop of asyncio.new_event_loop() and asyncio.run() by setting the
    policy. Deprecated along with policies from Python 3.14: prefer loop factories."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
