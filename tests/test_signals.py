"""Signal handlers on the loop: add_signal_handler / remove_signal_handler, and Ctrl-C in a
program run by asyncio.run / asyncio.Runner / epolloop.run.

Stock asyncio is the reference (unix_events._UnixSelectorEventLoop, the same in 3.11 to 3.13, and
runners.Runner): every assertion holds there. Where uvloop differs, the case is a strict xfail
naming the deviation.

What is tested: a handler is called with its arguments as a loop callback (later, from the loop,
never inside the signal handler itself), in the context add_signal_handler() was called in,
whoever sends the signal (this thread, another thread, a signal handled by another thread, a
child process), including when the loop sleeps with nothing scheduled; replacing and removing
handlers and the dispositions left behind (remove, close); the errors. The Ctrl-C tests run a
small Python program in a child process and interrupt it with SIGINT.

Signals are sent only to this process and only once a handler is installed (SIGUSR1 at its
default disposition would end the test run); an autouse fixture restores every disposition and
the wake-up fd a test may change, even when it fails. Waits are on futures and events, never on
timed sleeps; ``wait``'s guard only turns a signal that never arrives into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _helpers import GUARD, Child, noop, spin, var, var_set_to, wait

SIGUSR1 = signal.SIGUSR1
SIGUSR2 = signal.SIGUSR2
SIGINT = signal.SIGINT

# The signals these tests install handlers for (SIGKILL and SIGSTOP cannot be changed).
_TOUCHED = (SIGUSR1, SIGUSR2, SIGINT)


@pytest.fixture(autouse=True)
def _restore_signals() -> Iterator[None]:
    """Put back the dispositions of the signals these tests use, and the wake-up fd, as they
    were before the test, whatever the test or the loop left behind."""
    saved = {sig: signal.getsignal(sig) for sig in _TOUCHED}
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: installed from C, cannot be put back from Python
                signal.signal(sig, handler)
        signal.set_wakeup_fd(wakeup_fd)


def _xfail_on_uvloop(
    request: pytest.FixtureRequest,
    loop_name: str,
    reason: str,
    raises: type[BaseException] | tuple[type[BaseException], ...] = AssertionError,
) -> None:
    """Expect this test to fail on uvloop (strictly: a pass is an error), for *reason*."""
    if loop_name == "uvloop":
        request.node.add_marker(
            pytest.mark.xfail(strict=True, raises=raises, reason=f"uvloop: {reason}")
        )


def _fail(future: asyncio.Future[Any], message: str) -> None:
    if not future.done():
        future.set_exception(AssertionError(message))


# -- the handler is a loop callback -----------------------------------------------------------


@pytest.mark.parametrize("sig", [SIGUSR1, SIGUSR2], ids=["SIGUSR1", "SIGUSR2"])
async def test_handler_is_called_later_by_the_loop_with_its_args(sig):
    loop = asyncio.get_running_loop()
    called: asyncio.Future[tuple[Any, ...]] = loop.create_future()

    def handler(*args: Any) -> None:
        called.set_result((args, threading.get_ident(), asyncio.get_running_loop()))

    loop.add_signal_handler(sig, handler, "first", 2)
    # A signal a process sends itself is delivered before kill() returns; the loop's handler
    # is not called from the signal handler but later, by the loop, as a callback.
    os.kill(os.getpid(), sig)
    assert not called.done()
    args, thread, running_loop = await wait(called)
    assert args == ("first", 2)
    assert thread == threading.main_thread().ident
    assert running_loop is loop
    assert loop.remove_signal_handler(sig) is True


async def test_handler_is_called_once_per_signal_while_installed():
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[str] = asyncio.Queue()
    loop.add_signal_handler(SIGUSR1, arrived.put_nowait, "usr1")
    loop.add_signal_handler(SIGUSR2, arrived.put_nowait, "usr2")
    for sig, name in [(SIGUSR1, "usr1"), (SIGUSR2, "usr2"), (SIGUSR1, "usr1")]:
        os.kill(os.getpid(), sig)
        assert await wait(arrived.get()) == name
    await spin()
    assert arrived.empty()


async def test_handler_runs_in_the_context_of_add_signal_handler():
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    arrived: asyncio.Queue[None] = asyncio.Queue()

    def handler() -> None:
        seen.append(var.get())
        var.set("set by the handler")
        arrived.put_nowait(None)

    with var_set_to("when added"):
        loop.add_signal_handler(SIGUSR1, handler)
    with var_set_to("when sent"):
        os.kill(os.getpid(), SIGUSR1)
        await wait(arrived.get())
        os.kill(os.getpid(), SIGUSR1)
        await wait(arrived.get())
        assert var.get() == "when sent"
    # asyncio makes one Handle (context=None: a copy of the context at add_signal_handler())
    # and runs it for every signal, so what the handler sets is there the next time.
    assert seen == ["when added", "set by the handler"]
    assert var.get() == "unset"


async def test_exception_in_handler_goes_to_the_exception_handler():
    loop = asyncio.get_running_loop()
    reported: asyncio.Future[dict[str, Any]] = loop.create_future()
    loop.set_exception_handler(lambda _loop, context: reported.set_result(context))
    error = ZeroDivisionError("from the handler")

    def handler() -> None:
        raise error

    loop.add_signal_handler(SIGUSR1, handler)
    os.kill(os.getpid(), SIGUSR1)
    context = await wait(reported)
    assert context["exception"] is error
    assert context["message"].startswith("Exception in callback")
    assert "handle" in context
    # The loop goes on, and the handler stays installed.
    again = loop.create_future()
    loop.set_exception_handler(lambda _loop, context: again.set_result(context["exception"]))
    os.kill(os.getpid(), SIGUSR1)
    assert await wait(again) is error


# -- a signal wakes a loop that sleeps --------------------------------------------------------


def _sleeping_in(native_id: int) -> str | None:
    """Where thread *native_id* of this process sleeps: its wchan (the kernel function it
    waits in, "0" if the kernel hides it or the thread is just going to sleep), or None if
    it does not sleep."""
    task = f"/proc/self/task/{native_id}"
    with open(f"{task}/stat") as file:
        stat = file.read()
    if stat[stat.rindex(")") + 2] != "S":
        return None
    with open(f"{task}/wchan") as file:
        return file.read()


def _wait_until_asleep_in_poll(native_id: int, unless: threading.Event) -> None:
    """Return once thread *native_id* sleeps in the kernel other than in a futex wait (for
    the GIL or a lock): for an idle event loop, in its poll. Where the kernel hides wchan, a
    sleep seen on several looks in a row has to do. Return at once when *unless* is set."""
    hidden = 0
    deadline = time.monotonic() + GUARD
    while not unless.is_set():
        wchan = _sleeping_in(native_id)
        if wchan == "0":
            hidden += 1
        elif wchan is not None and "futex" not in wchan:
            return
        else:
            hidden = 0
        if hidden >= 5:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the loop's thread never went to sleep within {GUARD} s")
        time.sleep(0.0005)


def _kill_from_child_process(sig: signal.Signals) -> None:
    subprocess.run(["/bin/sh", "-c", f"kill -{sig.name[3:]} {os.getpid()}"], check=True)


SENDERS: dict[str, Callable[[signal.Signals], None]] = {
    # A process-directed signal: the kernel picks the thread (usually the main one, asleep).
    "os.kill-from-thread": lambda sig: os.kill(os.getpid(), sig),
    # Handled by the sending thread, not the loop's: the wake-up fd is all that wakes the loop.
    "pthread_kill-of-other-thread": lambda sig: signal.pthread_kill(threading.get_ident(), sig),
    "child-process": _kill_from_child_process,
}


@pytest.mark.parametrize("send", list(SENDERS.values()), ids=list(SENDERS))
def test_signal_wakes_a_loop_sleeping_with_nothing_scheduled(new_loop, send):
    loop = new_loop()
    handled: asyncio.Future[str] = loop.create_future()
    loop.add_signal_handler(SIGUSR1, handled.set_result, "handled")
    about_to_sleep = threading.Event()
    finished = threading.Event()
    problems: list[str] = []
    loop_thread = threading.get_native_id()

    def sender() -> None:
        about_to_sleep.wait()
        # Wait until the loop thread is asleep in its poll, so the signal has to wake it.
        try:
            _wait_until_asleep_in_poll(loop_thread, unless=finished)
        except AssertionError as exc:
            problems.append(str(exc))
        if finished.is_set():  # the test failed already
            return
        send(SIGUSR1)
        # A failure guard only, through call_soon_threadsafe: the loop has no timer at all.
        if not finished.wait(GUARD):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_fail, handled, "the signal did not wake the loop")

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        # The last callback before the loop has nothing left to do.
        loop.call_soon(about_to_sleep.set)
        assert loop.run_until_complete(handled) == "handled"
    finally:
        finished.set()
        about_to_sleep.set()
        thread.join()
    assert problems == []


def test_signals_sent_before_the_loop_runs_are_handled(new_loop, loop_name, request):
    _xfail_on_uvloop(
        request,
        loop_name,
        "signals that arrive while the loop is not running are lost (its wake-up fd is set "
        "only inside run_forever)",
    )
    loop = new_loop()
    calls: list[str] = []
    loop.add_signal_handler(SIGUSR1, calls.append, "usr1")
    for _ in range(3):
        os.kill(os.getpid(), SIGUSR1)
    assert calls == []

    # The signals are in already: the loop's first look at I/O finds them, so a few
    # iterations are enough.
    loop.run_until_complete(spin(10))
    # asyncio makes one call per delivery (one byte each in the wake-up fd): 3 here. Standard
    # signals may coalesce while pending, so at least one is what a loop owes.
    assert 1 <= len(calls) <= 3


# -- replace and remove -----------------------------------------------------------------------


async def test_adding_again_replaces_the_handler():
    loop = asyncio.get_running_loop()
    calls: list[str] = []
    second: asyncio.Future[None] = loop.create_future()
    loop.add_signal_handler(SIGUSR1, calls.append, "first")

    def replacement() -> None:
        calls.append("second")
        second.set_result(None)

    loop.add_signal_handler(SIGUSR1, replacement)
    os.kill(os.getpid(), SIGUSR1)
    await wait(second)
    await spin()
    assert calls == ["second"]
    assert loop.remove_signal_handler(SIGUSR1) is True
    assert loop.remove_signal_handler(SIGUSR1) is False


@pytest.mark.parametrize(
    ("sig", "default"),
    [(SIGUSR1, signal.SIG_DFL), (SIGUSR2, signal.SIG_DFL), (SIGINT, signal.default_int_handler)],
    ids=["SIGUSR1", "SIGUSR2", "SIGINT"],
)
def test_remove_restores_the_default_disposition(new_loop, sig, default):
    # A sync test: pytest-asyncio runs async ones in an asyncio.Runner, whose own SIGINT
    # handler would be in place.
    loop = new_loop()
    # From the default (a test run started with SIGINT ignored has SIG_IGN here).
    signal.signal(sig, default)

    async def main() -> bool:
        handled: asyncio.Future[None] = loop.create_future()
        loop.add_signal_handler(sig, handled.set_result, None)
        # While installed, the signal goes to the handler (for SIGINT: no KeyboardInterrupt).
        os.kill(os.getpid(), sig)
        await wait(handled)
        return loop.remove_signal_handler(sig)

    assert loop.run_until_complete(main()) is True
    # asyncio puts back SIG_DFL, or Python's own default_int_handler for SIGINT, whatever was
    # there before add_signal_handler().
    assert signal.getsignal(sig) == default


async def test_remove_without_a_handler_returns_false_and_changes_nothing():
    loop = asyncio.get_running_loop()
    signal.signal(SIGUSR2, signal.SIG_IGN)
    assert loop.remove_signal_handler(SIGUSR2) is False
    assert signal.getsignal(SIGUSR2) == signal.SIG_IGN
    assert loop.remove_signal_handler(signal.SIGKILL) is False
    # A handler for another signal is no handler for this one.
    loop.add_signal_handler(SIGUSR1, noop)
    assert loop.remove_signal_handler(SIGUSR2) is False
    assert loop.remove_signal_handler(SIGUSR1) is True


def test_close_removes_handlers_and_restores_dispositions(new_loop, loop_name, request):
    _xfail_on_uvloop(
        request,
        loop_name,
        "close() leaves its handlers installed (remove_signal_handler() returns False when "
        "the loop is not running, and close() relies on it)",
    )
    signal.set_wakeup_fd(-1)  # start with none (the fixture puts back the one before)
    loop = new_loop()
    for sig in _TOUCHED:
        loop.add_signal_handler(sig, noop)
    loop.run_until_complete(spin())
    loop.close()
    assert signal.getsignal(SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(SIGUSR2) == signal.SIG_DFL
    assert signal.getsignal(SIGINT) == signal.default_int_handler
    # No wake-up fd left pointing at a closed loop's (soon reused) file descriptor.
    assert signal.set_wakeup_fd(-1) == -1


def test_remove_before_the_loop_runs(new_loop, loop_name, request):
    _xfail_on_uvloop(
        request, loop_name, "remove_signal_handler() returns False when the loop is not running"
    )
    loop = new_loop()
    loop.add_signal_handler(SIGUSR1, noop)
    assert loop.remove_signal_handler(SIGUSR1) is True
    assert signal.getsignal(SIGUSR1) == signal.SIG_DFL


# -- errors -----------------------------------------------------------------------------------


def test_add_signal_handler_outside_the_main_thread(new_loop, loop_name, request):
    _xfail_on_uvloop(
        request,
        loop_name,
        "raises ValueError('add_signal_handler() can only be called from the main thread')",
    )
    outcome: list[BaseException | None] = []

    def in_thread() -> None:
        loop = new_loop()
        try:
            loop.add_signal_handler(SIGUSR1, noop)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)
        finally:
            loop.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    [error] = outcome
    # asyncio calls signal.set_wakeup_fd() first and turns its ValueError into a RuntimeError.
    assert isinstance(error, RuntimeError), repr(error)
    assert "main thread" in str(error)
    assert signal.getsignal(SIGUSR1) == signal.SIG_DFL


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_uncatchable_signals(new_loop, sig):
    loop = new_loop()
    with pytest.raises(RuntimeError, match=f"^sig {int(sig)} cannot be caught$"):
        loop.add_signal_handler(sig, noop)
    assert loop.remove_signal_handler(sig) is False
    assert signal.getsignal(sig) == signal.SIG_DFL


def _a_reserved_signal_number() -> list[Any]:
    """A number below NSIG that is no valid signal (glibc keeps 32 and 33 for its threads)."""
    valid = signal.valid_signals()
    reserved = [number for number in range(1, signal.NSIG) if number not in valid]
    return [pytest.param(reserved[0], id=f"reserved-{reserved[0]}")] if reserved else []


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(0, id="0"),
        pytest.param(-1, id="-1"),
        pytest.param(signal.NSIG, id="NSIG"),
        pytest.param(1000, id="1000"),
        *_a_reserved_signal_number(),
    ],
)
def test_invalid_signal_numbers(new_loop, loop_name, request, sig):
    if 0 < sig < signal.NSIG:
        _xfail_on_uvloop(
            request,
            loop_name,
            "checks only 1 <= sig < NSIG, so a reserved number fails later with "
            "RuntimeError('sig N cannot be caught'), and remove returns False",
            raises=RuntimeError,
        )
    loop = new_loop()
    # asyncio: ValueError(f'invalid signal number {sig}'), for add and remove alike.
    with pytest.raises(ValueError):
        loop.add_signal_handler(sig, noop)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", ["1", 1.0, None], ids=["str", "float", "None"])
def test_signal_that_is_no_int(new_loop, sig):
    loop = new_loop()
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.add_signal_handler(sig, noop)
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.remove_signal_handler(sig)


def test_coroutines_are_refused(new_loop):
    loop = new_loop()

    async def handler() -> None:
        pass

    message = r"coroutines cannot be used with add_signal_handler\(\)"
    with pytest.raises(TypeError, match=message):
        loop.add_signal_handler(SIGUSR1, handler)
    coroutine = handler()
    try:
        with pytest.raises(TypeError, match=message):
            loop.add_signal_handler(SIGUSR1, coroutine)
    finally:
        coroutine.close()
    assert signal.getsignal(SIGUSR1) == signal.SIG_DFL


def test_closed_loop(new_loop):
    loop = new_loop()
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_signal_handler(SIGUSR1, noop)
    assert signal.getsignal(SIGUSR1) == signal.SIG_DFL
    # remove_signal_handler() does not check: there is nothing to remove.
    assert loop.remove_signal_handler(SIGUSR1) is False


# -- Ctrl-C -----------------------------------------------------------------------------------

_LOOP_FACTORIES = {
    "epolloop": ("import epolloop", "epolloop.new_event_loop"),
    "epolloop-pure": ("import epolloop.loop", "epolloop.loop.PythonLoop"),
    "asyncio": ("", "asyncio.SelectorEventLoop"),
    "uvloop": ("import uvloop", "uvloop.new_event_loop"),
}

_RUNNERS = {
    # asyncio.run's loop_factory is new in 3.12; on 3.11 asyncio.Runner takes it.
    "asyncio.run": (
        "if sys.version_info >= (3, 12):\n"
        "    asyncio.run(main(), loop_factory=FACTORY)\n"
        "else:\n"
        "    with asyncio.Runner(loop_factory=FACTORY) as runner:\n"
        "        runner.run(main())\n"
    ),
    "epolloop.run": "import epolloop\nepolloop.run(main(), loop_factory=FACTORY)\n",
}

_WAITS = {
    "event": "asyncio.Event().wait()",  # nothing scheduled: the loop sleeps with no timeout
    "sleep": "asyncio.sleep(3600)",  # one far timer
}

_PROGRAM = """\
import asyncio, signal, sys
{import_loop}
FACTORY = {factory}

# As at a terminal: a Python started with SIGINT ignored (a test run in the background of a
# non-interactive shell) leaves it ignored, and Ctrl-C would do nothing.
signal.signal(signal.SIGINT, signal.default_int_handler)


def say(line):
    print(line, flush=True)


async def main():
    loop = asyncio.get_running_loop()
    # From a callback: by then the main task is suspended in its await.
    loop.call_soon(say, "ready")
    try:
        await {wait}
    except asyncio.CancelledError:
        say("cancelled")
        if {stubborn}:
            loop.call_soon(say, "ready")
            try:
                await {wait}
            except asyncio.CancelledError:
                say("cancelled again")
                raise
        raise
    say("not cancelled")


{run}
say("returned")
"""


def _program(loop_name: str, runner: str, wait_for: str, *, stubborn: bool = False) -> str:
    """The child's program: *runner* runs main() on the loop under test; main() says 'ready'
    when it awaits *wait_for* and 'cancelled' when that is cancelled (with *stubborn*, it
    then awaits again, to be cancelled a second time)."""
    if loop_name in _LOOP_FACTORIES:
        import_loop, factory = _LOOP_FACTORIES[loop_name]
    else:  # a --loop module:callable
        module, _, attribute = loop_name.partition(":")
        import_loop, factory = f"import {module}", f"{module}.{attribute}"
    return _PROGRAM.format(
        import_loop=import_loop,
        factory=factory,
        wait=_WAITS[wait_for],
        stubborn=stubborn,
        run=_RUNNERS[runner],
    )


def _assert_interrupted(returncode: int, err: str) -> None:
    # An uncaught KeyboardInterrupt: Python prints the traceback, then ends itself with SIGINT
    # (since 3.8) so that its parent sees it was interrupted.
    assert returncode == -SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err


@pytest.mark.parametrize(
    ("runner", "wait_for"),
    [("asyncio.run", "event"), ("asyncio.run", "sleep"), ("epolloop.run", "event")],
)
def test_ctrl_c_cancels_the_main_task_then_raises_keyboard_interrupt(
    loop_factory, loop_name, runner, wait_for
):
    with Child(_program(loop_name, runner, wait_for)) as child:
        child.expect("ready")
        child.interrupt()
        returncode, out, err = child.finish()
    # The runner's SIGINT handler cancels the main task (it sees CancelledError) and, the task
    # cancelled, run() raises KeyboardInterrupt instead of CancelledError.
    assert out == ["cancelled"], err
    _assert_interrupted(returncode, err)


def test_second_ctrl_c_raises_keyboard_interrupt_at_once(loop_factory, loop_name):
    with Child(_program(loop_name, "asyncio.run", "event", stubborn=True)) as child:
        child.expect("ready")
        child.interrupt()
        child.expect("cancelled")
        # The main task swallowed the cancellation and awaits again.
        child.expect("ready")
        child.interrupt()
        returncode, out, err = child.finish()
    # The second SIGINT raises KeyboardInterrupt from the signal handler, out of the loop's
    # wait; the runner's close() then cancels the still-pending main task and runs it to the
    # end on the same loop, before the KeyboardInterrupt goes on.
    assert out == ["cancelled again"], err
    _assert_interrupted(returncode, err)
