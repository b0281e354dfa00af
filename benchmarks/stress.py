"""python -m benchmarks stress: a server on each loop under many connections and hostile
peers for a given time; what held.

For each loop, one measuring process runs an echo server (asyncio.Protocol) and, from that
same loop, starts two clients as subprocesses:

    good      the C load client: CONNECTIONS connections exchanging 64-byte messages for the
              whole time, every byte checked (it fails at the first wrong or missing byte)
    hostile   peers that misbehave in turn, as fast as they can: connect and close at once;
              reset (SO_LINGER 0) halfway through sending; send a lot and never read, then
              reset; half-close and read the echo to the end

It reports the good client's round trips and verified bytes, the hostile peers of each kind,
what the server's exception handler saw, and whether the loop was still answering at the end.

    python -m benchmarks stress [--seconds 10] [--connections 10000] [--loops ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from ._loops import LoopFactory, select_loops
from ._machine import compile_tools
from ._report import print_table
from ._suite import RunFailed, run_in_child

MESSAGE = 64
HOSTILE_KINDS = ("connect-close", "reset-mid-send", "never-read", "half-close")
PATIENCE = 10.0  # seconds a hostile peer waits for the server before calling it stuck
NEVER_READ_MAX = 256 << 20  # bytes a never-reading peer may send before flow control must bite


class _Echo(asyncio.Protocol):
    """Echo with flow control: a peer that does not read stops being read from, so the
    server's buffers stay bounded."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def _stress(seconds: float, connections: int, client: str) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    errors: collections.Counter[str] = collections.Counter()
    loop.set_exception_handler(lambda _, context: errors.update([context["message"]]))
    server = await loop.create_server(_Echo, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    good = await asyncio.create_subprocess_exec(
        client, "echo", f"127.0.0.1:{port}", str(connections), str(MESSAGE), str(seconds), "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    hostile = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.stress", "--hostile", str(port), str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    (good_out, good_err), (hostile_out, hostile_err) = await asyncio.wait_for(
        asyncio.gather(good.communicate(), hostile.communicate()), seconds + 2 * PATIENCE
    )
    # Still answering after all that: one more connection, one more round trip.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"still there?")
    alive = await asyncio.wait_for(reader.readexactly(12), 10) == b"still there?"
    writer.close()
    server.close()
    if good.returncode != 0:
        raise RunFailed(f"good client: {good_err.decode().strip()}")
    if hostile.returncode != 0:
        raise RunFailed(f"hostile peers: {hostile_err.decode().strip().splitlines()[-1]}")
    round_trips, verified = map(int, good_out.split())
    hostile_counts = map(int, hostile_out.split())
    return {
        "connections": connections,
        "round_trips": round_trips,
        "bytes_verified": verified,
        **dict(zip(HOSTILE_KINDS, hostile_counts, strict=True)),
        "errors_reported": sum(errors.values()),
        "alive": int(alive),
    }


def run(make_loop: LoopFactory, seconds: float, connections: int, client: str):
    """The measuring process."""
    loop = make_loop()
    try:
        return loop.run_until_complete(_stress(seconds, connections, client))
    finally:
        loop.close()


def _hostile(port: int, seconds: float) -> None:
    """The hostile peers, in turn until the time is up; prints how many of each kind."""
    rng = random.Random(port)
    counts = dict.fromkeys(HOSTILE_KINDS, 0)
    reset = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kind = rng.choice(HOSTILE_KINDS)
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as peer:
            if kind == "reset-mid-send":
                peer.sendall(b"x" * rng.randrange(1, 65536))
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            elif kind == "never-read":
                peer.setblocking(False)  # (the timeout returns with the next peer)
                try:  # until the buffers both ways are full and the server stops reading
                    for _ in range(NEVER_READ_MAX // 65536):
                        peer.send(b"y" * 65536)
                    raise SystemExit("a peer that never reads was never pushed back")
                except BlockingIOError:
                    pass
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            elif kind == "half-close":
                payload = b"z" * rng.randrange(1, 8192)
                peer.sendall(payload)
                peer.shutdown(socket.SHUT_WR)
                try:
                    echoed = b"".join(iter(lambda: peer.recv(65536), b""))
                except TimeoutError:
                    message = f"half-closed peer: no echo or EOF in {PATIENCE:g} s"
                    raise SystemExit(message) from None
                if echoed != payload:
                    raise SystemExit("half-closed peer: echo mismatch")
        counts[kind] += 1
    print(*counts.values())


def main(argv: list[str]) -> None:
    if argv[:1] == ["--hostile"]:
        _hostile(int(argv[1]), float(argv[2]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks stress", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per loop (10)")
    parser.add_argument("--connections", type=int, default=10_000, help="good ones (10,000)")
    parser.add_argument("--loops", metavar="NAME,...", help="loops to stress (all available)")
    args = parser.parse_args(argv)
    loops = select_loops(args.loops)
    rows, failures = [], []
    with tempfile.TemporaryDirectory(prefix="epolloop-stress-") as directory:
        tools = compile_tools(Path(directory))
        if tools is None:
            raise SystemExit("the stress command needs a C compiler (cc) for its client")
        for loop in loops:
            print(f"stressing {loop} for {args.seconds:g} s ...", file=sys.stderr, flush=True)
            try:
                held = run_in_child(
                    run,
                    loop,
                    seconds=args.seconds,
                    connections=args.connections,
                    client=str(tools["load_client"]),
                )
            except RunFailed as exc:
                rows.append([loop, "failed", "", "", "", "", ""])
                failures.append(f"{loop} failed: {str(exc).rsplit('RunFailed: ', 1)[-1]}")
                continue
            hostile = ", ".join(f"{held[kind]:,} {kind}" for kind in HOSTILE_KINDS)
            rows.append(
                [
                    loop,
                    f"{held['connections']:,}",
                    f"{held['round_trips']:,}",
                    f"{held['bytes_verified'] / 1e6:,.1f} MB",
                    hostile,
                    f"{held['errors_reported']:,}",
                    "yes" if held["alive"] else "NO",
                ]
            )
    headers = ["loop", "connections", "round trips", "verified", "hostile peers", "errors"]
    print_table([*headers, "alive"], rows, markdown=False)
    for failure in failures:
        print(failure)


if __name__ == "__main__":  # the hostile peers' process: python -m benchmarks.stress --hostile
    main(sys.argv[1:])
