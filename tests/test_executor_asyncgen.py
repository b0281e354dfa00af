"""Executors (run_in_executor, the default executor and its shutdown) and asynchronous
generators (the hooks, finalization, shutdown_asyncgens)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
import warnings

import pytest
from _helpers import EPOLLOOP_NAMES

# -- executors --------------------------------------------------------------------------------


def _thread_info(value):
    return value, threading.get_ident(), threading.current_thread().name


async def test_run_in_executor_default():
    loop = asyncio.get_running_loop()
    value, ident, _ = await loop.run_in_executor(None, _thread_info, "value")
    assert value == "value"
    assert ident != threading.get_ident()


async def test_run_in_executor_custom():
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-pool") as pool:
        value, ident, name = await loop.run_in_executor(pool, _thread_info, 7)
    assert value == 7
    assert ident != threading.get_ident()
    assert name.startswith("custom-pool")


async def test_run_in_executor_propagates_exception():
    loop = asyncio.get_running_loop()

    def fail():
        raise KeyError("in the executor")

    with pytest.raises(KeyError, match="in the executor"):
        await loop.run_in_executor(None, fail)


async def test_set_default_executor():
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="my-default")
    loop.set_default_executor(pool)
    try:
        _, _, name = await loop.run_in_executor(None, _thread_info, None)
        assert name.startswith("my-default")
    finally:
        await loop.shutdown_default_executor()
    # The loop shut our executor down.
    with pytest.raises(RuntimeError):
        pool.submit(_thread_info, None)


def test_set_default_executor_requires_thread_pool(new_loop, loop_name):
    if loop_name == "uvloop":
        pytest.xfail("uvloop: set_default_executor() accepts any object")
    loop = new_loop()

    class NotAThreadPool(concurrent.futures.Executor):
        pass

    with pytest.raises(TypeError):
        loop.set_default_executor(NotAThreadPool())


async def test_shutdown_default_executor_joins_threads():
    loop = asyncio.get_running_loop()
    _, _, name = await loop.run_in_executor(None, _thread_info, None)
    worker = next(thread for thread in threading.enumerate() if thread.name == name)
    await loop.shutdown_default_executor()
    assert not worker.is_alive()

    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, _thread_info, None)
    # Only the default executor is refused.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        value, _, _ = await loop.run_in_executor(pool, _thread_info, "custom")
    assert value == "custom"


async def test_shutdown_unused_default_executor():
    loop = asyncio.get_running_loop()
    await loop.shutdown_default_executor()
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, _thread_info, None)


async def test_shutdown_default_executor_with_timeout_that_suffices(loop_name):
    if sys.version_info < (3, 12) and loop_name not in EPOLLOOP_NAMES:
        pytest.skip("asyncio's shutdown_default_executor() takes a timeout from 3.12")
    loop = asyncio.get_running_loop()
    _, _, name = await loop.run_in_executor(None, _thread_info, None)
    worker = next(thread for thread in threading.enumerate() if thread.name == name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        await loop.shutdown_default_executor(60)
    assert not worker.is_alive()
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, _thread_info, None)


async def test_shutdown_default_executor_timeout_warns(loop_name):
    if sys.version_info < (3, 12) and loop_name not in EPOLLOOP_NAMES:
        pytest.skip("asyncio's shutdown_default_executor() takes a timeout from 3.12")
    if sys.version_info < (3, 12, 3) and loop_name not in EPOLLOOP_NAMES:
        pytest.skip(
            "asyncio before 3.12.3 awaits the joining thread before applying the timeout "
            "(gh-111358)"
        )
    if loop_name == "uvloop":
        pytest.xfail(
            "uvloop: shutdown_default_executor() awaits the join before applying the "
            "timeout, so a blocked job blocks it indefinitely"
        )
    loop = asyncio.get_running_loop()
    started = loop.create_future()
    release = threading.Event()

    def blocker():
        loop.call_soon_threadsafe(started.set_result, None)
        return release.wait(60)

    job = loop.run_in_executor(None, blocker)
    await started
    threads_before = set(threading.enumerate())
    try:
        with pytest.warns(RuntimeWarning, match="did not finishing joining its threads within"):
            await loop.shutdown_default_executor(timeout=0.01)
    finally:
        release.set()
    assert await job is True
    # The thread that joins the executor outlives the call: wait for it before the loop
    # closes, so that it never sees a closed loop.
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(60)
        assert not thread.is_alive()


# -- asynchronous generators ------------------------------------------------------------------


def test_asyncgen_hooks_installed_while_running(new_loop):
    loop = new_loop()
    before = sys.get_asyncgen_hooks()

    async def main():
        return sys.get_asyncgen_hooks()

    hooks = loop.run_until_complete(main())
    assert hooks.firstiter is not None
    assert hooks.finalizer is not None
    assert hooks != before
    assert sys.get_asyncgen_hooks() == before


async def test_abandoned_asyncgen_is_finalized_by_the_loop():
    loop = asyncio.get_running_loop()
    finalized = loop.create_future()

    async def gen():
        try:
            yield 1
            yield 2
        finally:
            # Finalization runs on the loop, so it may await.
            await asyncio.sleep(0)
            finalized.set_result(asyncio.get_running_loop())

    agen = gen()
    assert await agen.__anext__() == 1
    del agen
    gc.collect()
    assert await asyncio.wait_for(finalized, 60) is loop


def test_shutdown_asyncgens_closes_live_generators(new_loop):
    loop = new_loop()
    log = []

    async def gen(name):
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            log.append(name)

    async def start(name):
        agen = gen(name)
        await agen.__anext__()
        return agen

    first = loop.run_until_complete(start("first"))
    second = loop.run_until_complete(start("second"))
    assert log == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sorted(log) == ["first", "second"]
    assert first.ag_frame is None
    assert second.ag_frame is None


def test_asyncgen_started_after_shutdown_warns(new_loop):
    loop = new_loop()

    async def gen():
        yield 1

    async def late():
        agen = gen()
        with pytest.warns(ResourceWarning, match=r"scheduled after loop\.shutdown_asyncgens"):
            await agen.__anext__()
        await agen.aclose()

    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(late())


def test_shutdown_asyncgens_error_goes_to_handler(new_loop):
    loop = new_loop()
    contexts = []
    loop.set_exception_handler(lambda loop_, context: contexts.append(context))

    async def gen():
        try:
            yield 1
        finally:
            raise ValueError("cannot close")

    async def start():
        agen = gen()
        await agen.__anext__()
        return agen

    agen = loop.run_until_complete(start())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    assert contexts[0]["asyncgen"] is agen
    assert isinstance(contexts[0]["exception"], ValueError)
    assert "an error occurred during closing of asynchronous generator" in contexts[0]["message"]


def test_shutdown_asyncgens_without_generators(new_loop):
    loop = new_loop()
    assert loop.run_until_complete(loop.shutdown_asyncgens()) is None
