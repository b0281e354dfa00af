"""The subprocess transport: child processes watched through a pidfd in the loop's epoll.

asyncio learns that a child exited from SIGCHLD or from a watcher thread per child. Here the
child is watched like any other fd: ``pidfd_open(2)`` gives a descriptor that becomes readable
when the process terminates, the reactor reports it, and ``waitpid`` then reaps the child at
once, so no zombie is left and nothing else in the process (a SIGCHLD handler, another
thread) is involved. Signals go through ``pidfd_send_signal(2)``, which cannot hit a
stranger that inherited a recycled pid.

The child is started by ``subprocess.Popen`` (which does the fork/exec, the fd plumbing and
reports exec failures as exceptions); its pipes become pipe transports (pipes.py) whose events
reach the protocol as ``pipe_data_received`` / ``pipe_connection_lost``. As in asyncio, every
protocol call is scheduled with call_soon, so a failing protocol method is reported to the
exception handler and the pipes carry on; ``connection_lost`` comes once the child has exited
*and* every pipe has closed, and that is also when ``_wait()`` (Process.wait) returns.

Closing the transport closes its pipes and kills a child that is still running; the child
stays watched until it is reaped. If the loop is already closed by then, the transport kills
and reaps the child itself, synchronously.
"""

from __future__ import annotations

import os
import signal
import subprocess
import warnings
from asyncio import Protocol, SubprocessTransport, futures
from asyncio.log import logger
from typing import Any

from .. import _linux
from .pipes import ReadPipeTransport, WritePipeTransport

# What asyncio reports when a child was reaped behind the loop's back (exit status unknown).
_UNKNOWN_RETURNCODE = 255


class PipeToProcess(Protocol):
    """The protocol of one of the child's pipes: forwards its events to the process's."""

    def __init__(self, process: ProcessTransport, fd: int) -> None:
        self.process: ProcessTransport | None = process
        self.fd = fd
        self.pipe: Any = None
        self.disconnected = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport: Any) -> None:
        self.pipe = transport

    def data_received(self, data: bytes) -> None:
        process = self.process
        process._loop.call_soon(process._protocol.pipe_data_received, self.fd, data)  # type: ignore[union-attr]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disconnected = True
        self.process._pipe_connection_lost(self.fd, exc)  # type: ignore[union-attr]
        self.process = None

    def pause_writing(self) -> None:
        self.process._protocol.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.process._protocol.resume_writing()  # type: ignore[union-attr]


class ProcessTransport(SubprocessTransport):
    """A child process, its pipes, and its exit seen through a pidfd."""

    _closed = True  # until the child runs; read by __del__ even if __init__ failed

    def __init__(
        self,
        loop: Any,
        protocol: Any,
        waiter: Any,
        extra: dict[str, Any] | None = None,
        **popen_kwargs: Any,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._protocol = protocol
        self._returncode: int | None = None
        self._exit_waiters: list[Any] = []
        self._pipes: dict[int, PipeToProcess] = {}
        self._finished = False
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            universal_newlines=False, **popen_kwargs
        )
        self._closed = False
        self._dying = False  # close() killed it
        self._parent = os.getpid()  # a forked copy of this process must leave the child be
        self._pid = self._proc.pid
        self._extra["subprocess"] = self._proc
        try:
            # The child cannot be reaped before we watch it (we are its parent and have not
            # waited), so its pid still names it here.
            self._pidfd = _linux.pidfd_open(self._pid)
        except BaseException:
            self._closed = True
            self._proc.kill()  # the pid is still ours to signal and to reap
            self._proc.wait()
            raise
        loop._add_reader(self._pidfd, self._child_exited)
        loop._processes.add(self)
        if loop.get_debug():
            args = popen_kwargs["args"]
            program = args if isinstance(args, (bytes, str)) else args[0]
            logger.debug("process %r created: pid %s", program, self._pid)
        self._connect_pipes(waiter)

    def _connect_pipes(self, waiter: Any) -> None:
        # Each pipe transport schedules its connection_made and first read now; the process
        # protocol's connection_made is scheduled after them, and nothing can be read before
        # the next loop iteration, so the protocol hears of no pipe event before it.
        proc = self._proc
        assert proc is not None
        for fd, pipe, transport_type in (
            (0, proc.stdin, WritePipeTransport),
            (1, proc.stdout, ReadPipeTransport),
            (2, proc.stderr, ReadPipeTransport),
        ):
            if pipe is not None:
                pipe_protocol = PipeToProcess(self, fd)
                self._pipes[fd] = pipe_protocol
                transport_type(self._loop, pipe, pipe_protocol)
        self._loop.call_soon(self._protocol.connection_made, self)
        self._loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        info = [type(self).__name__]
        if self._closed:
            info.append("closed")
        if self._returncode is not None:
            info.append(f"pid={self._pid} returncode={self._returncode}")
        elif self._proc is not None:
            info.append(f"pid={self._pid} running")
        for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
            pipe = self._pipes.get(fd)
            if pipe is not None:
                info.append(f"{name}={pipe.pipe!r}")
        return f"<{' '.join(info)}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self.close()

    # -- the child ----------------------------------------------------------------------------

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        pipe = self._pipes.get(fd)
        return None if pipe is None else pipe.pipe

    def send_signal(self, signal: int) -> None:
        if self._proc is None:
            raise ProcessLookupError()
        if self._returncode is not None:
            return  # reaped already: nothing left to signal
        try:
            _linux.pidfd_send_signal(self._pidfd, signal)
        except ProcessLookupError:
            pass  # exited, not yet reaped: the pidfd will tell us

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _child_exited(self) -> None:
        self._process_exited(self._reap())

    def _loop_closing(self) -> None:
        """The loop closes and will not watch the pidfd again: a child that close() killed is
        reaped now (it dies at once); one still running is left to its transport."""
        if self._dying and self._returncode is None:
            self._returncode = self._reap()

    def _reap(self) -> int:
        """Collect the child's exit status, waiting for it if it is still dying, and release
        the pidfd. By pidfd, not by pid: a recycled pid cannot mislead us."""
        proc = self._proc
        assert proc is not None
        loop = self._loop
        loop._remove_reader(self._pidfd)  # no-op once the loop is closed
        loop._processes.discard(self)
        try:
            status = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
        except ChildProcessError:
            # Reaped behind our back (Popen.poll() on get_extra_info('subprocess'), or
            # SIGCHLD set to SIG_IGN): only Popen may know the status.
            if proc.returncode is None:
                logger.warning(
                    "Unknown child process pid %d, will report returncode %d",
                    self._pid,
                    _UNKNOWN_RETURNCODE,
                )
                proc.returncode = _UNKNOWN_RETURNCODE
        else:
            assert status is not None  # waitid returns None only with WNOHANG
            exited = status.si_code == os.CLD_EXITED
            proc.returncode = status.si_status if exited else -status.si_status
        finally:
            os.close(self._pidfd)
        return proc.returncode  # Popen's too, or it would try to reap the child again

    def _process_exited(self, returncode: int) -> None:
        if self._loop.get_debug():
            logger.info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        self._loop.call_soon(self._protocol.process_exited)
        self._try_finish()

    # -- pipes and the end --------------------------------------------------------------------

    def _pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self._loop.call_soon(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _try_finish(self) -> None:
        if self._returncode is None or self._finished:
            return
        if all(pipe.disconnected for pipe in self._pipes.values()):
            self._finished = True
            self._loop.call_soon(self._call_connection_lost, None)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            for waiter in self._exit_waiters:
                if not waiter.cancelled():
                    waiter.set_result(self._returncode)
            self._exit_waiters = []
            self._loop = None
            self._proc = None
            self._protocol = None

    async def _wait(self) -> int:
        """The child's return code, once it has exited and its pipes have closed (asyncio's
        Process.wait() awaits this)."""
        if self._returncode is not None:
            return self._returncode
        waiter = self._loop.create_future()
        self._exit_waiters.append(waiter)
        return await waiter

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes.values():
            if pipe.pipe is not None:
                pipe.pipe.close()
        if self._returncode is not None or self._proc is None or os.getpid() != self._parent:
            return  # done; or a forked copy of the parent, whose child this is not
        if self._loop.get_debug():
            logger.warning("Close running child process: kill %r", self)
        try:
            _linux.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited already, not yet reaped
        except PermissionError:
            return  # a setuid child is not ours to kill: it is reaped when it exits
        self._dying = True
        if self._loop.is_closed():
            # Nobody will watch the pidfd any more: reap the killed child now.
            self._returncode = self._reap()
