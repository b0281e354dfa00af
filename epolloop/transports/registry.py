"""The loop's transports by fd (asyncio's ``loop._transports``).

The loop asks it whether an fd belongs to a transport (``add_reader`` and the ``sock_*``
methods refuse such an fd, as asyncio does) and which transports a server accepted
(``Server.close_clients``). It keeps no transport alive, so asyncio's ResourceWarning for an
unclosed transport still comes. A transport registers once, with its own loop, as the last
step of its constructor; it leaves when its fd closes (``FdTransport._close_sock``) or, before
anything that may raise, when it is finalized unclosed (``FdTransport.__del__``). Nothing adds
it again: while loop.sendfile() lends its socket to sock_sendfile it stays registered, and the
loop lets the fd through because the transport's ``_empty_waiter`` is set.

This is the pure core's registry, over a WeakValueDictionary. The C core's
(``_core.TransportRegistry``) is an array indexed by fd that holds borrowed references, which
that rule keeps valid: a weak reference and a dict entry cost every idle connection about 150
bytes.
"""

from __future__ import annotations

import weakref
from typing import Any


class TransportRegistry:
    def __init__(self) -> None:
        self._by_fd: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def add(self, fd: int, transport: Any) -> None:
        self._by_fd[fd] = transport

    def discard(self, fd: int, transport: Any) -> None:
        """Forget *transport*, if it is the one registered under *fd*."""
        if self.get(fd) is transport:
            del self._by_fd[fd]

    def get(self, fd: int) -> Any:
        # Hot path (each sock_* wait): WeakValueDictionary.get raises and catches a KeyError
        # for an fd no transport owns (~0.8 µs); its data dict maps to weak references.
        ref = self._by_fd.data.get(fd)
        return ref() if ref is not None else None

    def transports(self) -> list[Any]:
        return list(self._by_fd.values())
