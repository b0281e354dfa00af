"""Server: the listening sockets of create_server / create_unix_server, as asyncio's Server.

The server knows its listening sockets and how many of the transports it accepted (its
"clients") are not gone yet; close_clients() finds them in the loop's registry of transports.
(asyncio keeps them in a WeakSet, which costs every idle connection about 145 bytes.) Accepting
itself is the loop's job (net.py): a reader on each listening socket accepts in a batch, up to
the backlog, per wake-up.

``wait_closed()`` follows the running Python's asyncio, because shutdown code is written for
it: from 3.12.1 it returns once the server is closed *and* every client is gone; before, a
closed server returns at once (waiting there would hang programs that never close their
clients, as 3.11 never required).
"""

from __future__ import annotations

import socket
import sys
from asyncio import AbstractServer, CancelledError, Future, tasks, trsock
from collections.abc import Callable
from typing import Any

from . import _linux

_WAIT_CLOSED_WAITS_FOR_CLIENTS = sys.version_info >= (3, 12, 1)


class Server(AbstractServer):
    def __init__(
        self,
        loop: Any,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], Any],
        ssl_context: Any,
        backlog: int,
        ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None = None,
        unix_paths: dict[socket.socket, tuple[str, int]] | None = None,
    ) -> None:
        self._loop = loop
        self._sockets: list[socket.socket] | None = sockets
        # Accepted transports not gone yet: one detaches at connection_lost, or when it is
        # collected unclosed.
        self._client_count = 0
        self._waiters: list[Future[None]] | None = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        # Unix socket files to unlink on close: socket -> (path, inode when we bound it).
        self._unix_paths = unix_paths or {}
        self._serving = False
        self._serving_forever_fut: Future[None] | None = None
        # Out of descriptors: listening sockets not watched for now -> their retry timer.
        self._paused: dict[socket.socket, Any] = {}
        self._starved = False  # reported out of descriptors; not caught up with its queue since

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    # -- clients (called by the transports) ---------------------------------------------------

    def _attach(self, transport: Any) -> None:
        self._client_count += 1

    def _detach(self, transport: Any) -> None:
        self._client_count -= 1
        if self._paused and not self._loop.is_closed():
            for sock in list(self._paused):  # a descriptor came free: accept again
                self._loop._resume_accepting(self, sock)
        if not self._client_count and self._sockets is None:
            self._wake_up_waiters()

    def _clients(self) -> list[Any]:
        return [
            transport
            for transport in self._loop._transports.transports()
            if transport._server is self
        ]

    def _wake_up_waiters(self) -> None:
        waiters = self._waiters
        if waiters is None:
            return
        self._waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- the AbstractServer API ---------------------------------------------------------------

    def get_loop(self) -> Any:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[trsock.TransportSocket, ...]:
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(sock) for sock in self._sockets)

    def _start_serving(self) -> None:
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets or ():
            sock.listen(self._backlog)
            self._loop._start_serving(self, sock)

    async def start_serving(self) -> None:
        self._start_serving()
        # One step, so that the listening sockets' readers are in place when this returns.
        await tasks.sleep(0)

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    def close(self) -> None:
        """Stop listening (existing connections stay open; see close_clients)."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for retry in self._paused.values():
            retry.cancel()
        self._paused.clear()
        for sock in sockets:
            self._loop._stop_serving(sock)
            self._unlink_unix_path(sock)
            sock.close()
        self._serving = False
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if not self._client_count:
            self._wake_up_waiters()

    def _unlink_unix_path(self, sock: socket.socket) -> None:
        # Only the file we bound: if another process replaced it since, it is not ours.
        entry = self._unix_paths.pop(sock, None)
        if entry is None:
            return
        path, inode = entry
        try:
            if _linux.stat(path).st_ino == inode:
                _linux.remove(path)
        except FileNotFoundError:
            pass

    def close_clients(self) -> None:
        for transport in self._clients():
            transport.close()

    def abort_clients(self) -> None:
        for transport in self._clients():
            transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and all its connections are gone (3.12.1+; see the
        module docstring for earlier versions)."""
        if self._waiters is None or (self._sockets is None and not _WAIT_CLOSED_WAITS_FOR_CLIENTS):
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter
