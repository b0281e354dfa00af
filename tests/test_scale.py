"""C10K: one server on the loop under test holds 10,000 concurrent TCP connections while every
one of them exchanges messages; none is lost, stalled or answered with another's bytes.

The clients live in a child process (plain sockets and the selectors module, so that the
client side is the same for every loop): it opens every connection before any message is
sent, then each connection sends a message naming itself and waits for it to come back, a
few times over, all connections at once. The child prints one line per outcome; the test
asserts every connection completed every exchange.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Iterator

import pytest
from _helpers import GUARD

CONNECTIONS = 10_000
EXCHANGES = 3

_CLIENTS = r"""
import resource, selectors, socket, sys

port, count, exchanges = map(int, sys.argv[1:4])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
selector = selectors.DefaultSelector()
conns = []
for number in range(count):
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setblocking(False)
    conns.append(conn)
print("connected", flush=True)
left = {}  # conn -> (message, bytes still expected, exchanges still to do)
for number, conn in enumerate(conns):
    message = b"%08d:" % number + bytes([number % 251]) * 55
    conn.sendall(message)
    left[conn] = (message, bytearray(), exchanges)
    selector.register(conn, selectors.EVENT_READ)
while left:
    events = selector.select(timeout=float(sys.argv[4]))
    if not events:
        print("stalled", len(left), flush=True)
        sys.exit(1)
    for key, _ in events:
        conn = key.fileobj
        message, got, todo = left[conn]
        chunk = conn.recv(len(message) - len(got))
        if not chunk:
            print("lost", message[:8].decode(), flush=True)
            sys.exit(1)
        got += chunk
        if len(got) < len(message):
            continue
        if bytes(got) != message:
            print("mixed up", message[:8].decode(), flush=True)
            sys.exit(1)
        if todo == 1:
            del left[conn]
            selector.unregister(conn)
        else:
            conn.sendall(message)
            left[conn] = (message, bytearray(), todo - 1)
print("ok", count * exchanges, flush=True)
"""


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This process may hold the server's 10,000 connections (and then goes back)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < CONNECTIONS + 1000:
        pytest.skip(f"RLIMIT_NOFILE's hard limit is {hard}: too low for {CONNECTIONS} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(300)
async def test_ten_thousand_connections_all_exchange_messages(many_descriptors: None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENTS,
        str(port),
        str(CONNECTIONS),
        str(EXCHANGES),
        str(GUARD),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(clients.communicate(), 8 * GUARD)
    finally:
        if clients.returncode is None:
            clients.kill()
            await clients.wait()
        server.close()
        await server.wait_closed()
    assert out.decode().split("\n")[:2] == ["connected", f"ok {CONNECTIONS * EXCHANGES}"]
    assert clients.returncode == 0
