"""HTTP/1.1 keep-alive "hello world": server CPU per request.

Servers (each an ordinary asyncio program, the same code on every loop):

    httptools   a raw asyncio.Protocol around httptools' request parser, one fixed response
    aiohttp     aiohttp.web with one route returning web.Response(text=...), no access log

The load comes from wrk when it is installed (and the run lasts whole seconds), otherwise from
the suite's own C client (benchmarks/ceiling/load_client.c in http mode: each connection sends
a GET, reads the whole response by its Content-Length, checks the status, sends the next);
``--http-client`` chooses. On two cores wrk saturates first (about 80,000 requests/s here,
where the C client drives the ceiling server at 140,000), so loops differ less under it.
The C ceiling is benchmarks/ceiling/server.c in http mode.
"""

from __future__ import annotations

import asyncio
import re
from functools import partial
from typing import Any

from ._suite import Context, Figure, RunFailed, Workload, loaded, server_command

CONNECTIONS = 10
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"

_keep: list[Any] = []  # the aiohttp runner, kept alive while serving


class HttptoolsProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools

        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.error = httptools.HttpParserError

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.error:
            self.transport.close()

    def on_message_complete(self) -> None:  # httptools' callback: one request parsed
        self.transport.write(RESPONSE)


async def start(server: str, address: str) -> str:
    """Serve *server* on *address* ("127.0.0.1:0"); the port, as the C server prints it."""
    host, _, port = address.rpartition(":")
    if server == "httptools":
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(HttptoolsProtocol, host, int(port), backlog=4096)
        return str(listener.sockets[0].getsockname()[1])
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port), backlog=4096).start()
    _keep.append(runner)
    return str(runner.addresses[0][1])


def _requests(stdout: str) -> int:
    """Requests completed, from wrk's report or the C client's line."""
    if "Non-2xx" in stdout:
        raise RunFailed("wrk saw error responses: " + " ".join(stdout.split()))
    found = re.search(r"(\d+) requests in", stdout)
    return int(found.group(1) if found else stdout.split()[0])


def measure(server: str, ctx: Context, loop: str) -> dict[str, float]:
    assert ctx.tools is not None
    wrk = ctx.wrk
    threads = min(ctx.cores.client_threads, CONNECTIONS)

    def client(port: str, seconds: float) -> list[str]:
        if wrk and seconds >= 1:  # wrk counts its duration in whole seconds
            url = f"http://127.0.0.1:{port}/"
            return [wrk, f"-t{threads}", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", url]
        tool = str(ctx.tools["load_client"])  # type: ignore[index]
        address = f"127.0.0.1:{port}"
        return [tool, "http", address, str(CONNECTIONS), "/", f"{seconds:.3f}", str(threads)]

    return loaded(
        server_command(loop, "http", start, ctx, server=server, address="127.0.0.1:0"),
        client,
        _requests,
        ctx,
    )


def workloads() -> list[Workload]:
    return [
        Workload(
            family="http",
            name=f"http {server} x{CONNECTIONS}",
            figures=(Figure("cpu_us", "server CPU µs/request"),),
            measure=partial(measure, server),
            ceiling=f"http {CONNECTIONS}",
            default=server == "httptools",
            needs_tools=True,
            note="requests/s",
        )
        for server in ("httptools", "aiohttp")
    ]
