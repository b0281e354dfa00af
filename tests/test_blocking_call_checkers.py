"""The loop under a checker for blocking calls in the event loop: blockbuster, which aiohttp's
own test suite runs under, and which applications use the same way.

blockbuster replaces ``os.sendfile``, ``os.stat``, ``os.remove`` and the like with functions
that raise ``BlockingError`` when called from a running loop's thread with a scanned module on
the stack. It exempts asyncio's own calls of them by file name: the zero-copy sendfile on a
non-blocking socket, a Unix server's stale-socket check and the clean-up of its path. A loop's
equivalents must not be reported either, or every application checked this way fails on it.
Here the scanned module is this one: what the tests call is checked.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import blockbuster
import pytest
from _helpers import wait

MiB = 1024 * 1024


def xfail_uvloop_sendfile(loop_name: str, how: str) -> None:
    if loop_name == "uvloop" and how == "loop.sendfile":
        pytest.xfail("uvloop: loop.sendfile() is not implemented (raises NotImplementedError)")
    if loop_name == "uvloop" and how == "loop.sock_sendfile":
        pytest.xfail("uvloop: loop.sock_sendfile() is not implemented")


@pytest.mark.parametrize("how", ["loop.sendfile", "loop.sock_sendfile"])
async def test_sendfile_is_not_reported(loop_name: str, tmp_path: Path, how: str) -> None:
    """A file sent with os.sendfile from the loop arrives whole, and blockbuster reports no
    blocking call on the way."""
    xfail_uvloop_sendfile(loop_name, how)
    loop = asyncio.get_running_loop()
    data = os.urandom(3 * MiB)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    received: asyncio.Future[bytes] = loop.create_future()

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.readexactly(len(data)))
        writer.close()

    server = await asyncio.start_server(receive, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()
    with open(path, "rb") as file:
        if how == "loop.sendfile":
            _, writer = await asyncio.open_connection(*address)
            with blockbuster.blockbuster_ctx(__name__):
                sent = await wait(loop.sendfile(writer.transport, file))
            assert await wait(received) == data
            writer.close()
        else:
            with socket.socket() as sock:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
                with blockbuster.blockbuster_ctx(__name__):
                    sent = await wait(loop.sock_sendfile(sock, file))
                assert await wait(received) == data
    assert sent == len(data)
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("stale", [False, True], ids=["fresh path", "stale socket file"])
async def test_unix_server_path_checks_are_not_reported(
    loop_name: str, tmp_path: Path, stale: bool
) -> None:
    """create_unix_server checks its path for a stale socket file (left by a server that died)
    and removes one; the server binds there, and (from Python 3.13) closing it removes its
    file. blockbuster reports none of it."""
    path = tmp_path / "server.sock"
    if stale:
        with socket.socket(socket.AF_UNIX) as dead_server:
            dead_server.bind(str(path))  # the file stays after the close
    loop = asyncio.get_running_loop()
    try:
        with blockbuster.blockbuster_ctx(__name__):
            server = await wait(loop.create_unix_server(asyncio.Protocol, str(path)))
            assert server.sockets[0].getsockname() == str(path)
            server.close()
            await wait(server.wait_closed())
    except blockbuster.BlockingError as exc:
        if loop_name == "asyncio" and stale:
            pytest.xfail(f"asyncio: blockbuster exempts its os.stat of the path, not its {exc}")
        raise
    assert path.exists() == (sys.version_info < (3, 13))
