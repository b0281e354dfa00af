"""Loop: asyncio's event loop API on top of the reactor.

The reactor (``_reactor.Reactor``, or the C core's ``_core.Reactor``) owns the kernel objects
and the scheduling methods; ``LoopMethods`` adds what makes it an asyncio loop: the
run/stop/close lifecycle, tasks and futures (asyncio's own C types), error handling, debug
mode, executors and async generators. ``Loop`` is the loop on the live core: ``CLoop`` when the
C extension is built and not disabled, else ``PythonLoop``.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import (
    AbstractEventLoop,
    Future,
    Task,
    constants,
    coroutines,
    events,
    futures,
    tasks,
    timeouts,
)
from asyncio.log import logger
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import Context
from typing import Any, TypeVar

from . import _reactor
from ._native import core as _core
from .net import Networking
from .processes import Processes
from .signals import Signals
from .transports.registry import TransportRegistry
from .transports.stream import CStreamTransport

_T = TypeVar("_T")

ExceptionHandler = Callable[[AbstractEventLoop, dict[str, Any]], object]
TaskFactory = Callable[..., "Future[Any]"]


def _stop_when_done(future: Future[Any]) -> None:
    """Done callback of run_until_complete's future."""
    if not future.cancelled() and isinstance(future.exception(), (SystemExit, KeyboardInterrupt)):
        # The exception is already propagating out of run_forever(), which stops it.
        return
    futures._get_loop(future).stop()


def _format_handle(handle: events.Handle) -> str:
    # A task's step is more telling as the task than as a bound method.
    owner = getattr(handle._callback, "__self__", None)
    return repr(owner) if isinstance(owner, Task) else str(handle)


class LoopMethods(Networking, Processes, Signals):
    """Everything an asyncio loop is above the reactor. A loop class puts it before a core's
    Reactor (whose scheduling methods it inherits) and AbstractEventLoop (last, so that none of
    its abstract methods, which only raise, hides the reactor's)."""

    _TransportRegistry: Callable[[], Any] = TransportRegistry  # the core's (see registry.py)

    def __init__(self) -> None:
        super().__init__()  # the reactor's
        self._transports = self._TransportRegistry()
        # Subprocess transports whose child is still watched through its pidfd.
        self._processes: weakref.WeakSet[Any] = weakref.WeakSet()
        # signal number -> handle; the socketpair that wakes the loop, made with the first.
        self._signal_handlers: dict[int, events.Handle] = {}
        self._signal_socket: Any = None
        self.slow_callback_duration = 0.1
        self._exception_handler: ExceptionHandler | None = None
        self._task_factory: TaskFactory | None = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet[Any] = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._old_agen_hooks: Any = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth: int | None = None
        # asyncio's own rule: -X dev, or PYTHONASYNCIODEBUG unless -E ignores the environment.
        self.set_debug(coroutines._is_debug_mode())

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # -- lifecycle ----------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._thread_id is not None

    def is_closed(self) -> bool:
        return self._closed

    def _check_closed(self) -> None:
        if self._closed:
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self) -> None:
        """Run until stop() is called."""
        self._run_forever_setup()
        try:
            self._run_until_stopped()
        finally:
            self._run_forever_cleanup()

    def _run_forever_setup(self) -> None:
        # Split out, as asyncio 3.13 does, for loops that embed this one in another event loop.
        # Unlike 3.13 it runs before the try: a refused run leaves the running loop alone.
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
        )
        events._set_running_loop(self)

    def _run_forever_cleanup(self) -> None:
        self._stopping = False
        self._thread_id = None
        events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None

    def run_until_complete(self, future: Awaitable[_T]) -> _T:
        """Run until *future* (a Future, a coroutine or an awaitable) is done; return its
        result or raise its exception."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception will be raised to the caller: no need to log it on destruction.
            future._log_destroy_pending = False  # type: ignore[attr-defined]
        future.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()  # mark retrieved: the caller sees the exception raised
            raise
        finally:
            future.remove_done_callback(_stop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()  # type: ignore[return-value]

    def close(self) -> None:
        """Close the loop: pending callbacks are dropped, the default executor shut down
        without waiting. Idempotent; refused while running."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        self._close_processes()  # before the reactor: reaping unregisters pidfds
        self._close_reactor()
        # After: as in asyncio, the loop is closed even if this fails (outside the main thread).
        self._close_signals()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # -- futures and tasks --------------------------------------------------------------------

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> Task[_T]:
        """Schedule a coroutine as a Task (or whatever the task factory makes of it)."""
        self._check_closed()
        if self._task_factory is None:
            task = Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:  # type: ignore[attr-defined]
                del task._source_traceback[-1]  # type: ignore[attr-defined]
        else:
            if context is None:
                task = self._task_factory(self, coro)  # the factory signature before 3.11
            else:
                task = self._task_factory(self, coro, context=context)
            if name is not None:
                task.set_name(name)  # type: ignore[attr-defined]
        return task  # type: ignore[return-value]

    def set_task_factory(self, factory: TaskFactory | None) -> None:
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self) -> TaskFactory | None:
        return self._task_factory

    # -- executors ----------------------------------------------------------------------------

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[..., _T],
        *args: Any,
    ) -> Future[_T]:
        """Run func(*args) in *executor* (the default thread pool if None)."""
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Shut the default executor down and join its threads, waiting at most *timeout*
        seconds (then warn and stop waiting)."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        done = self.create_future()
        # Joining blocks, so it happens in a thread of its own.
        thread = threading.Thread(target=self._join_executor, args=(executor, done))
        thread.start()
        try:
            async with timeouts.timeout(timeout):
                await done
        except TimeoutError:
            warnings.warn(
                f"The executor did not finishing joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            executor.shutdown(wait=False)
        else:
            thread.join()

    def _join_executor(self, executor: concurrent.futures.Executor, done: Future[None]) -> None:
        try:
            executor.shutdown(wait=True)
        except Exception as exc:
            if not self.is_closed():
                self.call_soon_threadsafe(_set_exception_unless_cancelled, done, exc)
        else:
            if not self.is_closed():
                self.call_soon_threadsafe(futures._set_result_unless_cancelled, done, None)

    # -- asynchronous generators --------------------------------------------------------------

    def _asyncgen_firstiter_hook(self, agen: Any) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        # Runs wherever the generator is garbage-collected, possibly in another thread.
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Close every asynchronous generator still alive (asyncio.run calls this)."""
        self._asyncgens_shutdown_called = True
        if not self._asyncgens:
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[agen.aclose() for agen in closing], return_exceptions=True)
        for result, agen in zip(results, closing, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- errors -------------------------------------------------------------------------------

    def get_exception_handler(self) -> ExceptionHandler | None:
        return self._exception_handler

    def set_exception_handler(self, handler: ExceptionHandler | None) -> None:
        """Route unhandled errors to handler(loop, context); None restores the default."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log *context* to the 'asyncio' logger at ERROR level, as asyncio does."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info: Any = (
            (type(exception), exception, exception.__traceback__)
            if exception is not None
            else False
        )
        current = self._current_handle
        if "source_traceback" not in context and current is not None and current._source_traceback:
            context["handle_traceback"] = current._source_traceback

        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                value = _format_stack("Object created at", value)
            elif key == "handle_traceback":
                value = _format_stack("Handle created at", value)
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Report an error nobody else could handle; never raises (except to exit)."""
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                # The default handler failed (a broken repr, say): say so, don't crash.
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            owner = context.get("task") or context.get("future") or context.get("handle")
            handler_context = owner.get_context() if hasattr(owner, "get_context") else None
            if handler_context is not None:
                handler_context.run(handler, self, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an unexpected "
                    "error in custom exception handler",
                    exc_info=True,
                )

    # -- debug mode ---------------------------------------------------------------------------

    def set_debug(self, enabled: bool) -> None:
        self._debug = enabled
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(constants.DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    def _report_slow_callback(self, handle: events.Handle, seconds: float) -> None:
        logger.warning("Executing %s took %.3f seconds", _format_handle(handle), seconds)


class PythonLoop(LoopMethods, _reactor.Reactor, AbstractEventLoop):
    """An asyncio event loop on epoll, timerfd and eventfd: the pure-Python core."""


if _core is not None:

    class CLoop(LoopMethods, _core.Reactor, AbstractEventLoop):
        """An asyncio event loop on epoll, timerfd and eventfd: the C core."""

        _StreamTransport = CStreamTransport
        _TransportRegistry = _core.TransportRegistry
        _recv_now = staticmethod(_core.recv_now)
        _send_now = staticmethod(_core.send_now)
        _accept_now = staticmethod(_core.accept_now)
        _accept_connection = staticmethod(_core.accept_connection)
        _peer_address = staticmethod(_core.peer_address)

    Loop: type[LoopMethods] = CLoop
else:
    Loop = PythonLoop


def _set_exception_unless_cancelled(future: Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)


def _format_stack(title: str, frames: traceback.StackSummary) -> str:
    return f"{title} (most recent call last):\n" + "".join(traceback.format_list(frames)).rstrip()
