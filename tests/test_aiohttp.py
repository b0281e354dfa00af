"""aiohttp, client and server, on every loop.

The example application (examples/aiohttp_app.py, served on epolloop) runs in a real process
and answers an aiohttp.ClientSession on the loop under test: a hello, a chunked response read
chunk by chunk, a 4 MiB request body streamed up from an async generator and echoed back, a
websocket echoing text and binary messages both ways, and an 8 MiB FileResponse (sent with
the server loop's sendfile) checked by SHA-256. At the end Ctrl-C stops it cleanly: exit
status 0, nothing on stderr (where it would log any error at WARNING or above).

Then aiohttp's server runs in the test's own loop (AppRunner and TCPSite on 127.0.0.1, port
0): keep-alive pooling (sequential requests share one connection), 50 concurrent requests, a
FileResponse and a Range of it (the loop under test's sendfile, with an offset), the same over
TLS, and a graceful shutdown with a request in flight: runner.cleanup() stops listening at
once, lets the in-flight handler finish within the shutdown timeout, and cancels it past that
(the client then sees the server disconnect), with nothing reported to the loop's exception
handler.

Besides the conftest's check of the 'asyncio' logger, a test fails if aiohttp's own loggers
report anything at WARNING or above.

Every wait is on an event; GUARD only turns an event that never comes into a failure. The one
timeout under test (the shutdown timeout) only ever expires against a handler that never
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _helpers import GUARD, Child, tls_contexts, wait
from aiohttp import WSMsgType, web

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = aiohttp.ClientTimeout(total=GUARD)
MIB = 1024 * 1024

pytestmark = pytest.mark.usefixtures("no_leaked_fds")


@pytest.fixture(autouse=True)
def _no_aiohttp_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """aiohttp logs what goes wrong in its server and client to its own loggers (the conftest
    watches only 'asyncio'): fail on anything at WARNING or above there."""
    caplog.set_level(logging.WARNING, logger="aiohttp")
    yield
    logged = [
        f"{record.name}: {record.getMessage()}"
        for phase in ("setup", "call")  # caplog.records would be the teardown's
        for record in caplog.get_records(phase)
        if record.name.startswith("aiohttp") and record.levelno >= logging.WARNING
    ]
    assert not logged, "aiohttp logged:\n" + "\n".join(logged)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _random_file(directory: Path, size: int) -> tuple[Path, str]:
    """A file of *size* random bytes in *directory*: (its path, its SHA-256 hex digest)."""
    data = os.urandom(size)
    path = directory / f"random-{size}.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


# -- the example application, in its own process ----------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _random_file(tmp_path_factory.mktemp("aiohttp"), 8 * MIB)


@pytest.fixture(scope="module")
def app_url(big_file: tuple[Path, str]) -> Iterator[str]:
    """The base URL of examples/aiohttp_app.py running in a child process on a free port."""
    command = [sys.executable, str(EXAMPLES / "aiohttp_app.py"), "--port", "0"]
    with Child([*command, "--file", str(big_file[0])]) as server:
        line = server.next_line()
        assert line.startswith("listening on http://"), line
        yield line.removeprefix("listening on ")
        # Ctrl-C: run_app's signal handler stops it gracefully; anything the server logged at
        # WARNING or above (an error in a handler, in the loop) would be on its stderr
        server.interrupt()
        assert server.finish() == (0, [], "")


@contextlib.asynccontextmanager
async def client(**kwargs: Any) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT, **kwargs) as session:
        yield session


async def test_example_hello(app_url: str) -> None:
    async with client() as session, session.get(app_url) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert await response.text() == "Hello, World!\n"


async def test_example_chunked_response_read_in_pieces(app_url: str) -> None:
    chunks, size = 16, 64 * 1024
    url = f"{app_url}stream?chunks={chunks}&size={size}"
    async with client() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
        http_chunks: list[bytes] = []
        current = bytearray()
        # iter_chunks() yields what has arrived, flagging where each HTTP chunk ends (an extra
        # empty piece flagged as an end may come too, depending on how reads fall)
        async for data, end_of_http_chunk in response.content.iter_chunks():
            current += data
            if end_of_http_chunk and current:
                http_chunks.append(bytes(current))
                current.clear()
    assert not current
    # each write() of the handler arrived as one HTTP chunk
    assert http_chunks == [bytes([index]) * size for index in range(chunks)]


async def test_example_streams_a_request_body_back(app_url: str) -> None:
    """A 4 MiB body sent from an async generator while the echo comes back: aiohttp writes the
    body and reads the response at the same time, so neither side buffers it whole."""
    body = os.urandom(4 * MIB)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100_000):  # not a multiple of any buffer size
            yield body[start : start + 100_000]

    async with client() as session, session.post(f"{app_url}echo", data=pieces()) as response:
        assert response.status == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        received = bytearray()
        async for chunk in response.content.iter_chunked(256 * 1024):
            received += chunk
    assert len(received) == len(body)
    assert received == body


async def test_example_websocket_both_ways(app_url: str) -> None:
    messages: list[str | bytes] = ["hello", b"\x00\x01\x02", "é" * 1000, os.urandom(200_000), ""]
    async with client() as session, session.ws_connect(f"{app_url}ws") as ws:
        for message in messages:  # one at a time: each echo before the next message
            if isinstance(message, str):
                await ws.send_str(message)
                reply = await wait(ws.receive())
                assert (reply.type, reply.data) == (WSMsgType.TEXT, message)
            else:
                await ws.send_bytes(message)
                reply = await wait(ws.receive())
                assert (reply.type, reply.data) == (WSMsgType.BINARY, message)
        for message in messages:  # then all of them at once: echoed in order
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
        for message in messages:
            assert (await wait(ws.receive())).data == message
        await ws.close()
        assert ws.closed
        assert ws.close_code == aiohttp.WSCloseCode.OK


async def test_example_file_response(app_url: str, big_file: tuple[Path, str]) -> None:
    """8 MiB through the server loop's sendfile(), received in full and unaltered."""
    path, digest = big_file
    async with client() as session, session.get(f"{app_url}file") as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == path.stat().st_size
        sha = hashlib.sha256()
        async for chunk in response.content.iter_chunked(1 * MIB):
            sha.update(chunk)
    assert sha.hexdigest() == digest


# -- aiohttp's server in the loop under test --------------------------------------------------


@contextlib.asynccontextmanager
async def serving(
    routes: dict[str, Handler], **site_kwargs: Any
) -> AsyncIterator[tuple[web.AppRunner, str]]:
    """An application with *routes* (any method) served on 127.0.0.1 (a free port) in this loop:
    (its runner, its base URL, http or https as *site_kwargs* has an ssl_context)."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=site_kwargs.pop("shutdown_timeout", 60.0)
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, **site_kwargs)
        await site.start()
        scheme = "https" if site_kwargs.get("ssl_context") else "http"
        yield runner, f"{scheme}://127.0.0.1:{site.port}/"
    finally:
        await runner.cleanup()


async def test_keep_alive_reuses_one_connection() -> None:
    peers: list[tuple[str, int]] = []

    async def whoami(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text=str(len(peers)))

    async with serving({"/": whoami}) as (_, url), client() as session:
        for count in range(1, 6):
            async with session.get(url) as response:
                assert response.status == 200
                assert await response.text() == str(count)
    assert len(peers) == 5
    assert len(set(peers)) == 1  # one client port: one TCP connection for all five


async def test_concurrent_requests() -> None:
    """50 requests in flight at once: every handler waits until all 50 have arrived, so the
    test only passes if the server handles them concurrently, each on its own connection."""
    count = 50
    arrived: list[tuple[str, int]] = []
    all_arrived = asyncio.Event()

    async def gather_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        arrived.append(request.transport.get_extra_info("peername"))
        if len(arrived) == count:
            all_arrived.set()
        await all_arrived.wait()
        return web.Response(text=request.query["n"])

    async def fetch(session: aiohttp.ClientSession, url: str, index: int) -> str:
        async with session.get(url, params={"n": str(index)}) as response:
            assert response.status == 200
            return await response.text()

    async with serving({"/": gather_up}) as (_, url), client() as session:
        replies = await wait(asyncio.gather(*(fetch(session, url, n) for n in range(count))))
    assert replies == [str(n) for n in range(count)]
    assert len(set(arrived)) == count


async def test_file_response_and_range(tmp_path: Path) -> None:
    """FileResponse sends with this loop's sendfile(): the whole file, then a Range of it (an
    offset and a count that are not multiples of the page size)."""
    path, digest = _random_file(tmp_path, 3 * MIB + 12345)
    data = path.read_bytes()

    async def send_file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    async with serving({"/file": send_file}) as (_, url), client() as session:
        async with session.get(f"{url}file") as response:
            assert response.status == 200
            assert hashlib.sha256(await response.read()).hexdigest() == digest
        start, end = 1_000_001, 2_500_002
        async with session.get(f"{url}file", headers={"Range": f"bytes={start}-{end}"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
            assert await response.read() == data[start : end + 1]


async def test_tls(tmp_path: Path) -> None:
    """HTTPS: a small response, a FileResponse (over TLS sendfile falls back to writes) and
    keep-alive, with the TLS details seen on both sides."""
    server_context, client_context = tls_contexts()
    path, digest = _random_file(tmp_path, 2 * MIB)
    seen: list[tuple[bool, str, tuple[str, int]]] = []

    async def hello(request: web.Request) -> web.Response:
        assert request.transport is not None
        seen.append(
            (
                request.secure,
                request.transport.get_extra_info("ssl_object").version(),
                request.transport.get_extra_info("peername"),
            )
        )
        return web.Response(text="secure hello")

    async def send_file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    routes = {"/": hello, "/file": send_file}
    async with serving(routes, ssl_context=server_context) as (_, url):
        assert url.startswith("https://")
        connector = aiohttp.TCPConnector(ssl=client_context)
        async with client(connector=connector) as session:
            for _ in range(2):
                async with session.get(url) as response:
                    assert response.status == 200
                    assert await response.text() == "secure hello"
            async with session.get(f"{url}file") as response:
                assert hashlib.sha256(await response.read()).hexdigest() == digest
        # the client did check the server's certificate: without the test CA it is refused
        async with client() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(url)
    assert [secure for secure, _, _ in seen] == [True, True]
    assert seen[0][1] in ("TLSv1.2", "TLSv1.3")
    assert seen[0][2] == seen[1][2]  # kept alive over TLS too


class _Blocked:
    """A handler that signals when it starts, then waits for ``release``; records whether it
    finished or was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.outcome: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.outcome.append("cancelled")
            raise
        self.outcome.append("finished")
        return web.Response(text="finished")


def _record_loop_errors() -> list[dict[str, Any]]:
    """Replace the running loop's exception handler by one that records what it is given."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    return errors


async def test_graceful_shutdown_lets_the_request_in_flight_finish() -> None:
    errors = _record_loop_errors()
    blocked = _Blocked()
    async with serving({"/": blocked.handle}) as (runner, url), client() as session:
        request = asyncio.ensure_future(session.get(url))
        await wait(blocked.started.wait())
        cleanup = asyncio.ensure_future(runner.cleanup())
        # cleanup stops listening first: a new connection is refused while the handler waits
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession(timeout=TIMEOUT) as other:
                await other.get(url)
        assert not cleanup.done()
        assert not request.done()
        blocked.release.set()
        async with await wait(request) as response:
            assert response.status == 200
            assert await response.text() == "finished"
        await wait(cleanup)
    assert blocked.outcome == ["finished"]
    assert errors == []


async def test_graceful_shutdown_cancels_a_handler_past_the_timeout() -> None:
    errors = _record_loop_errors()
    blocked = _Blocked()
    routes = {"/": blocked.handle}
    async with serving(routes, shutdown_timeout=0.05) as (runner, url), client() as session:
        # a POST: aiohttp's client retries an idempotent request (GET) once on a fresh
        # connection when the server disconnects, and would then find nobody listening
        request = asyncio.ensure_future(session.post(url))
        await wait(blocked.started.wait())
        await wait(runner.cleanup())  # never released: cancelled after 0.05 s
        assert blocked.outcome == ["cancelled"]
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await wait(request)
    assert errors == []
