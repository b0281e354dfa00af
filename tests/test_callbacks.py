"""call_soon and Handles: order, arguments, contexts, cancellation, the fairness rule, and the
arguments the scheduling methods refuse. Errors raised by callbacks: test_errors.py."""

import asyncio
import contextvars
import socket
import sys

import pytest
from _helpers import context_where_var_is, noop, record_var, var, var_set_to, wait


async def a_coroutine_function():
    pass


# Every scheduling method, called with a callback and nothing else.
SCHEDULERS = {
    "call_soon": lambda loop, callback: loop.call_soon(callback),
    "call_soon_threadsafe": lambda loop, callback: loop.call_soon_threadsafe(callback),
    "call_later": lambda loop, callback: loop.call_later(60, callback),
    "call_at": lambda loop, callback: loop.call_at(loop.time() + 60, callback),
}


def run_once(loop):
    """Run the loop for exactly one step (stop() before run_forever(), as asyncio documents)."""
    loop.stop()
    loop.run_forever()


# -- order and arguments ----------------------------------------------------------------------


def test_call_soon_runs_callbacks_in_fifo_order_with_their_arguments(new_loop):
    loop = new_loop()
    calls = []
    for i in range(200):
        loop.call_soon(lambda *args: calls.append(args), i, str(i), None)
    loop.call_soon(calls.append, "no args")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [(i, str(i), None) for i in range(200)] + ["no args"]


def test_call_soon_returns_before_running_the_callback(new_loop):
    loop = new_loop()
    calls = []
    loop.call_soon(calls.append, 1)
    assert calls == []
    run_once(loop)
    assert calls == [1]


# -- contexts ---------------------------------------------------------------------------------


def test_call_soon_context_runs_the_callback_in_that_context(new_loop):
    loop = new_loop()
    context = context_where_var_is("in context")
    seen = []
    loop.call_soon(record_var, seen, "callback", context=context)
    run_once(loop)
    assert seen == [("callback", "in context")]
    # The callback ran in *that* context, not in a copy of it.
    assert context[var] == "set by callback"
    assert var.get() == "unset"


def test_call_soon_default_context_is_a_copy_of_the_callers(new_loop):
    loop = new_loop()
    seen = []
    with var_set_to("at call time"):
        loop.call_soon(record_var, seen, "first")
        loop.call_soon(record_var, seen, "second")
        var.set("changed after the call")
        run_once(loop)
        # Each callback got its own copy, taken when it was scheduled...
        assert seen == [("first", "at call time"), ("second", "at call time")]
        # ...and what it set stayed in that copy.
        assert var.get() == "changed after the call"


# -- Handle -----------------------------------------------------------------------------------


def test_handle_cancel_and_cancelled(new_loop):
    loop = new_loop()
    calls = []
    kept = loop.call_soon(calls.append, "kept")
    dropped = loop.call_soon(calls.append, "dropped")
    assert not dropped.cancelled()
    dropped.cancel()
    assert dropped.cancelled()
    dropped.cancel()  # a second cancel is harmless
    assert dropped.cancelled()
    run_once(loop)
    assert calls == ["kept"]
    assert not kept.cancelled()


def test_handle_cancelled_by_an_earlier_callback_of_the_same_step_never_runs(new_loop):
    loop = new_loop()
    calls = []
    victim = None

    def cancel_the_victim():
        calls.append("canceller")
        victim.cancel()

    loop.call_soon(cancel_the_victim)
    victim = loop.call_soon(calls.append, "victim")
    loop.call_soon(calls.append, "bystander")
    run_once(loop)
    assert calls == ["canceller", "bystander"]


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_handle_repr_does_not_crash(new_loop, debug):
    loop = new_loop()
    loop.set_debug(debug)

    def a_recognisable_callback():
        pass

    handle = loop.call_soon(a_recognisable_callback)
    assert "a_recognisable_callback" in repr(handle)
    handle.cancel()
    assert isinstance(repr(handle), str)
    with_args = loop.call_soon(noop, object(), "x" * 1000)
    assert isinstance(repr(with_args), str)
    run_once(loop)
    assert isinstance(repr(with_args), str)


@pytest.mark.parametrize("method", SCHEDULERS)
def test_debug_mode_handle_repr_says_where_it_was_created(new_loop, method):
    loop = new_loop()
    loop.set_debug(True)
    handle = SCHEDULERS[method](loop, noop)
    handle.cancel()
    # The scheduling call made in this file, not a frame inside the loop.
    assert f"created at {__file__}:" in repr(handle)


def test_handle_get_context(new_loop, loop_name):
    loop = new_loop()
    context = contextvars.copy_context()
    explicit = loop.call_soon(noop, context=context)
    implicit = loop.call_soon(noop)
    if not hasattr(explicit, "get_context"):
        if sys.version_info < (3, 12):
            pytest.skip("Handle.get_context() is new in Python 3.12")
        if loop_name == "uvloop":
            pytest.xfail("uvloop: its Handle has no get_context()")
    assert explicit.get_context() is context
    assert isinstance(implicit.get_context(), contextvars.Context)
    assert implicit.get_context() is not context


# -- fairness: what a callback schedules runs in the next step ----------------------------------


def test_self_rescheduling_callbacks_interleave(new_loop):
    loop = new_loop()
    calls = []

    def tick(name, n):
        calls.append(f"{name}{n}")
        if n < 4:
            loop.call_soon(tick, name, n + 1)
        elif name == "b":
            loop.stop()

    loop.call_soon(tick, "a", 0)
    loop.call_soon(tick, "b", 0)
    loop.run_forever()
    assert calls == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]


def test_callbacks_scheduled_during_a_step_run_after_the_next_io_poll(new_loop):
    loop = new_loop()
    calls = []
    readable, writer = socket.socketpair()
    with readable, writer:
        # Never drained: a level-triggered reader is ready again at every poll.
        writer.send(b"x")

        def step(n):
            calls.append(n)
            if n < 3:
                loop.call_soon(step, n + 1)
            else:
                loop.remove_reader(readable)
                loop.stop()

        loop.add_reader(readable, calls.append, "io")
        loop.call_soon(step, 0)
        loop.run_forever()
    # Each step is queued by the previous one, so an I/O poll happens between any two of them.
    assert calls == [0, "io", 1, "io", 2, "io", 3]


def test_a_callback_rescheduling_itself_forever_does_not_starve_timers(new_loop):
    loop = new_loop()
    spins = 0
    timer_fired = False

    def spin():
        nonlocal spins
        spins += 1
        if timer_fired:
            return
        if spins == 1_000_000:  # safety net: a loop that starves its timers stops here
            loop.stop()
            return
        loop.call_soon(spin)

    def timer():
        nonlocal timer_fired
        timer_fired = True
        loop.stop()

    loop.call_soon(spin)
    loop.call_later(0.001, timer)
    loop.run_forever()
    assert timer_fired


def test_callbacks_scheduled_by_the_last_step_wait_for_the_next_run(new_loop, loop_name):
    # asyncio documents it: after stop(), run_forever() finishes the current batch of callbacks;
    # those they schedule run the next time the loop runs.
    loop = new_loop()
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(second)
        loop.stop()

    def second():
        calls.append("second")
        loop.stop()

    loop.call_soon(first)
    loop.run_forever()
    if loop_name == "uvloop" and calls == ["first", "second"]:
        pytest.xfail(
            "uvloop: stop() queues a callback of its own, so what the last step queued "
            "before calling stop() still runs in this run"
        )
    assert calls == ["first"]
    loop.run_forever()
    assert calls == ["first", "second"]


# -- refused arguments ------------------------------------------------------------------------


class BadCallback:
    """The callbacks asyncio refuses in debug mode."""

    def __init__(self, kind):
        self.kind = kind
        self.coroutine = None

    def make(self):
        if self.kind == "coroutine":
            self.coroutine = a_coroutine_function()
            return self.coroutine
        if self.kind == "coroutine function":
            return a_coroutine_function
        return 42

    def close(self):
        if self.coroutine is not None:
            self.coroutine.close()

    @property
    def message(self):
        return "callable" if self.kind == "not callable" else "coroutine"


@pytest.fixture(params=["coroutine", "coroutine function", "not callable"])
def bad_callback(request):
    bad = BadCallback(request.param)
    yield bad
    bad.close()


@pytest.mark.parametrize("method", SCHEDULERS)
def test_debug_mode_refuses_coroutines_and_non_callables(new_loop, loop_name, method, bad_callback):
    loop = new_loop()
    loop.set_debug(True)
    try:
        handle = SCHEDULERS[method](loop, bad_callback.make())
    except TypeError as exc:
        assert bad_callback.message in str(exc)
    else:
        handle.cancel()
        if loop_name == "uvloop":
            pytest.xfail("uvloop: the scheduling methods do not validate callbacks, even in debug")
        pytest.fail(f"{method}() accepted a {bad_callback.kind} in debug mode")
    run_once(loop)  # nothing was queued: running a step logs no error


@pytest.mark.parametrize("kind", ["coroutine", "not callable"])
@pytest.mark.parametrize("method", SCHEDULERS)
@pytest.mark.epolloop_only  # asyncio checks callbacks only in debug mode
def test_epolloop_refuses_non_callables_outside_debug_mode(new_loop, method, kind):
    loop = new_loop()
    loop.set_debug(False)
    bad = BadCallback(kind)
    try:
        with pytest.raises(TypeError, match=bad.message):
            SCHEDULERS[method](loop, bad.make())
    finally:
        bad.close()
    run_once(loop)  # nothing was queued: running a step logs no error


@pytest.mark.parametrize("method", SCHEDULERS)
def test_scheduling_on_a_closed_loop_raises(new_loop, method):
    loop = new_loop()
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        SCHEDULERS[method](loop, noop)


async def test_call_soon_from_a_running_task():
    loop = asyncio.get_running_loop()
    calls = []
    for i in range(5):
        loop.call_soon(calls.append, i)
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await wait(done)
    assert calls == [0, 1, 2, 3, 4]
