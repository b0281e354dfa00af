"""The loop's life: run_forever/stop, run_until_complete, close, the running loop, tasks and
futures, the task factory, interrupts and fork."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import re
import socket
import sys
import threading
import traceback
import warnings
import weakref

import pytest
from _helpers import noop


async def _answer():
    return 42


# -- run_forever and stop ---------------------------------------------------------------------

_UVLOOP_STOP = (
    "uvloop: stop() queues a callback instead of setting a flag, so callbacks queued before it "
    "in the next iteration run too"
)


def test_stop_before_run_forever_runs_one_iteration(new_loop, loop_name):
    loop = new_loop()
    calls = []

    def again(n):
        calls.append(n)
        loop.call_soon(again, n + 1)

    loop.call_soon(again, 0)
    loop.stop()
    loop.run_forever()
    assert calls == [0]
    assert not loop.is_running()

    # The stop was consumed: the next run goes on until the next stop.
    loop.call_soon(loop.stop)
    loop.run_forever()
    if loop_name == "uvloop" and calls == [0, 1, 2]:
        pytest.xfail(_UVLOOP_STOP)
    assert calls == [0, 1]


def test_stop_before_run_forever_with_nothing_ready(new_loop):
    loop = new_loop()
    calls = []
    timer = loop.call_later(3600, calls.append, "far away")
    loop.stop()
    loop.run_forever()  # one iteration that does not wait for the timer
    assert calls == []
    assert not timer.cancelled()
    timer.cancel()


def test_stop_in_callback_finishes_current_step(new_loop, loop_name):
    loop = new_loop()
    calls = []
    loop.call_soon(calls.append, "a")
    loop.call_soon(lambda: loop.call_soon(calls.append, "next step"))
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, "b")
    loop.run_forever()
    if loop_name == "uvloop" and calls == ["a", "b", "next step"]:
        pytest.xfail(_UVLOOP_STOP)
    assert calls == ["a", "b"]

    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["a", "b", "next step"]


def test_run_forever_runs_timers_until_stop(new_loop):
    loop = new_loop()
    calls = []
    loop.call_later(0.01, calls.append, "later")
    loop.call_later(0.02, loop.stop)
    loop.call_soon(calls.append, "soon")
    loop.run_forever()
    # (Under load, uvloop may run a timer that is already due before a call_soon callback.)
    assert sorted(calls) == ["later", "soon"]


def test_is_running_and_is_closed(new_loop):
    loop = new_loop()
    seen = []
    assert not loop.is_running()
    assert not loop.is_closed()
    loop.call_soon(lambda: seen.append((loop.is_running(), loop.is_closed())))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [(True, False)]
    assert not loop.is_running()
    loop.close()
    assert loop.is_closed()
    assert not loop.is_running()


# -- run_until_complete -----------------------------------------------------------------------


def test_run_until_complete_coroutine(new_loop):
    loop = new_loop()
    assert loop.run_until_complete(_answer()) == 42


def test_run_until_complete_future(new_loop):
    loop = new_loop()
    future = loop.create_future()
    loop.call_soon(future.set_result, "done")
    assert loop.run_until_complete(future) == "done"


def test_run_until_complete_task(new_loop):
    loop = new_loop()
    task = loop.create_task(_answer())
    assert loop.run_until_complete(task) == 42
    assert task.done()


def test_run_until_complete_awaitable(new_loop):
    loop = new_loop()

    class Awaitable:
        def __await__(self):
            return (yield from asyncio.sleep(0, result="awaited").__await__())

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_non_awaitable(new_loop):
    loop = new_loop()
    with pytest.raises(TypeError):
        loop.run_until_complete(42)
    with pytest.raises(TypeError):
        loop.run_until_complete(noop)
    # The loop is still usable.
    assert loop.run_until_complete(_answer()) == 42


def test_run_until_complete_propagates_exception(new_loop):
    loop = new_loop()

    async def fail():
        await asyncio.sleep(0)
        raise ValueError("from the coroutine")

    with pytest.raises(ValueError, match="from the coroutine"):
        loop.run_until_complete(fail())

    future = loop.create_future()
    loop.call_soon(future.set_exception, KeyError("from the future"))
    with pytest.raises(KeyError, match="from the future"):
        loop.run_until_complete(future)
    assert not loop.is_running()


def test_run_until_complete_cancelled_future(new_loop):
    loop = new_loop()
    future = loop.create_future()
    loop.call_soon(future.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(future)


def test_run_until_complete_stopped_before_done(new_loop):
    loop = new_loop()
    future = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match=r"^Event loop stopped before Future completed\.$"):
        loop.run_until_complete(future)
    assert not future.done()
    # Run again: the future can still complete.
    loop.call_soon(future.set_result, 1)
    assert loop.run_until_complete(future) == 1


async def test_run_until_complete_while_running():
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    with pytest.raises(RuntimeError, match="already running"):
        loop.run_until_complete(future)
    assert loop.is_running()
    assert asyncio.get_running_loop() is loop


def test_run_forever_while_running(new_loop):
    loop = new_loop()

    async def main():
        # Last thing the coroutine does: asyncio 3.12+ resets some loop state after the
        # refused call, so nothing here depends on the loop afterwards.
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_forever()
        return "checked"

    assert loop.run_until_complete(main()) == "checked"


def test_run_another_loop_while_one_runs(new_loop):
    outer = new_loop()
    inner = new_loop()

    async def check_run_until_complete():
        future = inner.create_future()
        with pytest.raises(RuntimeError, match="another loop is running"):
            inner.run_until_complete(future)
        assert asyncio.get_running_loop() is outer
        return "checked"

    async def check_run_forever():
        with pytest.raises(RuntimeError, match="another loop is running"):
            inner.run_forever()
        return "checked"

    assert outer.run_until_complete(check_run_until_complete()) == "checked"
    assert outer.run_until_complete(check_run_forever()) == "checked"
    assert not inner.is_running()
    assert inner.run_until_complete(_answer()) == 42


# -- close ------------------------------------------------------------------------------------


def test_close_is_idempotent(new_loop):
    loop = new_loop()
    loop.close()
    loop.close()
    assert loop.is_closed()


async def test_close_refused_while_running():
    loop = asyncio.get_running_loop()
    with pytest.raises(RuntimeError, match="running event loop"):
        loop.close()
    assert not loop.is_closed()
    await asyncio.sleep(0)


def test_close_drops_pending_callbacks_and_timers(new_loop):
    loop = new_loop()

    class Callback:
        def __call__(self):
            raise AssertionError("a dropped callback ran")

    soon, later = Callback(), Callback()
    soon_ref, later_ref = weakref.ref(soon), weakref.ref(later)
    loop.call_soon(soon)
    loop.call_later(3600, later)
    kept = loop.call_later(3600, noop)
    del soon, later
    loop.close()
    gc.collect()
    assert soon_ref() is None
    assert later_ref() is None
    kept.cancel()  # cancelling a dropped timer is harmless
    assert kept.cancelled()


_CLOSED_LOOP_CALLS = [
    "create_task",
    "call_soon",
    "call_soon_threadsafe",
    "call_later",
    "call_at",
    "run_in_executor",
    "run_forever",
    "run_until_complete",
    "add_reader",
    "add_writer",
]


@pytest.mark.parametrize("method", _CLOSED_LOOP_CALLS)
def test_closed_loop_refuses(new_loop, method):
    loop = new_loop()
    loop.close()
    rsock, wsock = socket.socketpair()
    coro = _answer()
    calls = {
        "create_task": lambda: loop.create_task(coro),
        "call_soon": lambda: loop.call_soon(noop),
        "call_soon_threadsafe": lambda: loop.call_soon_threadsafe(noop),
        "call_later": lambda: loop.call_later(0.01, noop),
        "call_at": lambda: loop.call_at(loop.time() + 0.01, noop),
        "run_in_executor": lambda: loop.run_in_executor(None, noop),
        "run_forever": loop.run_forever,
        "run_until_complete": lambda: loop.run_until_complete(coro),
        "add_reader": lambda: loop.add_reader(rsock, noop),
        "add_writer": lambda: loop.add_writer(wsock, noop),
    }
    try:
        with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
            calls[method]()
    finally:
        coro.close()
        rsock.close()
        wsock.close()


def test_remove_reader_writer_on_closed_loop(new_loop, loop_name):
    if loop_name == "uvloop":
        pytest.xfail("uvloop: remove_reader()/remove_writer() return None, not a bool")
    loop = new_loop()
    rsock, wsock = socket.socketpair()
    try:
        loop.add_reader(rsock, noop)
        loop.close()
        assert loop.remove_reader(rsock) is False
        assert loop.remove_writer(wsock) is False
    finally:
        rsock.close()
        wsock.close()


# -- the running loop -------------------------------------------------------------------------


def test_get_running_loop_in_callbacks(new_loop):
    loop = new_loop()
    seen = []

    def record():
        seen.append(asyncio.get_running_loop())

    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()
    loop.call_soon(record)
    loop.call_later(0.001, record)
    loop.call_later(0.002, loop.stop)
    loop.run_forever()
    assert seen == [loop, loop]
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


async def test_get_event_loop_in_coroutine():
    loop = asyncio.get_running_loop()
    assert asyncio.get_event_loop() is loop
    assert asyncio.get_running_loop() is loop


def test_unclosed_loop_warns(loop_factory, loop_name):
    if loop_name == "uvloop":
        pytest.xfail(
            "uvloop: no ResourceWarning; an open loop logs 'deallocating an open event loop'"
        )
    loop = loop_factory()
    # asyncio's BaseEventLoop.__del__: f"unclosed event loop {self!r}", and its repr.
    assert re.fullmatch(r"<[\w.]+ running=False closed=False debug=(True|False)>", repr(loop))
    expected = f"unclosed event loop {loop!r}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert messages == [expected]


def test_closed_loop_does_not_warn(loop_factory):
    loop = loop_factory()
    loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# -- interrupts -------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_exit_exception_in_callback_propagates(new_loop, loop_name, exc_type, debug):
    loop = new_loop()
    loop.set_debug(debug)
    calls = []

    def interrupt():
        calls.append("interrupt")
        raise exc_type()

    loop.call_soon(calls.append, 1)
    loop.call_soon(interrupt)
    loop.call_soon(calls.append, 2)
    with pytest.raises(exc_type):
        loop.run_forever()
    if loop_name == "uvloop" and calls == [1, "interrupt", 2]:
        pytest.xfail("uvloop: runs the rest of the ready queue before re-raising the exception")
    assert calls == [1, "interrupt"]
    assert not loop.is_running()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()

    # The loop runs again, and the callbacks still queued run first.
    loop.call_soon(calls.append, 3)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1, "interrupt", 2, 3]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_exit_exception_in_coroutine_propagates(new_loop, exc_type):
    loop = new_loop()

    async def interrupt():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(interrupt())
    assert not loop.is_running()
    assert loop.run_until_complete(_answer()) == 42


# -- fork -------------------------------------------------------------------------------------


def _child_runs_own_loop(loop_factory) -> int:
    """In a forked child: run a new loop with a call_soon and a timer; 0 if all went well."""
    loop = loop_factory()
    calls = []

    def record(what):
        calls.append(what)
        if len(calls) == 2:
            loop.stop()

    loop.call_soon(record, "soon")
    loop.call_later(0.01, record, "timer")
    loop.run_forever()
    loop.close()
    if sorted(calls) != ["soon", "timer"]:
        os.write(2, f"child: calls={calls}\n".encode())
        return 2
    return 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_in_running_loop(new_loop, loop_factory):
    loop = new_loop()

    async def main():
        with warnings.catch_warnings():
            # 3.12+ warns about forking a process that has threads (other tests' pools).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = _child_runs_own_loop(loop_factory)
            except BaseException:
                os.write(2, traceback.format_exc().encode())
            finally:
                os._exit(status)
        try:
            _, status = await asyncio.wait_for(
                loop.run_in_executor(None, os.waitpid, pid, 0), timeout=60
            )
        except BaseException:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise
        fired = loop.create_future()
        loop.call_later(0.001, fired.set_result, "fired")
        return os.waitstatus_to_exitcode(status), await fired

    assert loop.run_until_complete(main()) == (0, "fired")
    assert loop.run_until_complete(asyncio.sleep(0.001, result="again")) == "again"


# -- futures and tasks ------------------------------------------------------------------------


async def test_create_future():
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    assert isinstance(future, asyncio.Future)
    assert future.get_loop() is loop
    assert not future.done()
    loop.call_soon(future.set_result, "result")
    assert await future == "result"


async def test_create_task_default_name():
    loop = asyncio.get_running_loop()
    task = loop.create_task(_answer())
    assert re.fullmatch(r"Task-\d+", task.get_name())
    assert task.get_loop() is loop
    assert await task == 42


async def test_create_task_name_and_context():
    loop = asyncio.get_running_loop()
    var = contextvars.ContextVar("var", default="outer")
    context = contextvars.copy_context()
    context.run(var.set, "inner")

    async def read():
        await asyncio.sleep(0)
        value = var.get()
        var.set("changed by the task")
        return value

    task = loop.create_task(read(), name="reader", context=context)
    assert task.get_name() == "reader"
    if sys.version_info >= (3, 12):
        assert task.get_context() is context
    assert await task == "inner"
    assert var.get() == "outer"
    assert context[var] == "changed by the task"
    task.set_name("renamed")
    assert task.get_name() == "renamed"


def test_task_factory(new_loop):
    loop = new_loop()
    calls = []

    def factory(loop_, coro, **kwargs):
        calls.append((loop_, kwargs))
        return asyncio.Task(coro, loop=loop_, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    # (loop, coro), or (loop, coro, context=None): both match the documented signature.
    task = loop.create_task(_answer())
    assert [(made_on, kwargs.get("context")) for made_on, kwargs in calls] == [(loop, None)]
    assert loop.run_until_complete(task) == 42

    context = contextvars.copy_context()
    task = loop.create_task(_answer(), name="named", context=context)
    assert calls[1][0] is loop
    assert calls[1][1]["context"] is context
    assert task.get_name() == "named"
    assert loop.run_until_complete(task) == 42

    # Tasks made by asyncio itself go through the factory too.
    assert loop.run_until_complete(_answer()) == 42
    assert len(calls) == 3

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(_answer())
    assert len(calls) == 3


def test_task_factory_must_be_callable(new_loop):
    loop = new_loop()
    with pytest.raises(TypeError):
        loop.set_task_factory(42)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
async def test_eager_task_factory(loop_name):
    loop = asyncio.get_running_loop()
    steps = []

    async def suspends():
        steps.append("started")
        await asyncio.sleep(0)
        steps.append("resumed")
        return "suspended once"

    async def returns_at_once():
        steps.append("immediate")
        return "immediate"

    loop.set_task_factory(asyncio.eager_task_factory)
    try:
        coro = suspends()
        try:
            task = loop.create_task(coro)
        except TypeError as exc:
            coro.close()
            if loop_name == "uvloop" and "eager_start" in str(exc):
                pytest.xfail(
                    "uvloop: passes eager_start= to the task factory, which "
                    "asyncio.eager_task_factory does not accept"
                )
            raise
        assert steps == ["started"]
        assert not task.done()
        immediate = asyncio.create_task(returns_at_once(), name="eager")
        assert immediate.done()
        assert immediate.result() == "immediate"
        assert immediate.get_name() == "eager"
        assert await task == "suspended once"
        assert steps == ["started", "immediate", "resumed"]
    finally:
        loop.set_task_factory(None)


def test_thread_safety_of_get_running_loop(new_loop):
    """The running loop is per thread: another thread sees none while this one runs."""
    loop = new_loop()

    def in_thread():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return "none"
        return "leaked"

    async def main():
        result = []
        thread = threading.Thread(target=lambda: result.append(in_thread()))
        thread.start()
        await loop.run_in_executor(None, thread.join, 60)
        return result

    assert loop.run_until_complete(main()) == ["none"]
