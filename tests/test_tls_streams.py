"""TLS over the loop's transports and asyncio's streams, on every loop.

TLS: ssl= on create_server / create_connection / create_unix_* / connect_accepted_socket,
TLS 1.2 and 1.3, certificate checks, the handshake and shutdown timeouts, loop.start_tls on
both sides, the extra info of TLS transports, and a client that vanishes mid-handshake.
Streams: open_connection / start_server and their Unix forms, the StreamReader's reads and
limits, StreamWriter.drain under flow control, write_eof, wait_closed and start_tls.

Certificates come from trustme (a test CA); without it the TLS tests are skipped. Stock
asyncio is the reference. Every wait is on an event; ``wait``'s guard only turns an event
that never comes into a failure; the timeouts under test are short and only ever expire
against a peer that never answers. Every test must leave no file descriptor open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pathlib
import socket
import ssl
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from _helpers import (
    GUARD,
    Recorder,
    address_of,
    connect,
    round_trip,
    serving,
    spin,
    tls_contexts,
    wait,
)

TLS_VERSIONS = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


pytestmark = pytest.mark.usefixtures("no_leaked_fds")


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight of a TLS client handshake for localhost, made in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


# -- TLS connections --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "server_hostname"),
    [("127.0.0.1", "localhost"), ("localhost", None), ("127.0.0.1", None), ("::1", "localhost")],
)
async def test_tls_echo(host: str, server_hostname: str | None) -> None:
    """server_hostname defaults to host; the certificate names localhost, 127.0.0.1 and ::1."""
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    async with serving(loop, host, ssl=server_context) as (server, accepting):
        port = server.sockets[0].getsockname()[1]
        client = await connect(
            loop, host, port, ssl=client_context, server_hostname=server_hostname
        )
        accepted = await accepting.next()
        await round_trip(client, b"over TLS")
        await round_trip(client, os.urandom(200_000))
        assert await client.close() is None
        assert await wait(accepted.lost) is None


@pytest.mark.parametrize("version", list(TLS_VERSIONS), ids=list(TLS_VERSIONS.values()))
async def test_tls_version(version: ssl.TLSVersion) -> None:
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts(minimum=version, maximum=version)
    async with serving(loop, ssl=server_context) as (server, accepting):
        client = await connect(
            loop, *address_of(server), ssl=client_context, server_hostname="localhost"
        )
        accepted = await accepting.next()
        for transport in (client.transport, accepted.transport):
            assert transport.get_extra_info("ssl_object").version() == TLS_VERSIONS[version]
            assert transport.get_extra_info("cipher")[1] == TLS_VERSIONS[version]
        await round_trip(client)
        await client.close()


async def test_tls_extra_info() -> None:
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    async with serving(loop, ssl=server_context) as (server, accepting):
        address = address_of(server)
        client = await connect(loop, *address, ssl=client_context, server_hostname="localhost")
        accepted = await accepting.next()

        transport = client.transport
        sslobj = transport.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert not sslobj.server_side
        assert sslobj.server_hostname == "localhost"
        assert transport.get_extra_info("sslcontext") is client_context
        peercert = transport.get_extra_info("peercert")
        assert peercert == sslobj.getpeercert()
        assert ("DNS", "localhost") in peercert["subjectAltName"]
        cipher = transport.get_extra_info("cipher")
        assert cipher == sslobj.cipher()
        assert len(cipher) == 3
        assert transport.get_extra_info("compression") is None
        assert transport.get_extra_info("peername") == address
        assert transport.get_extra_info("socket").getpeername() == address
        assert transport.get_extra_info("no such thing", 42) == 42

        transport = accepted.transport
        sslobj = transport.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_side
        assert transport.get_extra_info("sslcontext") is server_context
        assert transport.get_extra_info("peercert") is None  # no client certificate asked for
        assert transport.get_extra_info("cipher") == sslobj.cipher()
        assert transport.get_extra_info("sockname") == address
        await client.close()


async def test_tls_client_certificate() -> None:
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts(client_cert=True)
    async with serving(loop, ssl=server_context) as (server, accepting):
        client = await connect(
            loop, *address_of(server), ssl=client_context, server_hostname="localhost"
        )
        accepted = await accepting.next()
        peercert = accepted.transport.get_extra_info("peercert")
        assert ("DNS", "client.epolloop.test") in peercert["subjectAltName"]
        await round_trip(client)
        await client.close()


@pytest.mark.loop_errors  # the server reports the failed handshake
@pytest.mark.parametrize("problem", ["untrusted", "wrong-name"])
async def test_tls_certificate_check_fails(problem: str) -> None:
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    if problem == "untrusted":
        client_context = ssl.create_default_context()  # without the test CA
    hostname = "example.com" if problem == "wrong-name" else "localhost"
    async with serving(loop, ssl=server_context) as (server, _):
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(
                asyncio.Protocol, *address_of(server), ssl=client_context, server_hostname=hostname
            )
        _, client_context = tls_contexts()
        client = await connect(
            loop, *address_of(server), ssl=client_context, server_hostname="localhost"
        )
        await round_trip(client, b"the server goes on")
        await client.close()


@pytest.mark.loop_errors  # the server reports the failed handshake
async def test_tls_version_mismatch() -> None:
    """The server refuses the client's only TLS version. asyncio's server drops the
    connection without flushing its alert, so the client sees ConnectionResetError; a loop
    that sends the alert makes it an SSLError."""
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts(maximum=ssl.TLSVersion.TLSv1_2)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_3
    async with serving(loop, ssl=server_context) as (server, _):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await loop.create_connection(
                asyncio.Protocol,
                *address_of(server),
                ssl=client_context,
                server_hostname="localhost",
            )


async def test_tls_client_handshake_timeout() -> None:
    """A server that never answers the ClientHello: after ssl_handshake_timeout the connection
    is aborted with ConnectionAbortedError."""
    loop = asyncio.get_running_loop()
    _, client_context = tls_contexts()
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,  # the kernel accepts; nobody reads
        pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"),
    ):
        await wait(
            loop.create_connection(
                asyncio.Protocol,
                *listener.getsockname(),
                ssl=client_context,
                server_hostname="localhost",
                ssl_handshake_timeout=0.2,
            )
        )


async def test_tls_server_handshake_timeout() -> None:
    """A client that connects and never starts the handshake is dropped by the server after
    its ssl_handshake_timeout; the server's protocol never hears of it."""
    loop = asyncio.get_running_loop()
    server_context, _ = tls_contexts()
    async with serving(loop, ssl=server_context, ssl_handshake_timeout=0.2) as (server, accepting):
        silent = await connect(loop, *address_of(server))
        await wait(silent.eof)
        await wait(silent.lost)
        assert silent.data == b""
        assert not any(protocol.made.done() for protocol in accepting.protocols)


async def test_tls_shutdown_timeout() -> None:
    """A peer that completes the handshake, then never answers close_notify: the closing
    transport gives up after ssl_shutdown_timeout and connection_lost gets TimeoutError."""
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(GUARD)

        def handshake_then_ignore() -> ssl.SSLSocket:
            conn, _ = listener.accept()
            conn.settimeout(GUARD)
            try:
                return server_context.wrap_socket(conn, server_side=True)  # blocking handshake
            except BaseException:
                conn.close()
                raise

        peer_ready = loop.run_in_executor(None, handshake_then_ignore)
        client = await connect(
            loop,
            *listener.getsockname(),
            ssl=client_context,
            server_hostname="localhost",
            ssl_shutdown_timeout=0.2,
        )
        with await wait(peer_ready):  # the peer: it will not read the client's close_notify
            client.transport.close()
            assert isinstance(await wait(client.lost), TimeoutError)


async def test_a_client_vanishing_mid_handshake_disturbs_no_one() -> None:
    """One client sends half a ClientHello and then its EOF; meanwhile an established TLS
    connection keeps working, the server drops the half-open one, and new clients connect."""
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    async with serving(loop, ssl=server_context) as (server, _):
        address = address_of(server)
        steady = await connect(loop, *address, ssl=client_context, server_hostname="localhost")
        await round_trip(steady)

        hello = client_hello(client_context)
        vanishing = await connect(loop, *address)
        vanishing.transport.write(hello[: len(hello) // 2])
        await round_trip(steady, b"while a handshake hangs")
        vanishing.transport.write_eof()
        await wait(vanishing.eof)  # the server dropped it
        await wait(vanishing.lost)
        assert vanishing.data == b""

        await round_trip(steady, b"after it vanished")
        later = await connect(loop, *address, ssl=client_context, server_hostname="localhost")
        await round_trip(later)
        await later.close()
        await steady.close()


async def test_a_client_reset_mid_handshake_disturbs_no_one() -> None:
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    async with serving(loop, ssl=server_context) as (server, _):
        address = address_of(server)
        steady = await connect(loop, *address, ssl=client_context, server_hostname="localhost")
        hello = client_hello(client_context)
        for _ in range(3):
            vanishing = await connect(loop, *address)
            vanishing.transport.write(hello[:10])
            await round_trip(steady)
            vanishing.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            vanishing.transport.abort()  # a reset, since SO_LINGER is on with a zero timeout
            await wait(vanishing.lost)
            await round_trip(steady)
        later = await connect(loop, *address, ssl=client_context, server_hostname="localhost")
        await round_trip(later)
        await later.close()
        await steady.close()


async def test_tls_over_unix_sockets(sock_dir: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    path = str(sock_dir / "tls.sock")
    received: asyncio.Future[Recorder] = loop.create_future()

    def accept() -> Recorder:
        protocol = Recorder(loop, echo=True, on_made=received.set_result)
        return protocol

    server = await loop.create_unix_server(accept, path, ssl=server_context)
    try:
        _, client = await wait(
            loop.create_unix_connection(
                lambda: Recorder(loop), path, ssl=client_context, server_hostname="localhost"
            )
        )
        accepted = await wait(received)
        assert client.transport.get_extra_info("ssl_object") is not None
        await round_trip(client, b"tls over unix")
        await client.close()
        await wait(accepted.lost)
    finally:
        server.close()
        await wait(server.wait_closed())


async def test_connect_accepted_socket_with_tls(loop_name: str) -> None:
    if loop_name == "uvloop":
        pytest.xfail(
            "uvloop: connect_accepted_socket(ssl=...) returns its SSLProtocol, not the "
            "application's protocol"
        )
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder(loop, echo=True))
        return made[-1]

    with socket.create_server(("127.0.0.1", 0)) as listener:
        client_sock = socket.create_connection(listener.getsockname())
        accepted_sock, _ = listener.accept()
    with client_sock, accepted_sock:
        (transport, accepted), client = await wait(
            asyncio.gather(
                loop.connect_accepted_socket(factory, accepted_sock, ssl=server_context),
                connect(loop, sock=client_sock, ssl=client_context, server_hostname="localhost"),
            )
        )
        assert made == [accepted]
        assert accepted.transport is transport
        assert transport.get_extra_info("ssl_object").server_side
        await round_trip(client, b"accepted elsewhere, over TLS")
        await client.close()
        await wait(accepted.lost)


async def test_tls_bad_arguments(sock_dir: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    _, client_context = tls_contexts()
    with pytest.raises(ValueError, match="server_hostname"):
        await loop.create_unix_connection(
            asyncio.Protocol, str(sock_dir / "none.sock"), ssl=client_context
        )
    with socket.socket() as sock, pytest.raises(ValueError, match="server_hostname"):
        await loop.create_connection(asyncio.Protocol, sock=sock, ssl=client_context)


# -- loop.start_tls ---------------------------------------------------------------------------


class UpgradingServer(asyncio.Protocol):
    """Plain text until the client says STARTTLS: then it answers OK, upgrades the connection
    with loop.start_tls, says 'ready' over TLS and echoes everything after."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: ssl.SSLContext) -> None:
        self.loop = loop
        self.context = context
        self.transport: Any = None
        self.plain_transport: Any = None
        self.upgrading: asyncio.Task[None] | None = None
        self.upgraded: asyncio.Future[Any] = loop.create_future()
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = self.plain_transport = transport

    def data_received(self, data: bytes) -> None:
        if self.upgrading is None:
            assert data == b"STARTTLS\n"
            # Paused before the client can answer OK: its ClientHello waits for start_tls.
            self.transport.pause_reading()
            self.transport.write(b"OK\n")
            self.upgrading = self.loop.create_task(self.upgrade())
        else:
            self.transport.write(data)

    async def upgrade(self) -> None:
        self.transport = await self.loop.start_tls(
            self.transport, self, self.context, server_side=True
        )
        self.transport.write(b"ready\n")
        self.upgraded.set_result(self.transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


async def test_start_tls_on_both_sides() -> None:
    loop = asyncio.get_running_loop()
    server_context, client_context = tls_contexts()
    protocols: list[UpgradingServer] = []

    def factory() -> UpgradingServer:
        protocols.append(UpgradingServer(loop, server_context))
        return protocols[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        client = await connect(loop, *address_of(server))
        plain = client.transport
        assert plain.get_extra_info("ssl_object") is None
        plain.write(b"STARTTLS\n")
        assert await client.received(3) == b"OK\n"
        tls = await wait(loop.start_tls(plain, client, client_context, server_hostname="localhost"))
        client.transport = tls
        assert await client.received(9) == b"OK\nready\n"
        [upgraded] = protocols
        server_tls = await wait(upgraded.upgraded)

        assert tls is not plain
        assert tls.get_protocol() is client
        assert not tls.get_extra_info("ssl_object").server_side
        assert server_tls.get_extra_info("ssl_object").server_side
        assert server_tls.get_extra_info("peername") == tls.get_extra_info("sockname")
        await round_trip(client, b"now encrypted")
        await round_trip(client, os.urandom(100_000))

        tls.close()
        await wait(client.lost)
        await wait(upgraded.lost)
    finally:
        server.close()
        await wait(server.wait_closed())


async def test_start_tls_refuses_a_non_context() -> None:
    loop = asyncio.get_running_loop()
    async with serving(loop) as (server, _):
        client = await connect(loop, *address_of(server))
        with pytest.raises(TypeError):
            await loop.start_tls(client.transport, client, object())
        await client.close()


# -- streams ----------------------------------------------------------------------------------


class Handling:
    """A client_connected_cb for start_server / start_unix_server: runs *body(reader,
    writer)* for each connection, then closes the writer. ``await results(n)`` waits until n
    connections have been handled and returns what the bodies returned."""

    def __init__(self, body: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable]):
        self.body = body
        self.tasks: asyncio.Queue[asyncio.Task[Any]] = asyncio.Queue()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.put_nowait(task)
        try:
            return await self.body(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def results(self, count: int = 1) -> list[Any]:
        return [await wait(await wait(self.tasks.get())) for _ in range(count)]


async def upper_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Echo each line in upper case until EOF; return the number of lines."""
    lines = 0
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
        lines += 1
    return lines


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await wait(writer.wait_closed())


async def test_stream_echo_over_tcp() -> None:
    handling = Handling(upper_echo)
    server = await asyncio.start_server(handling, "127.0.0.1", 0)
    async with server:
        reader, writer = await wait(asyncio.open_connection(*address_of(server)))
        for word in [b"alpha", b"beta", b"gamma" * 10_000]:
            writer.write(word + b"\n")
            assert await wait(reader.readline()) == word.upper() + b"\n"
        assert writer.can_write_eof()
        writer.write_eof()
        assert await wait(reader.read()) == b""
        assert reader.at_eof()
        assert await handling.results() == [3]
        await close_writer(writer)


async def test_stream_echo_over_unix(sock_dir: pathlib.Path) -> None:
    path = str(sock_dir / "streams.sock")
    handling = Handling(upper_echo)
    server = await asyncio.start_unix_server(handling, path)
    async with server:
        reader, writer = await wait(asyncio.open_unix_connection(path))
        assert writer.get_extra_info("peername") == path
        writer.writelines([b"one\n", b"two\n"])
        assert await wait(reader.readexactly(8)) == b"ONE\nTWO\n"
        writer.write_eof()
        assert await wait(reader.read()) == b""
        assert await handling.results() == [2]
        await close_writer(writer)


async def test_stream_reads() -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"line one\nABCDEFpart|sep|tail")

    handling = Handling(send)
    server = await asyncio.start_server(handling, "127.0.0.1", 0)
    async with server:
        reader, writer = await wait(asyncio.open_connection(*address_of(server)))
        assert await wait(reader.readline()) == b"line one\n"
        assert await wait(reader.readexactly(6)) == b"ABCDEF"
        assert await wait(reader.readuntil(b"|sep|")) == b"part|sep|"
        with pytest.raises(asyncio.IncompleteReadError) as caught:
            await wait(reader.readexactly(10))
        assert caught.value.partial == b"tail"
        assert caught.value.expected == 10
        assert reader.at_eof()
        assert await reader.read() == b""
        assert await reader.readline() == b""
        await handling.results()
        await close_writer(writer)


async def test_stream_limits() -> None:
    """limit=16: readuntil refuses a longer chunk and leaves it in the buffer; readline
    turns the overrun into ValueError."""
    proceed: asyncio.Queue[None] = asyncio.Queue()

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * 40 + b"|")
        await proceed.get()
        writer.write(b"y" * 40)  # no newline at all

    handling = Handling(send)
    server = await asyncio.start_server(handling, "127.0.0.1", 0)
    async with server:
        reader, writer = await wait(asyncio.open_connection(*address_of(server), limit=16))
        with pytest.raises(asyncio.LimitOverrunError):
            await wait(reader.readuntil(b"|"))
        assert await wait(reader.readexactly(41)) == b"x" * 40 + b"|"
        proceed.put_nowait(None)
        with pytest.raises(ValueError):
            await wait(reader.readline())
        await handling.results()
        await close_writer(writer)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="readuntil() takes a tuple from 3.13")
async def test_stream_readuntil_several_separators() -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"a\r\nb\nc")

    handling = Handling(send)
    server = await asyncio.start_server(handling, "127.0.0.1", 0)
    async with server:
        reader, writer = await wait(asyncio.open_connection(*address_of(server)))
        assert await wait(reader.readuntil((b"\n", b"\r\n"))) == b"a\r\n"
        assert await wait(reader.readuntil((b"\n", b"\r\n"))) == b"b\n"
        assert await wait(reader.read()) == b"c"
        await handling.results()
        await close_writer(writer)


async def test_drain_waits_while_the_peer_does_not_read() -> None:
    """Flow control end to end: 8 MiB written to a peer that does not read fills the kernel
    buffers (kept small) and the transport's past its high-water mark, so drain() waits;
    once the peer reads, drain() returns and every byte arrives."""
    loop = asyncio.get_running_loop()
    payload = os.urandom(8 * 1024 * 1024)
    release = loop.create_future()

    async def read_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release
        data = await reader.readexactly(len(payload))
        writer.write(hashlib.sha256(data).hexdigest().encode() + b"\n")
        await writer.drain()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # accepted sockets too
    listener.bind(("127.0.0.1", 0))
    handling = Handling(read_later)
    server = await asyncio.start_server(handling, sock=listener)
    async with server:
        client_sock = socket.socket()
        client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        client_sock.connect(listener.getsockname())
        reader, writer = await wait(asyncio.open_connection(sock=client_sock))
        writer.transport.set_write_buffer_limits(high=256 * 1024)
        writer.write(payload)
        draining = loop.create_task(writer.drain())
        await spin(10)
        assert not draining.done()
        assert writer.transport.get_write_buffer_size() > 256 * 1024
        release.set_result(None)
        await wait(draining)
        digest = await wait(reader.readline())
        assert digest == hashlib.sha256(payload).hexdigest().encode() + b"\n"
        await handling.results()
        await close_writer(writer)


async def test_write_eof_half_closes() -> None:
    async def count_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        data = await reader.read()  # until the client's EOF
        writer.write(b"got %d bytes" % len(data))
        return data

    handling = Handling(count_then_answer)
    server = await asyncio.start_server(handling, "127.0.0.1", 0)
    async with server:
        reader, writer = await wait(asyncio.open_connection(*address_of(server)))
        writer.write(b"abc" * 1000)
        writer.write_eof()
        assert not writer.is_closing()
        assert await wait(reader.read()) == b"got 3000 bytes"
        assert await handling.results() == [b"abc" * 1000]
        await close_writer(writer)


async def test_wait_closed() -> None:
    handling = Handling(lambda reader, writer: reader.read())
    server = await asyncio.start_server(handling, "127.0.0.1", 0)
    async with server:
        reader, writer = await wait(asyncio.open_connection(*address_of(server)))
        writer.write(b"bye")
        transport = writer.transport
        writer.close()
        assert writer.is_closing()
        assert transport.is_closing()
        await wait(writer.wait_closed())
        await wait(writer.wait_closed())  # again: returns at once
        assert await handling.results() == [b"bye"]
        assert await wait(reader.read()) == b""


async def test_streams_over_tls() -> None:
    server_context, client_context = tls_contexts()
    handling = Handling(upper_echo)
    server = await asyncio.start_server(handling, "127.0.0.1", 0, ssl=server_context)
    async with server:
        reader, writer = await wait(
            asyncio.open_connection(
                *address_of(server), ssl=client_context, server_hostname="localhost"
            )
        )
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"secret\n")
        assert await wait(reader.readline()) == b"SECRET\n"
        await close_writer(writer)
        assert await handling.results() == [1]


async def test_stream_writer_start_tls() -> None:
    server_context, client_context = tls_contexts()

    async def upgrade_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.start_tls(server_context)
        assert writer.get_extra_info("ssl_object").server_side
        return await upper_echo(reader, writer)

    handling = Handling(upgrade_then_echo)
    server = await asyncio.start_server(handling, "127.0.0.1", 0)
    async with server:
        reader, writer = await wait(asyncio.open_connection(*address_of(server)))
        writer.write(b"STARTTLS\n")
        assert await wait(reader.readline()) == b"OK\n"
        assert writer.get_extra_info("ssl_object") is None
        await wait(writer.start_tls(client_context, server_hostname="localhost"))
        assert not writer.get_extra_info("ssl_object").server_side
        writer.write(b"after the upgrade\n")
        assert await wait(reader.readline()) == b"AFTER THE UPGRADE\n"
        await close_writer(writer)
        assert await handling.results() == [1]
