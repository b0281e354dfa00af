"""The article's non-blocking HTTP server ("From Sockets To Epoll"), as a plain asyncio Protocol
on epolloop.

What the C version does by hand, the loop and the transport do here: epoll, non-blocking
accept, and writes the kernel would not take at once (queued, flushed when writable). What
stays the server's own job is what the article warns about:

- partial reads: a request may arrive in pieces, or several in one read (pipelining), so bytes
  are gathered until a whole request (head and Content-Length body) is there;
- keep-alive: HTTP/1.1 keeps the connection open unless the client says "Connection: close";
  HTTP/1.0 closes unless it says "keep-alive";
- timeouts: a connection idle for --idle-timeout seconds is closed, so a client that goes
  silent does not hold its slot forever;
- bounded buffers: a request head larger than 16 KiB is refused (431), and the server stops
  reading from a client that does not read its responses (pause_writing/resume_writing).

    python examples/http_server.py [--host 127.0.0.1] [--port 8080] [--idle-timeout 15]
"""

from __future__ import annotations

import argparse
import asyncio

import epolloop

MAX_HEAD = 16 * 1024
BODY = b"Hello, World!\n"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Request Header Fields Too Large"}


class HttpConnection(asyncio.Protocol):
    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.restart_idle_timer()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.restart_idle_timer()
        while self.transport is not None and not self.transport.is_closing():
            if not self.answer_one_request():
                break

    def answer_one_request(self) -> bool:
        """Answer the first whole request in the buffer; False if it is not all here yet."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.respond(431, keep_alive=False)
            return False
        try:
            request_line, *header_lines = self.buffer[:head_end].decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body_length = int(headers.get("content-length", "0"))
        except ValueError:
            self.respond(400, keep_alive=False)
            return False
        request_end = head_end + 4 + body_length
        if len(self.buffer) < request_end:
            return False  # the body is still on its way
        del self.buffer[:request_end]
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        self.respond(200 if (method, target) == ("GET", "/") else 404, keep_alive)
        return True

    def respond(self, status: int, keep_alive: bool) -> None:
        assert self.transport is not None
        body = BODY if status == 200 else f"{REASONS[status]}\n".encode()
        self.transport.write(
            f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: text/plain\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
            + body
        )
        if not keep_alive:
            self.transport.close()  # after the response has been flushed

    def restart_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(self.idle_timeout, self.close_idle)

    def close_idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # no new requests while responses pile up

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.transport = None


async def serve(host: str, port: int, idle_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(idle_timeout), host, port)
    bound = server.sockets[0].getsockname()
    print(f"listening on http://{bound[0]}:{bound[1]}/", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--idle-timeout", type=float, default=15.0)
    args = parser.parse_args()
    try:
        epolloop.run(serve(args.host, args.port, args.idle_timeout))
    except KeyboardInterrupt:
        pass  # Ctrl-C: the server closed its connections on the way out


if __name__ == "__main__":
    main()
