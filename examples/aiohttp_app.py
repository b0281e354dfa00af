"""A small aiohttp.web application served on epolloop.

    python examples/aiohttp_app.py [--host 127.0.0.1] [--port 8080] [--file PATH]

Routes:

- ``GET /``: a plain-text hello;
- ``GET /stream``: a chunked response written in pieces (``?chunks=N&size=BYTES``);
- ``POST /echo``: the request body streamed back as it arrives, chunk by chunk;
- ``GET /ws``: a websocket that echoes text and binary messages;
- ``GET /file``: the file given by ``--file`` (or ``$AIOHTTP_APP_FILE``) as a FileResponse,
  which aiohttp sends with ``loop.sendfile()``.

On startup it prints ``listening on http://HOST:PORT/`` with the port actually bound, so
``--port 0`` (any free port) can be used. Ctrl-C stops it gracefully.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from aiohttp import WSMsgType, web

import epolloop

FILE_KEY = web.AppKey("file", Path)


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!\n")


async def stream(request: web.Request) -> web.StreamResponse:
    chunks = int(request.query.get("chunks", "8"))
    size = int(request.query.get("size", "1024"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for index in range(chunks):
        await response.write(bytes([index % 256]) * size)  # each write is one HTTP chunk
    await response.write_eof()
    return response


async def echo(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in request.content.iter_any():  # sent back as it comes, never buffered whole
        await response.write(chunk)
    await response.write_eof()
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def file(request: web.Request) -> web.StreamResponse:
    path = request.app[FILE_KEY]
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no file to serve: {path}\n")
    return web.FileResponse(path)


def make_app(file_path: str | os.PathLike[str] | None = None) -> web.Application:
    """The application; *file_path* (default: $AIOHTTP_APP_FILE, else this script) is what
    GET /file serves."""
    app = web.Application()
    app[FILE_KEY] = Path(file_path or os.environ.get("AIOHTTP_APP_FILE") or __file__)
    app.router.add_get("/", hello)
    app.router.add_get("/stream", stream)
    app.router.add_post("/echo", echo)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/file", file)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--file", default=None, help="what GET /file serves")
    args = parser.parse_args()
    # Bound here rather than by run_app, so that the port actually taken (--port 0) is known
    # before the first request can come.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.create_server((args.host, args.port), family=family)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    web.run_app(
        make_app(args.file),
        sock=sock,
        print=lambda _message: print(f"listening on http://{shown}:{port}/", flush=True),
        loop=epolloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
