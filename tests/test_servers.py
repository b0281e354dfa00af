"""Servers and connections, on every loop: create_server, the Server object, Unix-socket servers
and connections, create_connection (happy eyeballs included), connect_accepted_socket and
loop.sendfile.

Stock asyncio is the reference: every assertion holds on asyncio's SelectorEventLoop, per
Python version where asyncio changed (wait_closed in 3.12.1, keep_alive, cleanup_socket and
close_clients in 3.13). Every wait is on an event (a future resolved by a protocol callback);
``wait``'s guard only turns an event that never comes into a failure. Traffic stays on
loopback. Every test must leave no file descriptor open.
"""

from __future__ import annotations

import asyncio
import asyncio.trsock
import contextlib
import errno
import gc
import io
import os
import pathlib
import secrets
import socket
import stat
import struct
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _helpers import (
    Accepting,
    Recorder,
    address_of,
    connect,
    listen_queue,
    round_trip,
    serving,
    spin,
    tls_contexts,
    wait,
)

PY312_1 = sys.version_info >= (3, 12, 1)
PY313 = sys.version_info >= (3, 13)
MiB = 1024 * 1024


def _xfail_uvloop(loop_name: str, reason: str) -> None:
    if loop_name == "uvloop":
        pytest.xfail(f"uvloop: {reason}")


def _xfail_uvloop_sendfile(loop_name: str) -> None:
    _xfail_uvloop(loop_name, "loop.sendfile() is not implemented (raises NotImplementedError)")


pytestmark = pytest.mark.usefixtures("no_leaked_fds")


# -- helpers ----------------------------------------------------------------------------------


def assert_same_bytes(got: bytes, expected: bytes) -> None:
    """Equality of large byte strings, reported without printing them."""
    if got != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(got), len(expected)),
        )
        raise AssertionError(
            f"{len(got)} bytes received, {len(expected)} expected; first difference at {first}"
        )


def bound_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to (host, port) and not listening: connecting to it is refused, and
    nothing else can take its port meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def sockets_on_one_port(hosts: list[str]) -> list[socket.socket]:
    """A bound (not listening) TCP socket on each of *hosts*, all on the same port."""
    for _ in range(50):
        sockets = [bound_socket(hosts[0])]
        port = sockets[0].getsockname()[1]
        try:
            for host in hosts[1:]:
                sockets.append(bound_socket(host, port))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return sockets
    raise AssertionError(f"no port free on all of {hosts}")


@contextlib.asynccontextmanager
async def endpoints(
    loop: asyncio.AbstractEventLoop, *layout: tuple[str, str]
) -> AsyncIterator[tuple[int, Accepting]]:
    """Real endpoints on loopback addresses, all on one port, described by (host, kind):

    - "refused": a bound socket that does not listen, so a connection is refused at once;
    - "silent": a listener whose accept queue (listen(0) holds one) is full, so the kernel
      drops further SYNs and a connection attempt hangs without an answer;
    - "live": an echoing server of the loop.

    Yields (port, the Accepting of the live servers)."""
    sockets = sockets_on_one_port([host for host, _ in layout])
    fillers: list[socket.socket] = []
    servers: list[asyncio.AbstractServer] = []
    accepting = Accepting(loop, echo=True)
    try:
        for sock, (_, kind) in zip(sockets, layout, strict=True):
            if kind == "silent":
                sock.listen(0)
                filler = socket.socket(sock.family, socket.SOCK_STREAM)
                fillers.append(filler)
                filler.connect(sock.getsockname())  # completes at once on loopback
                assert listen_queue(sock) == (1, 0), "the silent listener's queue is not full"
            elif kind == "live":
                servers.append(await loop.create_server(accepting, sock=sock))
            else:
                assert kind == "refused", kind
        yield sockets[0].getsockname()[1], accepting
    finally:
        await accepting.close_all()
        for server in servers:
            server.close()
            await wait(server.wait_closed())
        for sock in sockets + fillers:
            sock.close()


@pytest.fixture
def made_up_name(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``made_up_name((host, port), ...)`` returns a new host name that resolves to those
    socket addresses, in that order. No name on this machine resolves to several addresses
    ('localhost' is 127.0.0.1 alone), so the addresses are real and only their name is made
    up: socket.getaddrinfo, which asyncio's loop.getaddrinfo runs in its executor, learns it.
    uvloop resolves names in libuv and never sees it."""
    names: dict[str, list[tuple[int, tuple[Any, ...]]]] = {}
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, *args: Any) -> Any:
        if host not in names:
            return real_getaddrinfo(host, port, family, type, *args)
        return [
            (af, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)
            for af, address in names[host]
            if family in (socket.AF_UNSPEC, af)
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def make(*addresses: tuple[str, int]) -> str:
        name = f"multi{len(names)}.epolloop.invalid"
        names[name] = [
            (socket.AF_INET6, (host, port, 0, 0)) if ":" in host else (socket.AF_INET, (host, port))
            for host, port in addresses
        ]
        return name

    return make


def _skip_made_up_names_on_uvloop(loop_name: str) -> None:
    if loop_name == "uvloop":
        pytest.skip("uvloop resolves host names in libuv, so the made-up name cannot resolve")


# -- create_server ----------------------------------------------------------------------------


async def test_server_on_one_host_and_an_ephemeral_port() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, accepting):
        assert server.get_loop() is loop
        assert server.is_serving()
        [listener] = server.sockets
        assert listener.family == socket.AF_INET
        assert listener.type == socket.SOCK_STREAM
        host, port = listener.getsockname()
        assert host == "127.0.0.1"
        assert port > 0

        client = await connect(loop, host, port)
        accepted = await accepting.next()
        assert client.transport.get_extra_info("peername") == (host, port)
        assert accepted.transport.get_extra_info("sockname") == (host, port)
        assert accepted.transport.get_extra_info("peername") == client.transport.get_extra_info(
            "sockname"
        )
        await round_trip(client, b"hello")
        await round_trip(client, b"again")
        assert await client.close() is None
        assert await wait(accepted.lost) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_accepted_peername_outlives_a_peer_reset(loop_name: str, host: str) -> None:
    """An accepted connection's peername is the address accept() gave, even when it is first
    asked after the peer reset the connection, when getpeername() fails."""
    loop = asyncio.get_running_loop()
    async with serving(loop, host, echo=False) as (server, accepting):
        [listener] = server.sockets
        with socket.socket(listener.family, socket.SOCK_STREAM) as client:
            client.connect(listener.getsockname())
            client_address = client.getsockname()
            accepted = await accepting.next()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert isinstance(await wait(accepted.lost), ConnectionResetError)
        peername = accepted.transport.get_extra_info("peername")
        if peername is None:
            _xfail_uvloop(loop_name, "peername is looked up when asked, None after a reset")
        assert peername == client_address


async def test_server_on_a_list_of_hosts() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop, ["127.0.0.1", "::1"]) as (server, _):
        assert sorted(sock.family for sock in server.sockets) == [socket.AF_INET, socket.AF_INET6]
        for family, host in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]:
            address = address_of(server, family)
            assert address[0] == host
            client = await connect(loop, *address)
            await round_trip(client)
            await client.close()


async def test_server_binds_a_repeated_host_once(loop_name: str) -> None:
    _xfail_uvloop(loop_name, "create_server() binds a repeated host once per repetition")
    loop = asyncio.get_running_loop()
    async with serving(loop, ["127.0.0.1", "127.0.0.1"]) as (server, _):
        assert len(server.sockets) == 1


@pytest.mark.parametrize(
    ("host", "family"),
    [(None, socket.AF_UNSPEC), ("", socket.AF_UNSPEC), (None, socket.AF_INET)],
    ids=["None", "empty", "None-AF_INET"],
)
async def test_server_on_every_interface(host: str | None, family: int) -> None:
    """Host None (or '') binds the wildcard address of every family getaddrinfo offers: one
    socket for IPv4 and one IPv6-only socket for IPv6, each on its own port when port is 0."""
    loop = asyncio.get_running_loop()
    expected = {
        info[0]
        for info in socket.getaddrinfo(None, 0, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    }
    async with serving(loop, host, 0, family=family) as (server, _):
        assert sorted(sock.family for sock in server.sockets) == sorted(expected)
        for sock in server.sockets:
            if sock.family == socket.AF_INET6:
                assert sock.getsockname()[0] == "::"
                assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
                loopback = "::1"
            else:
                assert sock.getsockname()[0] == "0.0.0.0"
                loopback = "127.0.0.1"
            client = await connect(loop, loopback, sock.getsockname()[1])
            await round_trip(client)
            await client.close()


async def test_server_on_an_existing_socket() -> None:
    loop = asyncio.get_running_loop()
    sock = bound_socket()
    try:
        async with serving(loop, None, None, sock=sock) as (server, accepting):
            [listener] = server.sockets
            assert listener.fileno() == sock.fileno()
            assert listener.getsockname() == sock.getsockname()
            assert listen_queue(listener) == (0, 100)  # the default backlog
            client = await connect(loop, *sock.getsockname())
            await round_trip(client)
            await client.close()
            await wait((await accepting.next()).lost)
        assert sock.fileno() == -1, "closing the server closes its socket"
    finally:
        sock.close()


@pytest.mark.parametrize("backlog", [1, 7, 1000])
async def test_backlog_goes_to_listen(backlog: int) -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop, backlog=backlog) as (server, _):
        assert listen_queue(server.sockets[0]) == (0, backlog)


@pytest.mark.parametrize(("reuse_address", "expected"), [(None, 1), (True, 1), (False, 0)])
async def test_reuse_address(reuse_address: bool | None, expected: int) -> None:
    """SO_REUSEADDR is on by default on Linux."""
    loop = asyncio.get_running_loop()
    async with serving(loop, reuse_address=reuse_address) as (server, _):
        [listener] = server.sockets
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == expected
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


async def test_reuse_port_lets_two_servers_share_a_port() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop, reuse_port=True) as (first, _):
        host, port = address_of(first)
        assert first.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        async with serving(loop, host, port, reuse_port=True) as (second, _):
            assert address_of(second) == (host, port)
            client = await connect(loop, host, port)
            await round_trip(client)
            await client.close()


@pytest.mark.skipif(not PY313, reason="create_server(keep_alive=) is new in Python 3.13")
@pytest.mark.parametrize(("keep_alive", "expected"), [(True, 1), (False, 0), (None, 0)])
async def test_keep_alive(loop_name: str, keep_alive: bool | None, expected: int) -> None:
    """asyncio sets SO_KEEPALIVE on the listening socket; Linux accepted sockets inherit it."""
    _xfail_uvloop(loop_name, "create_server() has no keep_alive parameter (Python 3.13)")
    loop = asyncio.get_running_loop()
    async with serving(loop, keep_alive=keep_alive) as (server, accepting):
        [listener] = server.sockets
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == expected
        client = await connect(loop, *address_of(server))
        accepted = await accepting.next()
        accepted_sock = accepted.transport.get_extra_info("socket")
        assert accepted_sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == expected
        await client.close()


async def test_start_serving_later() -> None:
    """With start_serving=False the socket is bound but does not listen: a connection is
    refused until start_serving()."""
    loop = asyncio.get_running_loop()
    async with serving(loop, start_serving=False) as (server, _):
        assert not server.is_serving()
        address = address_of(server)
        with pytest.raises(ConnectionRefusedError):
            await connect(loop, *address)
        await wait(server.start_serving())
        assert server.is_serving()
        await wait(server.start_serving())  # a second call changes nothing
        assert server.is_serving()
        client = await connect(loop, *address)
        await round_trip(client)
        await client.close()


async def test_serve_forever_serves_until_cancelled() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop, start_serving=False) as (server, accepting):
        address = address_of(server)
        serve = loop.create_task(server.serve_forever())
        await spin(1)
        assert server.is_serving()
        client = await connect(loop, *address)
        await round_trip(client)
        with pytest.raises(RuntimeError, match="already being awaited"):
            await server.serve_forever()
        await client.close()
        await wait((await accepting.next()).lost)

        serve.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait(serve)
        assert not server.is_serving()
        assert len(server.sockets) == 0
        with pytest.raises(ConnectionRefusedError):
            await connect(loop, *address)
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()


async def test_cancelled_serve_forever_waits_for_connections(loop_name: str) -> None:
    """serve_forever() answers its cancellation with close() and wait_closed(): from Python
    3.12.1 that waits for the open connections to end, before it only closed the server."""
    if PY312_1:
        _xfail_uvloop(
            loop_name, "wait_closed() of a closed server does not wait for its connections"
        )
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, accepting):
        serve = loop.create_task(server.serve_forever())
        client = await connect(loop, *address_of(server))
        accepted = await accepting.next()
        await round_trip(client)
        serve.cancel()
        if PY312_1:
            await round_trip(client)  # several loop iterations: serve_forever is still waiting
            assert not serve.done()
            assert not server.is_serving()
            await client.close()
            await wait(accepted.lost)
        with pytest.raises(asyncio.CancelledError):
            await wait(serve)
        assert not server.is_serving()
        if not PY312_1:
            assert not accepted.lost.done()
            await round_trip(client)
            await client.close()


async def test_address_in_use_names_the_address() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, _):
        host, port = address_of(server)
        with pytest.raises(OSError) as caught:
            await loop.create_server(asyncio.Protocol, host, port)
        assert caught.value.errno == errno.EADDRINUSE
        assert repr((host, port)) in str(caught.value)
        assert server.is_serving()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"host": "127.0.0.1", "port": 0, "sock": "tcp"}, ValueError, "host/port and sock"),
        ({"port": 0, "sock": "tcp"}, ValueError, "host/port and sock"),
        ({}, ValueError, "Neither host/port nor sock"),
        ({"sock": "udp"}, ValueError, "A Stream Socket was expected"),
        ({"port": 0, "ssl_handshake_timeout": 1.0}, ValueError, "only meaningful with ssl"),
        ({"port": 0, "ssl_shutdown_timeout": 1.0}, ValueError, "only meaningful with ssl"),
        ({"port": 0, "ssl": True}, TypeError, "must be an SSLContext"),
    ],
    ids=["host-and-sock", "port-and-sock", "nothing", "udp-sock", "handshake", "shutdown", "bool"],
)
async def test_create_server_refuses_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    loop = asyncio.get_running_loop()
    kinds = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    with contextlib.ExitStack() as stack:
        if "sock" in kwargs:
            sock = stack.enter_context(socket.socket(socket.AF_INET, kinds[kwargs["sock"]]))
            kwargs = {**kwargs, "sock": sock}
        with pytest.raises(error, match=match) as caught:
            await loop.create_server(asyncio.Protocol, **kwargs)
        assert type(caught.value) is error


# -- the Server object ------------------------------------------------------------------------


async def test_server_sockets_are_transport_sockets(loop_name: str) -> None:
    _xfail_uvloop(loop_name, "Server.sockets is a list of uvloop PseudoSockets")
    loop = asyncio.get_running_loop()
    async with serving(loop, ["127.0.0.1", "::1"]) as (server, _):
        sockets = server.sockets
        assert isinstance(sockets, tuple)
        assert len(sockets) == 2
        for sock in sockets:
            assert isinstance(sock, asyncio.trsock.TransportSocket)
        server.close()
        assert server.sockets == ()


async def test_close_stops_accepting_and_keeps_connections() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, accepting):
        address = address_of(server)
        client = await connect(loop, *address)
        accepted = await accepting.next()
        server.close()
        assert not server.is_serving()
        assert len(server.sockets) == 0
        with pytest.raises(ConnectionRefusedError):
            await connect(loop, *address)
        await round_trip(client, b"still connected")
        server.close()  # a second close changes nothing
        await client.close()
        await wait(accepted.lost)


async def test_wait_closed_waits_for_close_and_for_connections() -> None:
    """wait_closed() called while the server is open returns once the server is closed and
    its last connection has ended, on every Python version."""
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, accepting):
        client = await connect(loop, *address_of(server))
        accepted = await accepting.next()
        waiting = loop.create_task(server.wait_closed())
        await round_trip(client)
        assert not waiting.done()
        server.close()
        await round_trip(client)
        assert not waiting.done()
        await client.close()
        await wait(accepted.lost)
        await wait(waiting)


async def test_wait_closed_after_close_with_a_live_connection(loop_name: str) -> None:
    """Once the server is closed, wait_closed() waits for the open connections from Python
    3.12.1; before, it returns at once."""
    if PY312_1:
        _xfail_uvloop(
            loop_name, "wait_closed() of a closed server does not wait for its connections"
        )
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, accepting):
        client = await connect(loop, *address_of(server))
        accepted = await accepting.next()
        server.close()
        waiting = loop.create_task(server.wait_closed())
        if PY312_1:
            await round_trip(client)
            assert not waiting.done()
            await client.close()
            await wait(accepted.lost)
            await wait(waiting)
        else:
            await wait(waiting)
            assert not accepted.lost.done()
            await round_trip(client)
            await client.close()


async def test_wait_closed_of_a_closed_idle_server_returns() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    server.close()
    await wait(server.wait_closed())
    await wait(server.wait_closed())
    assert not server.is_serving()


@pytest.mark.skipif(not PY313, reason="Server.close_clients/abort_clients are new in 3.13")
@pytest.mark.parametrize("method", ["close_clients", "abort_clients"])
async def test_close_or_abort_clients(loop_name: str, method: str) -> None:
    _xfail_uvloop(loop_name, "Server has no close_clients()/abort_clients() (Python 3.13)")
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, accepting), serving(loop) as (other, _):
        address = address_of(server)
        clients = [await connect(loop, *address) for _ in range(3)]
        accepted = [await accepting.next() for _ in clients]
        other_client = await connect(loop, *address_of(other))
        await round_trip(clients[0])
        getattr(server, method)()
        for protocol in accepted:
            assert await wait(protocol.lost) is None
        for client in clients:
            await wait(client.lost)
        assert server.is_serving(), "the server itself goes on serving"
        client = await connect(loop, *address)
        await round_trip(client)
        await client.close()
        await round_trip(other_client)  # another server's connection is not its client
        await other_client.close()


async def test_server_as_async_context_manager() -> None:
    loop = asyncio.get_running_loop()
    accepting = Accepting(loop, echo=True)
    server = await loop.create_server(accepting, "127.0.0.1", 0)
    async with server as entered:
        assert entered is server
        assert server.is_serving()
        client = await connect(loop, *address_of(server))
        await round_trip(client)
        await client.close()
        await wait((await accepting.next()).lost)
    assert not server.is_serving()
    assert len(server.sockets) == 0


# -- Unix sockets -----------------------------------------------------------------------------


async def unix_connect(loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Recorder:
    transport, protocol = await wait(
        loop.create_unix_connection(lambda: Recorder(loop), *args, **kwargs)
    )
    assert protocol.transport is transport
    return protocol


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlib"])
async def test_unix_server_on_a_path(sock_dir: pathlib.Path, as_path: bool) -> None:
    """From Python 3.13 closing the server removes its socket file (cleanup_socket=True by
    default); before, the file stays."""
    loop = asyncio.get_running_loop()
    path = str(sock_dir / "server.sock")
    accepting = Accepting(loop, echo=True)
    server = await loop.create_unix_server(accepting, pathlib.Path(path) if as_path else path)
    try:
        [listener] = server.sockets
        assert listener.family == socket.AF_UNIX
        assert listener.getsockname() == path
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        client = await unix_connect(loop, pathlib.Path(path) if as_path else path)
        assert client.transport.get_extra_info("peername") == path
        accepted = await accepting.next()
        await round_trip(client, b"over a unix socket")
        await client.close()
        await wait(accepted.lost)
    finally:
        server.close()
        await wait(server.wait_closed())
    assert os.path.exists(path) is not PY313


@pytest.mark.skipif(not PY313, reason="create_unix_server(cleanup_socket=) is new in 3.13")
async def test_unix_server_cleanup_socket_false_keeps_the_file(sock_dir: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    path = str(sock_dir / "kept.sock")
    server = await loop.create_unix_server(asyncio.Protocol, path, cleanup_socket=False)
    server.close()
    await wait(server.wait_closed())
    assert stat.S_ISSOCK(os.stat(path).st_mode)


async def test_unix_server_replaces_a_stale_socket_file(sock_dir: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    path = str(sock_dir / "stale.sock")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)
    assert os.path.exists(path)
    accepting = Accepting(loop, echo=True)
    server = await loop.create_unix_server(accepting, path)
    try:
        client = await unix_connect(loop, path)
        await round_trip(client)
        await client.close()
    finally:
        await accepting.close_all()
        server.close()
        await wait(server.wait_closed())


async def test_unix_server_and_connection_on_existing_sockets(sock_dir: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    path = str(sock_dir / "given.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    accepting = Accepting(loop, echo=True)
    server = await loop.create_unix_server(accepting, sock=listening)
    try:
        assert server.sockets[0].fileno() == listening.fileno()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connected:
            connected.connect(path)  # the server listens: this completes at once
            client = await unix_connect(loop, sock=connected)
            assert client.transport.get_extra_info("socket").fileno() == connected.fileno()
            await round_trip(client)
            await client.close()
            assert connected.fileno() == -1, "the transport closes the socket it was given"
    finally:
        await accepting.close_all()
        server.close()
        await wait(server.wait_closed())
        listening.close()
    assert listening.fileno() == -1
    assert os.path.exists(path) is not PY313


async def test_unix_server_on_an_abstract_name() -> None:
    loop = asyncio.get_running_loop()
    name = f"\0epolloop-test-{secrets.token_hex(8)}"
    accepting = Accepting(loop, echo=True)
    server = await loop.create_unix_server(accepting, name)
    try:
        assert server.sockets[0].getsockname() == name.encode()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(name)
            client = await unix_connect(loop, sock=sock)
            await round_trip(client, b"abstract")
            with pytest.raises(OSError) as caught:
                await loop.create_unix_server(asyncio.Protocol, name)
            assert caught.value.errno == errno.EADDRINUSE
            assert repr(name) in str(caught.value)
            await client.close()
    finally:
        await accepting.close_all()
        server.close()
        await wait(server.wait_closed())


async def test_unix_connection_to_an_abstract_name(loop_name: str) -> None:
    _xfail_uvloop(loop_name, "create_unix_connection() to an abstract name fails with EINVAL")
    loop = asyncio.get_running_loop()
    name = f"\0epolloop-test-{secrets.token_hex(8)}"
    accepting = Accepting(loop, echo=True)
    server = await loop.create_unix_server(accepting, name)
    try:
        client = await unix_connect(loop, name)
        assert client.transport.get_extra_info("peername") == name.encode()
        await round_trip(client, b"abstract")
        await client.close()
    finally:
        await accepting.close_all()
        server.close()
        await wait(server.wait_closed())


async def test_unix_connection_to_nothing(sock_dir: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(FileNotFoundError):
        await unix_connect(loop, str(sock_dir / "missing.sock"))
    path = str(sock_dir / "not-listening.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)
        with pytest.raises(ConnectionRefusedError):
            await unix_connect(loop, path)


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("server", {"path": "P", "sock": "unix"}, "path and sock"),
        ("server", {}, "path was not specified"),
        ("server", {"sock": "tcp"}, "A UNIX Domain Stream Socket was expected"),
        ("server", {"path": "P", "ssl_handshake_timeout": 1.0}, "only meaningful with ssl"),
        ("connection", {"path": "P", "sock": "unix"}, "path and sock"),
        ("connection", {}, "no path and sock"),
        ("connection", {"sock": "tcp"}, "A UNIX Domain Stream Socket was expected"),
        ("connection", {"path": "P", "server_hostname": "x"}, "only meaningful with ssl"),
        ("connection", {"path": "P", "ssl_handshake_timeout": 1.0}, "only meaningful with ssl"),
    ],
)
async def test_unix_refuses_bad_arguments(
    sock_dir: pathlib.Path, method: str, kwargs: dict[str, Any], match: str
) -> None:
    loop = asyncio.get_running_loop()
    families = {"unix": socket.AF_UNIX, "tcp": socket.AF_INET}
    kwargs = dict(kwargs)
    with contextlib.ExitStack() as stack:
        if "sock" in kwargs:
            kwargs["sock"] = stack.enter_context(socket.socket(families[kwargs["sock"]]))
        if "path" in kwargs:
            kwargs["path"] = str(sock_dir / "bad.sock")
        create = loop.create_unix_server if method == "server" else loop.create_unix_connection
        with pytest.raises(ValueError, match=match):
            await create(asyncio.Protocol, **kwargs)
    assert not os.path.exists(sock_dir / "bad.sock")


# -- create_connection ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
async def test_connection_to_host_and_port(host: str) -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop, host) as (server, accepting):
        family = server.sockets[0].family
        address = server.sockets[0].getsockname()
        client = await connect(loop, host, address[1])
        accepted = await accepting.next()
        transport = client.transport
        assert transport.get_extra_info("peername") == address
        assert transport.get_extra_info("sockname") == accepted.transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        assert sock.family == family
        assert sock.type == socket.SOCK_STREAM
        assert sock.getpeername() == address
        assert transport.get_extra_info("no such thing", "default") == "default"
        await round_trip(client)
        await client.close()


async def test_connection_on_an_existing_socket() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, _):
        with socket.create_connection(address_of(server)) as sock:
            client = await connect(loop, sock=sock)
            assert client.transport.get_extra_info("socket").fileno() == sock.fileno()
            assert client.transport.get_extra_info("peername") == address_of(server)
            await round_trip(client)
            await client.close()
            assert sock.fileno() == -1, "the transport closes the socket it was given"


async def test_connection_from_a_local_address() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, accepting):
        client = await connect(loop, *address_of(server), local_addr=("127.0.0.2", 0))
        accepted = await accepting.next()
        local = client.transport.get_extra_info("sockname")
        assert local[0] == "127.0.0.2"
        assert accepted.transport.get_extra_info("peername") == local
        await round_trip(client)
        await client.close()


async def test_connection_from_a_local_address_of_another_family() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop, "::1") as (server, _):
        with pytest.raises(OSError):
            await connect(loop, *address_of(server, socket.AF_INET6), local_addr=("127.0.0.1", 0))


@pytest.mark.parametrize(
    ("host", "kwargs", "family"),
    [
        ("localhost", {"family": socket.AF_INET}, socket.AF_INET),
        ("::1", {"family": socket.AF_INET6}, socket.AF_INET6),
        ("127.0.0.1", {"proto": socket.IPPROTO_TCP}, socket.AF_INET),
        ("127.0.0.1", {"flags": socket.AI_NUMERICHOST}, socket.AF_INET),
    ],
    ids=["AF_INET", "AF_INET6", "IPPROTO_TCP", "AI_NUMERICHOST"],
)
async def test_connection_family_proto_flags(
    host: str, kwargs: dict[str, int], family: int
) -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop, host, family=family) as (server, _):
        client = await connect(loop, host, address_of(server, family)[1], **kwargs)
        assert client.transport.get_extra_info("socket").family == family
        await round_trip(client)
        await client.close()


@pytest.mark.parametrize(
    ("host", "kwargs"),
    [
        ("127.0.0.1", {"family": socket.AF_INET6}),
        ("localhost", {"flags": socket.AI_NUMERICHOST}),
    ],
    ids=["IPv4-host-AF_INET6", "name-AI_NUMERICHOST"],
)
async def test_connection_to_an_unresolvable_host(host: str, kwargs: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(socket.gaierror):
        await loop.create_connection(asyncio.Protocol, host, 9, **kwargs)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_connection_refused(host: str) -> None:
    loop = asyncio.get_running_loop()
    with bound_socket(host) as sock, pytest.raises(ConnectionRefusedError):
        await loop.create_connection(asyncio.Protocol, host, sock.getsockname()[1])


async def test_a_refused_connections_error_is_not_kept_in_a_list() -> None:
    """The attempts' error lists do not outlive create_connection: the error it raises is not
    in one (through its traceback's frames they would make a reference cycle, and keep every
    attempt's socket error, traceback and frames alive until the collector runs; CPython's
    gh-124309 removed such cycles from asyncio). With happy_eyeballs_delay the attempts run
    in asyncio's staggered_race, whose lists are its own."""
    loop = asyncio.get_running_loop()
    with bound_socket() as sock:
        try:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", sock.getsockname()[1])
        except ConnectionRefusedError as exc:
            error = exc
    assert not [r for r in gc.get_referrers(error) if isinstance(r, list)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"host": "127.0.0.1", "port": 1, "sock": "tcp"}, "host/port and sock"),
        ({"port": 1, "sock": "tcp"}, "host/port and sock"),
        ({}, "no sock specified"),
        ({"sock": "udp"}, "A Stream Socket was expected"),
        ({"host": "127.0.0.1", "port": 1, "server_hostname": "x"}, "only meaningful with ssl"),
        ({"host": "127.0.0.1", "port": 1, "ssl_handshake_timeout": 1.0}, "meaningful with ssl"),
        ({"host": "127.0.0.1", "port": 1, "ssl_shutdown_timeout": 1.0}, "meaningful with ssl"),
        ({"sock": "tcp", "ssl": "context"}, "You must set server_hostname"),
    ],
    ids=[
        "host-and-sock",
        "port-and-sock",
        "nothing",
        "udp-sock",
        "server_hostname",
        "handshake",
        "shutdown",
        "ssl-without-host",
    ],
)
async def test_create_connection_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    loop = asyncio.get_running_loop()
    kinds = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    with contextlib.ExitStack() as stack:
        if "sock" in kwargs:
            sock = stack.enter_context(socket.socket(socket.AF_INET, kinds[kwargs["sock"]]))
            kwargs = {**kwargs, "sock": sock}
        if kwargs.get("ssl") == "context":
            import ssl

            kwargs["ssl"] = ssl.create_default_context()
        with pytest.raises(ValueError, match=match) as caught:
            await loop.create_connection(asyncio.Protocol, **kwargs)
        assert type(caught.value) is ValueError


# -- several addresses: happy eyeballs, interleave, all_errors --------------------------------


def _xfail_uvloop_happy_eyeballs(loop_name: str) -> None:
    _xfail_uvloop(
        loop_name,
        "create_connection() has no happy_eyeballs_delay, interleave or all_errors parameter",
    )


async def test_several_addresses_are_tried_in_turn(
    loop_name: str, made_up_name: Callable[..., str]
) -> None:
    _skip_made_up_names_on_uvloop(loop_name)
    loop = asyncio.get_running_loop()
    layout = [("::1", "refused"), ("127.0.0.2", "refused"), ("127.0.0.1", "live")]
    async with endpoints(loop, *layout) as (port, _):
        name = made_up_name(*[(host, port) for host, _ in layout])
        client = await connect(loop, name, port)
        assert client.transport.get_extra_info("peername") == ("127.0.0.1", port)
        await round_trip(client)
        await client.close()


async def test_happy_eyeballs_with_dead_and_live_addresses(
    loop_name: str, made_up_name: Callable[..., str]
) -> None:
    """In interleaved order (::1, 127.0.0.2, 127.0.0.3, 127.0.0.1) a refused attempt starts
    the next at once, a silent one after happy_eyeballs_delay: the live address wins."""
    _xfail_uvloop_happy_eyeballs(loop_name)
    loop = asyncio.get_running_loop()
    layout = [
        ("::1", "refused"),
        ("127.0.0.2", "silent"),
        ("127.0.0.3", "refused"),
        ("127.0.0.1", "live"),
    ]
    async with endpoints(loop, *layout) as (port, _):
        name = made_up_name(*[(host, port) for host, _ in layout])
        client = await connect(loop, name, port, happy_eyeballs_delay=0.05)
        assert client.transport.get_extra_info("peername") == ("127.0.0.1", port)
        await round_trip(client)
        await client.close()


@pytest.mark.parametrize(
    ("interleave", "winner"),
    [(None, "::1"), (1, "::1"), (0, "127.0.0.1"), (2, "127.0.0.1")],
)
async def test_happy_eyeballs_interleave(
    loop_name: str, made_up_name: Callable[..., str], interleave: int | None, winner: str
) -> None:
    """Addresses 127.0.0.2 (silent), 127.0.0.1 and ::1 (both live): the first attempt hangs,
    so the second starts after the delay and wins. interleave=1 (the default with
    happy_eyeballs_delay) alternates the families, so ::1 comes second; interleave=0 keeps
    getaddrinfo's order, and interleave=2 takes two IPv4 addresses first."""
    _xfail_uvloop_happy_eyeballs(loop_name)
    loop = asyncio.get_running_loop()
    layout = [("127.0.0.2", "silent"), ("127.0.0.1", "live"), ("::1", "live")]
    async with endpoints(loop, *layout) as (port, _):
        name = made_up_name(*[(host, port) for host, _ in layout])
        client = await connect(loop, name, port, happy_eyeballs_delay=0.25, interleave=interleave)
        assert client.transport.get_extra_info("peername")[:2] == (winner, port)
        await round_trip(client)
        await client.close()


async def test_several_failures_make_one_oserror(
    loop_name: str, made_up_name: Callable[..., str]
) -> None:
    """Without all_errors, failures with different messages become one plain OSError whose
    message lists them."""
    _skip_made_up_names_on_uvloop(loop_name)
    loop = asyncio.get_running_loop()
    layout = [("::1", "refused"), ("127.0.0.2", "refused")]
    async with endpoints(loop, *layout) as (port, _):
        name = made_up_name(*[(host, port) for host, _ in layout])
        with pytest.raises(OSError) as caught:
            await loop.create_connection(asyncio.Protocol, name, port)
        assert type(caught.value) is OSError
        assert str(caught.value).startswith("Multiple exceptions: ")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="all_errors is new in Python 3.12")
@pytest.mark.parametrize("happy_eyeballs_delay", [None, 0.05])
async def test_all_errors_raises_an_exception_group(
    loop_name: str, made_up_name: Callable[..., str], happy_eyeballs_delay: float | None
) -> None:
    _xfail_uvloop_happy_eyeballs(loop_name)
    loop = asyncio.get_running_loop()
    layout = [("::1", "refused"), ("127.0.0.2", "refused"), ("127.0.0.3", "refused")]
    async with endpoints(loop, *layout) as (port, _):
        name = made_up_name(*[(host, port) for host, _ in layout])
        with pytest.raises(ExceptionGroup) as caught:
            await loop.create_connection(
                asyncio.Protocol,
                name,
                port,
                all_errors=True,
                happy_eyeballs_delay=happy_eyeballs_delay,
            )
        errors = caught.value.exceptions
        assert len(errors) == 3
        assert all(isinstance(error, ConnectionRefusedError) for error in errors)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="all_errors is new in Python 3.12")
async def test_all_errors_with_one_address(loop_name: str) -> None:
    _xfail_uvloop_happy_eyeballs(loop_name)
    loop = asyncio.get_running_loop()
    with bound_socket() as sock:
        with pytest.raises(ExceptionGroup) as caught:
            await loop.create_connection(asyncio.Protocol, *sock.getsockname(), all_errors=True)
        [error] = caught.value.exceptions
        assert isinstance(error, ConnectionRefusedError)


# -- connect_accepted_socket ------------------------------------------------------------------


async def test_connect_accepted_socket() -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client_sock = socket.create_connection(listener.getsockname())
        accepted_sock, peer = listener.accept()
    with client_sock, accepted_sock:
        transport, accepted = await wait(
            loop.connect_accepted_socket(lambda: Recorder(loop, echo=True), accepted_sock)
        )
        assert accepted.transport is transport
        assert transport.get_extra_info("peername") == peer
        assert transport.get_extra_info("socket").fileno() == accepted_sock.fileno()
        client = await connect(loop, sock=client_sock)
        await round_trip(client, b"accepted elsewhere")
        await client.close()
        assert await wait(accepted.lost) is None
        assert accepted_sock.fileno() == -1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sock": "udp"}, "A Stream Socket was expected"),
        ({"sock": "tcp", "ssl_handshake_timeout": 1.0}, "only meaningful with ssl"),
        ({"sock": "tcp", "ssl_shutdown_timeout": 1.0}, "only meaningful with ssl"),
    ],
    ids=["udp-sock", "handshake", "shutdown"],
)
async def test_connect_accepted_socket_refuses_bad_arguments(
    kwargs: dict[str, Any], match: str
) -> None:
    loop = asyncio.get_running_loop()
    kinds = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    with (
        socket.socket(socket.AF_INET, kinds[kwargs["sock"]]) as sock,
        pytest.raises(ValueError, match=match),
    ):
        await loop.connect_accepted_socket(asyncio.Protocol, **{**kwargs, "sock": sock})


# -- loop.sendfile ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, bytes]:
    """A 16 MiB file of random bytes, and its content."""
    data = os.urandom(16 * MiB)
    path = tmp_path_factory.mktemp("sendfile") / "random.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize(
    ("offset", "count"),
    [(0, None), (12345, 5 * MiB + 3), (10 * MiB, None), (7, 1)],
)
@pytest.mark.parametrize("fallback", [True, False])
async def test_sendfile(
    loop_name: str,
    big_file: tuple[pathlib.Path, bytes],
    offset: int,
    count: int | None,
    fallback: bool,
) -> None:
    """The receiver gets exactly the file's bytes [offset, offset + count), then what the
    sender writes afterwards; the file position ends after the last byte sent. On plain TCP
    sendfile works natively, so fallback=False changes nothing."""
    _xfail_uvloop_sendfile(loop_name)
    loop = asyncio.get_running_loop()
    path, data = big_file
    expected = data[offset : offset + count] if count is not None else data[offset:]
    async with serving(loop, echo=False) as (server, accepting):
        client = await connect(loop, *address_of(server))
        accepted = await accepting.next()
        with open(path, "rb") as file:
            sent = await wait(
                loop.sendfile(client.transport, file, offset, count, fallback=fallback)
            )
            assert sent == len(expected)
            assert file.tell() == offset + len(expected)
        client.transport.write(b"after the file")
        received = await accepted.received(len(expected) + 14)
        assert_same_bytes(received, expected + b"after the file")
        await client.close()


async def test_sendfile_of_a_file_object_without_fd(loop_name: str) -> None:
    """A file object with no file descriptor cannot go through os.sendfile: the fallback reads
    and writes it, and without fallback asyncio.SendfileNotAvailableError is raised."""
    _xfail_uvloop_sendfile(loop_name)
    loop = asyncio.get_running_loop()
    data = os.urandom(300_000)
    async with serving(loop, echo=False) as (server, accepting):
        client = await connect(loop, *address_of(server))
        accepted = await accepting.next()
        file = io.BytesIO(data)
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sendfile(client.transport, file, fallback=False)
        assert await wait(loop.sendfile(client.transport, file, 1000)) == len(data) - 1000
        assert file.tell() == len(data)
        assert_same_bytes(await accepted.received(len(data) - 1000), data[1000:])
        await client.close()


async def test_sendfile_on_a_closing_transport(
    loop_name: str, big_file: tuple[pathlib.Path, bytes]
) -> None:
    _xfail_uvloop_sendfile(loop_name)
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, _):
        client = await connect(loop, *address_of(server))
        client.transport.close()
        with open(big_file[0], "rb") as file:
            with pytest.raises(RuntimeError, match="closing"):
                await loop.sendfile(client.transport, file)
            assert file.tell() == 0
        await wait(client.lost)


def queue_behind_a_peer_that_does_not_read(client: Recorder, accepted: Recorder) -> int:
    """Write to *client* until its transport queues, the peer (*accepted*) reading nothing;
    how many bytes were written."""
    assert client.transport is not None and accepted.transport is not None
    accepted.transport.pause_reading()
    written = 0
    while client.transport.get_write_buffer_size() == 0:
        client.transport.write(b"q" * MiB)
        written += MiB
    return written


async def test_sendfile_aborted_while_the_write_queue_drains(
    loop_name: str, big_file: tuple[pathlib.Path, bytes]
) -> None:
    """loop.sendfile waits for what write() queued to go out first; an abort() meanwhile makes
    it raise ConnectionError (asyncio's 'Connection is closed by peer'), not wait forever."""
    _xfail_uvloop_sendfile(loop_name)
    loop = asyncio.get_running_loop()
    async with serving(loop, echo=False) as (server, accepting):
        client = await connect(loop, *address_of(server))
        queue_behind_a_peer_that_does_not_read(client, await accepting.next())
        with open(big_file[0], "rb") as file:
            sending = asyncio.ensure_future(loop.sendfile(client.transport, file))
            await spin(3)
            assert not sending.done(), "sendfile waits for the write queue"
            client.transport.abort()
            with pytest.raises(ConnectionError):
                await wait(sending)
            assert file.tell() == 0
        await wait(client.lost)


async def test_sendfile_cancelled_while_the_write_queue_drains(
    loop_name: str, big_file: tuple[pathlib.Path, bytes], request: pytest.FixtureRequest
) -> None:
    """A loop.sendfile cancelled while it waits for the write queue gives the transport back:
    it writes and reads again, and what was queued still arrives, then the later write."""
    _xfail_uvloop_sendfile(loop_name)
    loop = asyncio.get_running_loop()
    async with serving(loop, echo=False) as (server, accepting):
        client = await connect(loop, *address_of(server))
        accepted = await accepting.next()
        queued = queue_behind_a_peer_that_does_not_read(client, accepted)
        with open(big_file[0], "rb") as file:
            sending = asyncio.ensure_future(loop.sendfile(client.transport, file))
            await spin(3)
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            assert file.tell() == 0
        try:
            client.transport.write(b"after")
        except RuntimeError as exc:
            if loop_name != "asyncio":
                raise
            # (Its transport then fails on that waiter as it closes, and the loop logs it.)
            request.node.add_marker(pytest.mark.loop_errors)
            pytest.xfail(f"asyncio: the cancelled sendfile's waiter stays set: {exc}")
        accepted.transport.resume_reading()
        assert await accepted.received(queued + 5) == b"q" * queued + b"after"
        accepted.transport.write(b"echo")
        assert await client.received(4) == b"echo"
        await client.close()


@pytest.mark.parametrize("fallback", [True, False])
async def test_sendfile_over_tls(
    loop_name: str, big_file: tuple[pathlib.Path, bytes], fallback: bool
) -> None:
    """A TLS transport cannot use os.sendfile: with fallback (the default) the file is read and
    written through the transport; with fallback=False asyncio raises RuntimeError."""
    _xfail_uvloop_sendfile(loop_name)
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    path, data = big_file
    async with serving(loop, echo=False, ssl=server_context) as (server, accepting):
        client = await connect(
            loop, *address_of(server), ssl=client_context, server_hostname="localhost"
        )
        accepted = await accepting.next()
        with open(path, "rb") as file:
            if fallback:
                sent = await wait(loop.sendfile(client.transport, file, 100, 2 * MiB))
                assert sent == 2 * MiB
                assert file.tell() == 100 + 2 * MiB
                assert_same_bytes(await accepted.received(2 * MiB), data[100 : 100 + 2 * MiB])
            else:
                with pytest.raises(RuntimeError, match="fallback is disabled"):
                    await loop.sendfile(client.transport, file, fallback=False)
                assert file.tell() == 0
        await client.close()
