"""The examples run as the README says, and do what they claim.

examples/http_server.py, the article's server as an asyncio Protocol on epolloop, is started as
a real process and spoken to over real sockets: requests in pieces and pipelined on one
kept-alive connection, HTTP/1.0 and "Connection: close", a bad request, and an idle client
that the server drops after its idle timeout.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import GUARD, Child

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Type: text/plain\r\n"


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, int]]:
    command = [sys.executable, str(EXAMPLES / "http_server.py"), "--port", "0"]
    with Child([*command, "--idle-timeout", "0.5"]) as server:
        line = server.next_line()
        assert line.startswith("listening on http://"), line
        host, port = line.removeprefix("listening on http://").rstrip("/").rsplit(":", 1)
        yield host, int(port)


def _connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=GUARD)


def _response(sock: socket.socket, pending: bytearray) -> bytes:
    """The next whole response on *sock* (head and Content-Length body)."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(pending)!r}"
        pending += chunk
    head, _, _ = bytes(pending).partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    end = len(head) + 4 + length
    while len(pending) < end:
        pending += sock.recv(65536)
    response = bytes(pending[:end])
    del pending[:end]
    return response


def test_keep_alive_with_requests_in_pieces_and_pipelined(http_server: tuple[str, int]) -> None:
    with _connect(http_server) as sock:
        pending = bytearray()
        for piece in (b"GET / HT", b"TP/1.1\r\nHost: x\r\n", b"\r\n"):  # one request, 3 reads
            sock.sendall(piece)
        assert _response(sock, pending).startswith(OK + b"Connection: keep-alive")
        sock.sendall(b"GET / HTTP/1.1\r\n\r\nGET /missing HTTP/1.1\r\n\r\n")  # pipelined
        assert _response(sock, pending).endswith(b"\r\n\r\nHello, World!\n")
        assert _response(sock, pending).startswith(b"HTTP/1.1 404 Not Found\r\n")
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")  # the body in pieces
        sock.sendall(b"cde")
        assert _response(sock, pending).startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert not pending


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"],
    ids=["connection-close", "http-1.0"],
)
def test_closes_after_the_response_when_asked(
    http_server: tuple[str, int], request_bytes: bytes
) -> None:
    with _connect(http_server) as sock:
        sock.sendall(request_bytes)
        pending = bytearray()
        assert _response(sock, pending).startswith(OK + b"Connection: close")
        assert sock.recv(100) == b""  # then the server closes


def test_bad_request_gets_400_and_a_close(http_server: tuple[str, int]) -> None:
    with _connect(http_server) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert _response(sock, bytearray()).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert sock.recv(100) == b""


def test_an_idle_client_is_dropped(http_server: tuple[str, int]) -> None:
    with _connect(http_server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # half a request, then silence
        assert sock.recv(100) == b""  # closed by the server's idle timer (0.5 s)
