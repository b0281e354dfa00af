"""epolloop under real servers: uvicorn run with ``--loop epolloop:new_event_loop``, and gunicorn
running aiohttp apps with epolloop's worker class (epolloop.gunicorn.EpolloopWebWorker).

Each test starts the real server command in a child process and talks HTTP to it over a
socket. The app answers with the module of the loop it runs on and its pid, so the test can
tell that epolloop (not asyncio's default loop) served, and which process did. These test
epolloop's integration, not a loop's behaviour, so they run once, not per loop.

The listening socket is bound by the test and handed down (uvicorn ``--fd N``, gunicorn
``--bind fd://N``): no port is picked then bound by someone else, and a connection made before
the server is up waits in the socket's accept queue, so no readiness polling is needed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import GUARD, Child

pytest.importorskip("uvicorn", reason="uvicorn is not installed")
gunicorn_config = pytest.importorskip("gunicorn.config", reason="gunicorn is not installed")
pytest.importorskip("aiohttp", reason="aiohttp is not installed")

_HAS_CONTROL_SOCKET = "control_socket_disable" in gunicorn_config.Config().settings

_ASGI_APP = """\
import asyncio, os

async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = f"{type(asyncio.get_running_loop()).__module__} {os.getpid()}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""

_AIOHTTP_APP = """\
import asyncio, os
from aiohttp import web

async def answer(request):
    return web.Response(text=f"{type(asyncio.get_running_loop()).__module__} {os.getpid()}")

async def make_app():
    app = web.Application()
    app.router.add_get("/", answer)
    return app
"""


def _listener() -> socket.socket:
    """A listening TCP socket on a free loopback port, inheritable so a child can get it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _get(address: tuple[str, int]) -> tuple[str, int]:
    """GET / from the server at *address*: (the module of the loop that served, its pid)."""
    with socket.create_connection(address, timeout=GUARD) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    module, pid = body.decode().split()
    return module, int(pid)


def _parent_of(pid: int) -> int | None:
    """The parent pid of process *pid*, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the comm field may hold spaces: skip it


def _children_of(pid: int) -> set[int]:
    """The pids of the processes whose parent is *pid* (zombies included). /proc/PID/task/*/
    children would say it directly, but only on kernels built with CONFIG_PROC_CHILDREN."""
    return {
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and _parent_of(int(entry)) == pid
    }


# -- uvicorn ----------------------------------------------------------------------------------


def _uvicorn(app_dir: Path, fd: int, loop: str) -> Child:
    (app_dir / "app.py").write_text(_ASGI_APP)
    argv = [sys.executable, "-m", "uvicorn", "app:app", "--loop", loop, "--fd", str(fd)]
    argv += ["--lifespan", "off", "--no-access-log"]
    return Child(argv, cwd=app_dir, pass_fds=[fd])


def test_uvicorn_serves_on_epolloop(tmp_path: Path) -> None:
    # uvicorn's --loop takes "module:callable" beyond its own names, and uses the callable as
    # the loop factory (uvicorn.Config.get_loop_factory, uvicorn >= 0.36).
    with _listener() as listener:
        address = listener.getsockname()
        server = _uvicorn(tmp_path, listener.fileno(), "epolloop:new_event_loop")
    # Only the child holds the listening socket now: should it die, connecting fails at once.
    with server:
        module, pid = _get(address)
        assert (module, pid) == ("epolloop.loop", server.process.pid)
        assert _get(address) == (module, pid)  # and it goes on serving
        # On SIGTERM uvicorn shuts down gracefully, then raises the signal again once its loop
        # is closed (uvicorn >= 0.29), so that the process ends as killed by SIGTERM.
        server.process.send_signal(signal.SIGTERM)
        returncode, _, err = server.finish()
    assert returncode == -signal.SIGTERM, err
    assert "Finished server process" in err
    assert "Traceback" not in err


def test_uvicorn_rejects_a_loop_that_does_not_exist(tmp_path: Path) -> None:
    with _listener() as listener, _uvicorn(tmp_path, listener.fileno(), "epolloop:nope") as server:
        returncode, _, err = server.finish()
    # uvicorn logs the import error and exits with STARTUP_FAILURE (3), before serving.
    assert returncode == 3, err
    assert "Error loading custom loop setup function" in err
    assert "nope" in err


# -- gunicorn ---------------------------------------------------------------------------------


class Gunicorn:
    """A gunicorn master serving the aiohttp app with 2 EpolloopWebWorker processes."""

    def __init__(self, app_dir: Path) -> None:
        (app_dir / "app.py").write_text(_AIOHTTP_APP)
        with _listener() as listener:
            self.address = listener.getsockname()
            fd = listener.fileno()
            argv = [sys.executable, "-m", "gunicorn", "app:make_app", "--bind", f"fd://{fd}"]
            argv += ["-k", "epolloop.gunicorn.EpolloopWebWorker", "-w", "2"]
            if _HAS_CONTROL_SOCKET:  # gunicorn >= 25 makes one in ~/.gunicorn by default
                argv.append("--no-control-socket")
            self.process = subprocess.Popen(
                argv, cwd=app_dir, pass_fds=[fd], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def answers(self) -> Iterator[int]:
        """Make requests one after the other: the pid of the process that answered each (a
        worker of this master, on epolloop). Fails after ~GUARD seconds' worth of requests."""
        for _ in range(10_000):  # ~1 ms each
            module, pid = _get(self.address)
            assert module == "epolloop.loop"
            assert _parent_of(pid) == self.pid  # a worker, forked by the master
            yield pid
        raise AssertionError("the requests did not get the answers awaited")

    def workers(self) -> set[int]:
        """The pids of the 2 workers, once each has answered a request. Which worker accepts
        a connection is up to the kernel: the loop goes on until both have."""
        answered: set[int] = set()
        for pid in self.answers():
            answered.add(pid)
            if len(answered) == 2:
                break
        return answered

    def stop(self) -> tuple[int, str]:
        """SIGTERM to the master (graceful shutdown): (its exit code, its stderr)."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=GUARD)
        return self.process.returncode, err.decode()

    def kill(self) -> None:
        """Kill the master and its workers, whatever state they are in."""
        if self.process.poll() is None:
            for pid in _children_of(self.pid):
                with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
        self.process.communicate()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path)
    try:
        yield server
    finally:
        server.kill()


def test_gunicorn_workers_serve_on_epolloop(gunicorn: Gunicorn) -> None:
    workers = gunicorn.workers()  # each answered with epolloop.loop and its pid
    # The two that answered are the master's children, and it has no others.
    assert _children_of(gunicorn.pid) == workers


def test_gunicorn_replaces_a_crashed_worker(gunicorn: Gunicorn) -> None:
    crashed, survivor = sorted(gunicorn.workers())
    # No request is in flight, and a worker that has been sent SIGKILL can accept nothing more
    # (it dies at its next return from the kernel), so no request below may fail.
    os.kill(crashed, signal.SIGKILL)
    # The survivor answers alone until the master has forked a replacement, then both do.
    for pid in gunicorn.answers():
        assert pid != crashed
        if pid != survivor:
            replacement = pid
            break
    # The master reaped the crashed worker before forking its replacement.
    assert _children_of(gunicorn.pid) == {survivor, replacement}


def test_gunicorn_stops_gracefully_on_sigterm(gunicorn: Gunicorn) -> None:
    workers = gunicorn.workers()
    returncode, err = gunicorn.stop()
    # Each worker's loop ran aiohttp's cleanup and closed; the master waited for them.
    assert returncode == 0, err
    assert "Shutting down: Master" in err
    for pid in workers:
        assert f"Worker exiting (pid: {pid})" in err
        assert not Path(f"/proc/{pid}").exists()  # reaped by the master before it exited
    assert "Traceback" not in err
    assert "[ERROR]" not in err
