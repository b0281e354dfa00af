"""call_soon_threadsafe: waking a sleeping loop, many threads at once, contexts, ping-pong; and
debug mode's refusal of non-thread-safe calls from other threads."""

import asyncio
import contextlib
import functools
import queue
import signal
import threading
import time

import pytest
from _helpers import GUARD, context_where_var_is, noop, record_var, var, wait

THREADS = 8
CALLS_PER_THREAD = 10_000


@contextlib.contextmanager
def watchdog(seconds=GUARD):
    """Safety net for a loop that may never wake up: after *seconds*, interrupt this thread with
    a signal whose handler raises. A signal touches no loop state, unlike a timer or a watched
    fd, which would change what the loop is waiting for."""

    def expire(signum, frame):
        raise TimeoutError(f"watchdog: the loop was still blocked after {seconds} s")

    previous = signal.signal(signal.SIGUSR1, expire)
    timer = threading.Timer(seconds, signal.pthread_kill, (threading.get_ident(), signal.SIGUSR1))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGUSR1, previous)


def read_wchan(native_id):
    """Where in the kernel thread *native_id* sleeps ("0" while it runs), or "" if unknown."""
    try:
        with open(f"/proc/self/task/{native_id}/wchan") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def wchan_is_visible():
    """Whether this kernel tells us where a sleeping thread sleeps (it may hide it)."""
    release = threading.Event()
    sleeper = start_thread(release.wait, 30)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if read_wchan(sleeper.native_id) not in ("", "0"):
                return True
            time.sleep(0.001)
        return False
    finally:
        release.set()
        sleeper.join()


def wait_until_asleep_in_epoll(native_id, patience=10.0):
    """Best effort: wait until thread *native_id* is blocked in epoll_wait, so that what follows
    really has to wake it. Returns whether that was seen."""
    if not wchan_is_visible():
        return False
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if "epoll" in read_wchan(native_id):
            return True
        time.sleep(0.0005)
    return False


def start_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# -- waking the loop --------------------------------------------------------------------------


def test_wakes_a_loop_with_nothing_else_to_do(new_loop):
    loop = new_loop()
    threads = []

    def from_thread(loop_thread):
        wait_until_asleep_in_epoll(loop_thread)
        loop.call_soon_threadsafe(loop.stop)

    # Started from inside the loop, so that the loop is running (and soon idle) when it calls.
    loop.call_soon(lambda: threads.append(start_thread(from_thread, threading.get_native_id())))
    with watchdog():
        loop.run_forever()
    threads[0].join(timeout=30)
    assert not threads[0].is_alive()


def test_wakes_a_loop_sleeping_on_a_long_timer(new_loop):
    loop = new_loop()
    calls = []
    threads = []

    def from_thread(loop_thread):
        wait_until_asleep_in_epoll(loop_thread)
        loop.call_soon_threadsafe(calls.append, "from thread")
        loop.call_soon_threadsafe(loop.stop)

    long_timer = loop.call_later(3600, calls.append, "long timer")
    loop.call_soon(lambda: threads.append(start_thread(from_thread, threading.get_native_id())))
    with watchdog():
        loop.run_forever()
    threads[0].join(timeout=30)
    assert calls == ["from thread"]
    assert not long_timer.cancelled()
    long_timer.cancel()


def test_calls_made_before_the_loop_runs_are_delivered_when_it_does(new_loop):
    loop = new_loop()
    calls = []
    thread = start_thread(lambda: [loop.call_soon_threadsafe(calls.append, i) for i in range(3)])
    thread.join(timeout=30)
    loop.call_soon(loop.stop)  # queued after the thread's three
    loop.run_forever()
    assert calls == [0, 1, 2]


def test_many_threads_at_once_deliver_every_call_exactly_once_in_order(new_loop):
    loop = new_loop()
    received = []
    barrier = threading.Barrier(THREADS)
    threads = []
    total = THREADS * CALLS_PER_THREAD

    def record(sender, n):
        received.append((sender, n))
        if len(received) == total:
            loop.stop()

    def sender(name):
        barrier.wait(timeout=30)
        call = loop.call_soon_threadsafe
        for n in range(CALLS_PER_THREAD):
            call(record, name, n)

    def start_senders():
        threads.extend(start_thread(sender, name) for name in range(THREADS))

    loop.call_soon(start_senders)
    with watchdog(60):
        loop.run_forever()
    for thread in threads:
        thread.join(timeout=30)
    assert len(received) == total
    by_sender = {name: [] for name in range(THREADS)}
    for name, n in received:
        by_sender[name].append(n)
    for name in range(THREADS):
        assert by_sender[name] == list(range(CALLS_PER_THREAD)), f"thread {name}"


def test_ping_pong_between_a_thread_and_the_loop(new_loop):
    loop = new_loop()
    rounds = 1000
    to_loop_log = []
    to_thread = queue.SimpleQueue()
    outcome = []

    def on_ping(n):
        to_loop_log.append(n)
        to_thread.put(n + 1)

    def player():
        n = 0
        try:
            for _ in range(rounds):
                loop.call_soon_threadsafe(on_ping, n)
                n = to_thread.get(timeout=30)
            outcome.append(n)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(start_thread, player)
    with watchdog(60):
        loop.run_forever()
    assert outcome == [rounds]
    assert to_loop_log == list(range(rounds))


async def test_thread_resolves_futures_of_a_running_coroutine():
    loop = asyncio.get_running_loop()
    requests = queue.SimpleQueue()

    def worker():
        while (request := requests.get(timeout=30)) is not None:
            future, n = request
            loop.call_soon_threadsafe(future.set_result, n * 2)

    thread = start_thread(worker)
    try:
        for n in range(200):
            future = loop.create_future()
            requests.put((future, n))
            assert await wait(future) == n * 2
    finally:
        requests.put(None)
        thread.join(timeout=30)


# -- contexts ---------------------------------------------------------------------------------


def test_context_argument_from_a_thread(new_loop):
    loop = new_loop()
    seen = []
    context = context_where_var_is("explicit")

    def from_thread():
        var.set("thread's own")
        loop.call_soon_threadsafe(record_var, seen, "explicit", context=context)
        loop.call_soon_threadsafe(record_var, seen, "default")
        var.set("changed after the call")
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(start_thread, from_thread)
    with watchdog():
        loop.run_forever()
    # context= is used as is; the default is a copy of the *calling thread's* context.
    assert seen == [("explicit", "explicit"), ("default", "thread's own")]
    assert context[var] == "set by explicit"
    assert var.get() == "unset"


# -- debug mode: the thread check ---------------------------------------------------------------

NOT_THREADSAFE = {
    "call_soon": lambda loop: loop.call_soon(noop),
    "call_later": lambda loop: loop.call_later(60, noop),
    "call_at": lambda loop: loop.call_at(loop.time() + 60, noop),
}


def call_from_another_thread(function):
    """Run function() in a new thread and wait; return what it raised, or None."""
    raised = []

    def run():
        try:
            function()
        except BaseException as exc:
            raised.append(exc)
        else:
            raised.append(None)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    return raised[0]


@pytest.mark.parametrize("method", NOT_THREADSAFE)
def test_debug_mode_refuses_non_threadsafe_calls_from_another_thread(new_loop, method):
    loop = new_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 60  # joining a thread inside a callback is not the point here
    outcome = []

    def in_the_loop():
        outcome.append(call_from_another_thread(lambda: NOT_THREADSAFE[method](loop)))
        loop.stop()

    loop.call_soon(in_the_loop)
    loop.run_forever()
    [exc] = outcome
    assert isinstance(exc, RuntimeError)
    assert "Non-thread-safe operation" in str(exc)


def test_debug_mode_allows_call_soon_threadsafe_from_another_thread(new_loop):
    loop = new_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 60
    calls = []
    outcome = []

    def in_the_loop():
        outcome.append(
            call_from_another_thread(lambda: loop.call_soon_threadsafe(calls.append, "ok"))
        )
        loop.call_soon(loop.stop)

    loop.call_soon(in_the_loop)
    loop.run_forever()
    assert outcome == [None]
    assert calls == ["ok"]


@pytest.mark.parametrize("method", NOT_THREADSAFE)
def test_debug_mode_thread_check_applies_only_while_the_loop_runs(new_loop, method):
    loop = new_loop()
    loop.set_debug(True)
    assert call_from_another_thread(lambda: NOT_THREADSAFE[method](loop)) is None
