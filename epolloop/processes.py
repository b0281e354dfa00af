"""Pipes and child processes: connect_read_pipe / connect_write_pipe and subprocess_exec /
subprocess_shell, with asyncio's arguments, checks and errors (the transports are in
transports/pipes.py and transports/subprocess.py)."""

from __future__ import annotations

import subprocess
from asyncio import BaseProtocol, SubprocessProtocol
from asyncio.log import logger
from collections.abc import Callable
from typing import Any, TypeVar

from .transports.base import connected
from .transports.pipes import ReadPipeTransport, WritePipeTransport
from .transports.subprocess import ProcessTransport

_P = TypeVar("_P", bound=BaseProtocol)


def _refuse_text_mode(
    universal_newlines: bool, bufsize: int, text: Any, encoding: Any, errors: Any
) -> None:
    # A subprocess transport moves bytes; Popen's text-mode options would change that.
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class Processes:
    """Mixin for Loop: needs ``_processes`` (a WeakSet of the subprocess transports whose
    child is watched)."""

    _processes: Any
    _debug: bool
    create_future: Callable[[], Any]

    async def connect_read_pipe(
        self, protocol_factory: Callable[[], _P], pipe: Any
    ) -> tuple[ReadPipeTransport, _P]:
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = ReadPipeTransport(self, pipe, protocol, waiter)
        await connected(transport, waiter)
        if self._debug:
            logger.debug("Read pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol)
        return transport, protocol

    async def connect_write_pipe(
        self, protocol_factory: Callable[[], _P], pipe: Any
    ) -> tuple[WritePipeTransport, _P]:
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = WritePipeTransport(self, pipe, protocol, waiter)
        await connected(transport, waiter)
        if self._debug:
            logger.debug("Write pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol)
        return transport, protocol

    async def subprocess_shell(
        self,
        protocol_factory: Callable[[], SubprocessProtocol],
        cmd: bytes | str,
        *,
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        universal_newlines: bool = False,
        shell: bool = True,
        bufsize: int = 0,
        encoding: Any = None,
        errors: Any = None,
        text: Any = None,
        **kwargs: Any,
    ) -> tuple[ProcessTransport, SubprocessProtocol]:
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if not shell:
            raise ValueError("shell must be True")
        _refuse_text_mode(universal_newlines, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        # Not the command itself: it may hold secrets, and be long.
        description = f"run shell command {cmd!r}" if self._debug else ""
        popen_kwargs = dict(kwargs, args=cmd, shell=True, bufsize=bufsize)
        transport = await self._start_process(
            description, protocol, stdin, stdout, stderr, popen_kwargs
        )
        return transport, protocol

    async def subprocess_exec(
        self,
        protocol_factory: Callable[[], SubprocessProtocol],
        program: Any,
        *args: Any,
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        universal_newlines: bool = False,
        shell: bool = False,
        bufsize: int = 0,
        encoding: Any = None,
        errors: Any = None,
        text: Any = None,
        **kwargs: Any,
    ) -> tuple[ProcessTransport, SubprocessProtocol]:
        if shell:
            raise ValueError("shell must be False")
        _refuse_text_mode(universal_newlines, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        description = f"execute program {program!r}" if self._debug else ""
        popen_kwargs = dict(kwargs, args=(program, *args), shell=False, bufsize=bufsize)
        transport = await self._start_process(
            description, protocol, stdin, stdout, stderr, popen_kwargs
        )
        return transport, protocol

    async def _start_process(
        self,
        description: str,
        protocol: Any,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        popen_kwargs: dict[str, Any],
    ) -> ProcessTransport:
        """Start the child (``popen_kwargs``: subprocess.Popen's, but the standard streams)
        and wait until its protocol has been told of it."""
        if description:
            logger.debug(
                "%s stdin=%s stdout=%s stderr=%s",
                description,
                _pipe_name(stdin),
                _pipe_name(stdout),
                _pipe_name(stderr),
            )
        waiter = self.create_future()
        transport = ProcessTransport(
            self, protocol, waiter, stdin=stdin, stdout=stdout, stderr=stderr, **popen_kwargs
        )
        try:
            await waiter
        except BaseException:
            # Given up before the protocol heard of it: kill the child and reap it first.
            transport.close()
            await transport._wait()
            raise
        if description:
            logger.info("%s: %r", description, transport)
        return transport

    def _close_processes(self) -> None:
        """The loop closes: children killed by their transport's close() are reaped now."""
        for process in list(self._processes):
            process._loop_closing()


def _pipe_name(fd: Any) -> str:
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)
