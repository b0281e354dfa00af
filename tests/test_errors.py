"""Error handling (exception handlers, the default handler's log) and debug mode."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import logging
import os
import re
import subprocess
import sys
import time

import pytest
from _helpers import noop


def _fail():
    raise ZeroDivisionError("callback failed")


def _run_callbacks(loop, *callbacks):
    """Schedule the callbacks, then run the loop for exactly that step."""
    handles = [loop.call_soon(callback) for callback in callbacks]
    loop.call_soon(loop.stop)
    loop.run_forever()
    return handles


def _asyncio_errors(caplog):
    return [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.ERROR]


# -- exception handlers -----------------------------------------------------------------------


def test_set_and_get_exception_handler(new_loop):
    loop = new_loop()

    def handler(loop, context):
        pass

    assert loop.get_exception_handler() is None
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("not_callable", [42, "handler"])
def test_set_exception_handler_refuses_non_callable(new_loop, not_callable):
    loop = new_loop()
    with pytest.raises(TypeError):
        loop.set_exception_handler(not_callable)
    assert loop.get_exception_handler() is None


def test_callback_exception_goes_to_handler(new_loop):
    loop = new_loop()
    contexts = []
    calls = []
    error = ZeroDivisionError("boom")

    def failing_callback():
        raise error

    def schedule_more():
        calls.append("same step")
        loop.call_soon(calls.append, "next step")
        loop.call_soon(loop.stop)

    loop.set_exception_handler(lambda loop_, context: contexts.append((loop_, context)))
    handle = loop.call_soon(failing_callback)
    loop.call_soon(schedule_more)
    loop.run_forever()

    # The loop went on: the rest of the step, then the next one.
    assert calls == ["same step", "next step"]
    [(handler_loop, context)] = contexts
    assert handler_loop is loop
    assert context["exception"] is error
    assert context["handle"] is handle
    assert isinstance(context["message"], str)
    assert "Exception in callback" in context["message"]
    assert "failing_callback" in context["message"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ runs handlers in the context")
def test_exception_handler_runs_in_callback_context(new_loop):
    loop = new_loop()
    var = contextvars.ContextVar("var", default="loop")
    context = contextvars.copy_context()
    context.run(var.set, "callback")
    seen = []
    loop.set_exception_handler(lambda loop_, ctx: seen.append(var.get()))
    loop.call_soon(_fail, context=context)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["callback"]


@pytest.mark.loop_errors
def test_default_exception_handler_logs(new_loop, caplog):
    loop = new_loop()
    after = []

    def failing_callback():
        raise ZeroDivisionError("the callback failed")

    _run_callbacks(loop, failing_callback, lambda: after.append("still running"))
    assert after == ["still running"]
    records = _asyncio_errors(caplog)
    assert len(records) == 1
    assert [r for r in caplog.records if r.name == "asyncio"] == records
    assert "Exception in callback" in records[0].getMessage()
    assert "failing_callback" in records[0].getMessage()
    assert records[0].exc_info[0] is ZeroDivisionError
    # The log carries the traceback, down to the callback that raised.
    assert "Traceback (most recent call last)" in caplog.text
    assert "in failing_callback" in caplog.text
    assert "ZeroDivisionError: the callback failed" in caplog.text


@pytest.mark.loop_errors
def test_raising_exception_handler_is_logged(new_loop, caplog):
    loop = new_loop()
    after = []

    def handler(loop, context):
        raise RuntimeError("the handler failed")

    loop.set_exception_handler(handler)
    _run_callbacks(loop, _fail, lambda: after.append("still running"))
    assert after == ["still running"]
    records = _asyncio_errors(caplog)
    assert len(records) == 1
    assert records[0].getMessage().startswith("Unhandled error in exception handler")
    assert records[0].exc_info[0] is RuntimeError
    assert "RuntimeError: the handler failed" in caplog.text
    # The original context is part of the message.
    assert "Exception in callback" in records[0].getMessage()


@pytest.mark.loop_errors
def test_call_exception_handler_with_message_only(new_loop, caplog):
    loop = new_loop()
    try:
        raise ValueError("being handled")
    except ValueError:
        # Inside an except block: no exception in the context means no traceback logged.
        loop.call_exception_handler({"message": "only a message"})
    records = _asyncio_errors(caplog)
    assert len(records) == 1
    assert records[0].getMessage() == "only a message"
    assert not records[0].exc_info
    assert "Traceback" not in caplog.text


@pytest.mark.loop_errors
def test_call_exception_handler_default_message(new_loop, caplog):
    loop = new_loop()
    loop.call_exception_handler({"exception": KeyError("lost")})
    records = _asyncio_errors(caplog)
    assert len(records) == 1
    assert records[0].getMessage().startswith("Unhandled exception in event loop")
    assert records[0].exc_info[0] is KeyError


def test_call_exception_handler_passes_context_to_handler(new_loop):
    loop = new_loop()
    contexts = []
    loop.set_exception_handler(lambda loop_, context: contexts.append(context))
    loop.call_exception_handler({"message": "only a message"})
    assert contexts == [{"message": "only a message"}]


def test_unretrieved_task_exception_is_reported(new_loop):
    loop = new_loop()
    contexts = []
    loop.set_exception_handler(lambda loop_, context: contexts.append(context))

    async def fail():
        raise ValueError("never retrieved")

    task = loop.create_task(fail())
    loop.run_until_complete(asyncio.sleep(0))
    assert task.done()
    del task
    gc.collect()
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Task exception was never retrieved"
    assert isinstance(contexts[0]["exception"], ValueError)


# -- debug mode -------------------------------------------------------------------------------


def test_set_debug(new_loop):
    loop = new_loop()
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_tracks_coroutine_origins_while_running(new_loop):
    loop = new_loop()
    loop.set_debug(True)
    assert loop.slow_callback_duration == pytest.approx(0.1)
    before = sys.get_coroutine_origin_tracking_depth()

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_set_debug_while_running(new_loop):
    loop = new_loop()

    async def main():
        loop.set_debug(True)
        await asyncio.sleep(0)
        return loop.get_debug()

    assert loop.run_until_complete(main()) is True
    assert loop.get_debug() is True


_NEW_LOOP_EXPRESSIONS = {
    "epolloop": "epolloop.new_event_loop()",
    "epolloop-pure": "epolloop.loop.PythonLoop()",
    "asyncio": "asyncio.new_event_loop()",
    "uvloop": "uvloop.new_event_loop()",
}


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ([], {}, "False"),
        ([], {"PYTHONASYNCIODEBUG": "1"}, "True"),
        (["-X", "dev"], {}, "True"),
        (["-E"], {"PYTHONASYNCIODEBUG": "1"}, "False"),
    ],
    ids=["default", "PYTHONASYNCIODEBUG", "dev-mode", "ignore-environment"],
)
def test_debug_mode_from_environment(loop_factory, loop_name, flags, env, expected):
    if loop_name not in _NEW_LOOP_EXPRESSIONS:
        module, _, attribute = loop_name.partition(":")
        make = f"__import__({module!r}, fromlist=['_']).{attribute}()"
    else:
        make = _NEW_LOOP_EXPRESSIONS[loop_name]
    code = (
        "import asyncio, epolloop.loop\n"
        f"{'import uvloop' if loop_name == 'uvloop' else ''}\n"
        f"loop = {make}\n"
        "print(loop.get_debug())\n"
        "loop.close()\n"
    )
    child_env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")
    }
    child_env.update(env)
    result = subprocess.run(
        [sys.executable, *flags, "-c", code],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_debug_refuses_call_soon_from_another_thread(new_loop):
    loop = new_loop()
    loop.set_debug(True)

    def from_thread():
        try:
            loop.call_soon(noop)
        except RuntimeError as exc:
            return str(exc)
        return "accepted"

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            refused = await loop.run_in_executor(pool, from_thread)
            # call_soon_threadsafe is the way in from another thread.
            done = loop.create_future()
            pool.submit(loop.call_soon_threadsafe, done.set_result, "threadsafe")
            return refused, await done

    refused, threadsafe = loop.run_until_complete(main())
    assert "Non-thread-safe operation" in refused
    assert threadsafe == "threadsafe"


def _busy_wait(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def _slow_callback():
    _busy_wait(0.05)


def _loop_that_reports_steps_over_10ms(new_loop, caplog, *, debug):
    """A loop whose slow-callback threshold is 10 ms (reported in debug mode only), with the
    asyncio logger's warnings captured."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop = new_loop()
    loop.set_debug(debug)
    loop.slow_callback_duration = 0.01
    return loop


def _slow_step_reports(caplog, name):
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and name in r.getMessage()
    ]


def test_slow_callback_is_reported(new_loop, caplog):
    loop = _loop_that_reports_steps_over_10ms(new_loop, caplog, debug=True)
    _run_callbacks(loop, _slow_callback)
    reports = _slow_step_reports(caplog, "_slow_callback")
    assert len(reports) == 1
    assert re.fullmatch(r"Executing <.*_slow_callback.*> took \d+\.\d{3} seconds", reports[0])
    seconds = float(reports[0].rsplit(" took ", 1)[1].split()[0])
    assert seconds >= 0.05


def test_slow_task_step_is_reported(new_loop, caplog):
    loop = _loop_that_reports_steps_over_10ms(new_loop, caplog, debug=True)

    async def slow_coroutine():
        _busy_wait(0.05)

    loop.run_until_complete(slow_coroutine())
    reports = _slow_step_reports(caplog, "slow_coroutine")
    assert len(reports) == 1
    assert re.fullmatch(r"Executing <Task .*slow_coroutine.*> took \d+\.\d{3} seconds", reports[0])


def test_no_slow_callback_report_without_debug(new_loop, caplog):
    loop = _loop_that_reports_steps_over_10ms(new_loop, caplog, debug=False)
    _run_callbacks(loop, _slow_callback)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_debug_handles_record_source_traceback(new_loop):
    loop = new_loop()
    loop.set_debug(True)
    handle = loop.call_soon(noop)
    soon_line = sys._getframe().f_lineno - 1
    timer = loop.call_later(3600, noop)
    later_line = sys._getframe().f_lineno - 1
    at = loop.call_at(loop.time() + 3600, noop)
    at_line = sys._getframe().f_lineno - 1
    for made, line in [(handle, soon_line), (timer, later_line), (at, at_line)]:
        frame = made._source_traceback[-1]
        assert (frame.filename, frame.lineno) == (__file__, line)
        assert frame.name == "test_debug_handles_record_source_traceback"
    assert f"created at {__file__}:{soon_line}" in repr(handle)
    timer.cancel()
    at.cancel()

    loop.set_debug(False)
    assert not loop.call_soon(noop)._source_traceback


@pytest.mark.loop_errors
def test_debug_exception_log_shows_where_the_handle_was_created(new_loop, caplog):
    loop = new_loop()
    loop.set_debug(True)
    loop.call_soon(_fail)
    line = sys._getframe().f_lineno - 1
    loop.call_soon(loop.stop)
    loop.run_forever()
    records = _asyncio_errors(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "Object created at (most recent call last)" in message
    assert f'File "{__file__}", line {line}' in message
