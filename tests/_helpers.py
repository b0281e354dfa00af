"""Small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
from collections.abc import Iterator
from typing import Any

GUARD = 30.0  # seconds: a failure guard, never a synchronisation


def noop(*args: Any) -> None:
    pass


async def wait(awaitable: Any) -> Any:
    """Await *awaitable*; a result that never comes fails the test after GUARD seconds."""
    return await asyncio.wait_for(awaitable, GUARD)


async def spin(steps: int = 5) -> None:
    """Let the loop run a few full iterations (each sleep(0) is one step)."""
    for _ in range(steps):
        await asyncio.sleep(0)


def socketpair_at(fd: int) -> tuple[socket.socket, socket.socket]:
    """A connected socketpair whose first socket has the fd number *fd* (which is free)."""
    first, second = socket.socketpair()
    if first.fileno() != fd:
        os.dup2(first.fileno(), fd, inheritable=False)
        first.close()
        first = socket.socket(fileno=fd)
    first.setblocking(False)
    second.setblocking(False)
    return first, second


# -- contexts ---------------------------------------------------------------------------------

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def context_where_var_is(value: str) -> contextvars.Context:
    """A copy of the current context in which ``var`` is *value*."""
    context = contextvars.copy_context()
    context.run(var.set, value)
    return context


def record_var(seen: list[tuple[str, str]], name: str) -> None:
    """A callback: appends (name, the value of ``var`` it sees), then sets ``var`` in its own
    context, so that the caller can tell which context it ran in."""
    seen.append((name, var.get()))
    var.set(f"set by {name}")


@contextlib.contextmanager
def var_set_to(value: str) -> Iterator[None]:
    """Set ``var`` in the current context for the block; restored afterwards."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)
