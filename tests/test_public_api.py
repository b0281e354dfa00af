"""epolloop's public face: run, new_event_loop, Loop, the policy, install(), core, __version__,
and asyncio's runners on epolloop. These concern epolloop's own names, so most tests here run
once, not once per loop."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import warnings

import pytest
from _helpers import PURE_CORE_ENV, env_for

import epolloop
import epolloop.loop


async def _loop_info(value="result"):
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    return value, type(loop), loop.get_debug()


@pytest.fixture
def restore_policy():
    previous = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(previous)


def test_module_attributes():
    assert epolloop.core in ("c", "python")
    assert isinstance(epolloop.__version__, str)
    assert epolloop.__version__
    assert issubclass(epolloop.Loop, asyncio.AbstractEventLoop)
    for name in epolloop.__all__:
        assert hasattr(epolloop, name), name


def test_new_event_loop():
    loop = epolloop.new_event_loop()
    try:
        assert isinstance(loop, epolloop.Loop)
        assert not loop.is_running()
        assert not loop.is_closed()
        assert loop.run_until_complete(_loop_info("direct"))[:2] == ("direct", epolloop.Loop)
    finally:
        loop.close()
    other = epolloop.new_event_loop()
    assert other is not loop
    other.close()


def test_run_returns_the_value_on_epolloop():
    value, loop_type, _ = epolloop.run(_loop_info(42))
    assert value == 42
    assert issubclass(loop_type, epolloop.Loop)


@pytest.mark.parametrize("debug", [True, False])
def test_run_passes_debug(debug):
    _, _, loop_debug = epolloop.run(_loop_info(), debug=debug)
    assert loop_debug is debug


def test_run_propagates_exception():
    async def fail():
        await asyncio.sleep(0)
        raise ValueError("from main")

    with pytest.raises(ValueError, match="from main"):
        epolloop.run(fail())


def test_run_refuses_unknown_keywords():
    coro = _loop_info()
    try:
        with pytest.raises(TypeError):
            epolloop.run(coro, no_such_option=True)
    finally:
        coro.close()


def test_run_closes_its_loop():
    async def main():
        return asyncio.get_running_loop()

    loop = epolloop.run(main())
    assert isinstance(loop, epolloop.Loop)
    assert loop.is_closed()


def test_run_inside_running_loop_is_refused():
    """Like asyncio.run: refused at once, nothing half-started (no coroutine left
    un-awaited, no loop left open)."""

    async def outer():
        coro = _loop_info()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with pytest.raises(
                    RuntimeError, match="cannot be called from a running event loop"
                ):
                    epolloop.run(coro)
            finally:
                coro.close()
            gc.collect()
        return [str(w.message) for w in caught]

    assert epolloop.run(outer()) == []


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory():
    value, loop_type, _ = asyncio.run(_loop_info("factory"), loop_factory=epolloop.new_event_loop)
    assert value == "factory"
    assert issubclass(loop_type, epolloop.Loop)


def test_asyncio_runner_with_loop_factory():
    with asyncio.Runner(loop_factory=epolloop.new_event_loop, debug=True) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, epolloop.Loop)
        assert runner.run(_loop_info(1)) == (1, epolloop.Loop, True)
        assert runner.run(_loop_info(2)) == (2, epolloop.Loop, True)
        assert runner.get_loop() is loop
    assert loop.is_closed()


def test_event_loop_policy(restore_policy):
    asyncio.set_event_loop_policy(epolloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, epolloop.Loop)
    finally:
        loop.close()


def test_install(restore_policy):
    epolloop.install()
    assert isinstance(asyncio.get_event_loop_policy(), epolloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, epolloop.Loop)
    finally:
        loop.close()
    value, loop_type, _ = asyncio.run(_loop_info("installed"))
    assert value == "installed"
    assert issubclass(loop_type, epolloop.Loop)


def test_policy_restored_after_install(restore_policy):
    # Guards the fixture the two tests above rely on.
    previous = asyncio.get_event_loop_policy()
    epolloop.install()
    asyncio.set_event_loop_policy(previous)
    assert asyncio.get_event_loop_policy() is previous
    assert not isinstance(previous, epolloop.EventLoopPolicy)


# -- Ctrl-C under asyncio.Runner ---------------------------------------------------------------

_RUNNERS = {
    # Stock asyncio is the reference for how asyncio.Runner handles SIGINT.
    "asyncio": "asyncio.run",
    "epolloop": "epolloop.run",
}
if epolloop.core == "c":
    _RUNNERS["epolloop-pure"] = "epolloop.run"  # in a child with EPOLLOOP_NO_EXTENSIONS=1

_WAIT_FOREVER = """
async def main():
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()
"""

_CATCH_CANCELLED = """
async def main():
    print("ready", flush=True)
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:
        return "cleaned up"
"""


def _run_and_interrupt(runner: str, main: str) -> subprocess.CompletedProcess[str]:
    code = f"import asyncio, epolloop\n{main}\nprint({_RUNNERS[runner]}(main()), flush=True)\n"
    with subprocess.Popen(
        [sys.executable, "-c", code],
        env=env_for(runner),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        safety_net = threading.Timer(60, proc.kill)
        safety_net.start()
        try:
            ready = proc.stdout.readline()
            assert ready == "ready\n", proc.stderr.read()
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate()
        finally:
            safety_net.cancel()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("runner", list(_RUNNERS))
def test_ctrl_c_interrupts_main(runner):
    result = _run_and_interrupt(runner, _WAIT_FOREVER)
    assert result.returncode not in (0, -signal.SIGKILL)
    assert "KeyboardInterrupt" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("runner", list(_RUNNERS))
def test_ctrl_c_cancels_main_which_may_return(runner):
    result = _run_and_interrupt(runner, _CATCH_CANCELLED)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cleaned up\n"
    assert "KeyboardInterrupt" not in result.stderr


# -- the cores --------------------------------------------------------------------------------

_SAY_CORE = """
import importlib.machinery
import epolloop, epolloop.loop

try:
    from epolloop import _core
except ImportError:
    built = False
else:
    # The extension module, not a directory of its sources found as a namespace package.
    origin = getattr(_core.__spec__, "origin", None) or ""
    built = origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
loop = epolloop.new_event_loop()
classes = {epolloop.loop.PythonLoop: "PythonLoop", getattr(epolloop.loop, "CLoop", None): "CLoop"}
print(epolloop.core, classes.get(type(loop)), classes.get(epolloop.Loop), built)
loop.close()
"""


def _core_in_child(**env: str) -> list[str]:
    """What a child process's epolloop says: its core, the class of new_event_loop()'s loop
    and of epolloop.Loop, and whether the C extension module imports there."""
    child_env = {k: v for k, v in os.environ.items() if k != "EPOLLOOP_NO_EXTENSIONS"}
    result = subprocess.run(
        [sys.executable, "-c", _SAY_CORE],
        env={**child_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_no_extensions_forces_the_pure_core():
    core, loop_class, loop_alias, _ = _core_in_child(**PURE_CORE_ENV)
    assert (core, loop_class, loop_alias) == ("python", "PythonLoop", "PythonLoop")


def test_the_c_core_is_live_where_the_extension_imports():
    core, loop_class, loop_alias, built = _core_in_child()
    if built == "True":
        assert (core, loop_class, loop_alias) == ("c", "CLoop", "CLoop")
    else:
        assert (core, loop_class, loop_alias) == ("python", "PythonLoop", "PythonLoop")


def test_core_names_the_live_loop_class():
    # This process's epolloop (EPOLLOOP_NO_EXTENSIONS is as the run was started).
    assert epolloop.core in ("c", "python")
    expected = epolloop.loop.PythonLoop if epolloop.core == "python" else epolloop.loop.CLoop
    assert epolloop.Loop is expected
    loop = epolloop.new_event_loop()
    try:
        assert type(loop) is expected
    finally:
        loop.close()
