"""Fork from inside a running loop, on every loop: os.fork() in a callback or a coroutine, and
multiprocessing's "fork" start method. The child makes and runs a new loop of the same kind
(timers, a socketpair round trip, a wait for the parent's go-ahead), reports to the parent and
exits; the parent's loop meanwhile keeps firing its timers in order and keeps its established
TCP connection carrying checksummed data, before the fork, while the child lives and after it
has exited.

Stock asyncio is the reference. What asyncio defines for a forked child, and these tests
check on every loop: the child has no running loop (asyncio._get_running_loop() is None and
get_running_loop() raises; from 3.12 an at-fork hook resets it, before that its pid check),
so it can run a loop of its own. What a child does to the loop it inherited is left undefined
by asyncio (its loops share the parent's epoll instance, and unregistering there unregisters
for the parent): that epolloop leaves the parent alone is a guarantee of its own, tested on
epolloop only.

A child always leaves through os._exit (in a finally), so it never runs pytest's teardown. On
3.12+ os.fork() warns (DeprecationWarning) when the process has threads, as an executor's
leave behind: the module ignores that warning and no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from _helpers import GUARD, Recorder, address_of, connect, round_trip, serving, wait

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

pytestmark = [
    pytest.mark.usefixtures("no_leaked_fds"),
    pytest.mark.filterwarnings(
        r"ignore:This process \(pid=\d+\) is multi-threaded, use of fork\(\):DeprecationWarning"
    ),
]

KiB = 1024
SPACING = 0.003  # seconds between the deadlines of a Ticker's timers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def qualified_name(loop: asyncio.AbstractEventLoop) -> str:
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


async def read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while chunk := await loop.sock_recv(sock, 64 * KiB):
        received += chunk
    return bytes(received)


# -- the parent's own work --------------------------------------------------------------------


class Ticker:
    """*count* timers whose deadlines are SPACING apart, scheduled in shuffled order; they
    must all fire, in deadline order.

    Only timers still in the future when scheduled are held to that order: a deadline already
    past is a call_soon for uvloop (which then runs it in call order, before the others), and
    on a loaded machine the scheduling itself can take longer than the first deadlines. Within
    LATE_MARGIN of now counts as past (uvloop's clock and delays have millisecond steps). On
    uvloop the order is not checked at all: under load (CI runs three Pythons at once) it has
    fired two timers 3 ms apart the wrong way round."""

    LATE_MARGIN = 0.002

    def __init__(self, loop: asyncio.AbstractEventLoop, seed: int, count: int = 8) -> None:
        self.count = count
        self.fired: list[int] = []
        self.late: set[int] = set()
        self.done: asyncio.Future[None] = loop.create_future()
        self.in_order = not qualified_name(loop).startswith("uvloop.")
        order = list(range(count))
        random.Random(seed).shuffle(order)
        start = loop.time()
        for index in order:
            deadline = start + (index + 2) * SPACING
            if deadline - loop.time() < self.LATE_MARGIN:
                self.late.add(index)
            loop.call_at(deadline, self._fire, index)

    def _fire(self, index: int) -> None:
        self.fired.append(index)
        if len(self.fired) == self.count:
            settle(self.done, None)

    def problem(self) -> str | None:
        """None if every timer fired, in order; else what went wrong."""
        on_time = [index for index in self.fired if index not in self.late]
        if sorted(self.fired) != list(range(self.count)) or (
            self.in_order and on_time != sorted(on_time)
        ):
            return f"timers fired in order {self.fired} (scheduled late: {sorted(self.late)})"
        return None

    async def check(self) -> None:
        await wait(self.done)
        assert self.problem() is None, self.problem()


class Exchange:
    """An established connection to an echo server: each block sent must come back whole,
    and in the end the SHA-256 of all that came back must be that of all that was sent."""

    def __init__(self, client: Recorder) -> None:
        self.client = client
        self.sent = hashlib.sha256()
        self.count = 0

    async def block(self, seed: int) -> None:
        data = random.Random(seed).randbytes(64 * KiB)
        assert self.client.transport is not None
        self.client.transport.write(data)
        self.sent.update(data)
        self.count += len(data)
        await self.client.received(self.count)

    def check(self) -> None:
        assert len(self.client.data) == self.count
        assert sha256(bytes(self.client.data)) == self.sent.hexdigest()


async def carry_on(exchange: Exchange, seed: int) -> None:
    """One round of the parent's own work: a block echoed back while a batch of timers fires,
    in order."""
    ticker = Ticker(asyncio.get_running_loop(), seed)
    await exchange.block(seed)
    await ticker.check()


# -- the child's work -------------------------------------------------------------------------


def running_loop_report() -> dict[str, Any]:
    """What a freshly forked child sees of the running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        get_running_loop = "raised"
    else:
        get_running_loop = "returned"
    return {
        "_get_running_loop": repr(asyncio._get_running_loop()),
        "get_running_loop": get_running_loop,
    }


async def child_work(go_ahead: socket.socket) -> dict[str, Any]:
    """The child's small job on its own new loop: timers, a socketpair round trip, then the
    parent's go-ahead byte read through the loop."""
    loop = asyncio.get_running_loop()
    ticker = Ticker(loop, seed=4, count=4)
    await ticker.done

    data = random.Random(9).randbytes(32 * KiB)
    first, second = socket.socketpair()
    with first, second:
        first.setblocking(False)
        second.setblocking(False)
        await loop.sock_sendall(first, data)
        echoed = bytearray()
        while len(echoed) < len(data):
            echoed += await loop.sock_recv(second, 64 * KiB)
    go_ahead.setblocking(False)
    return {
        "loop": qualified_name(loop),
        "timers": ticker.problem() or "in order",
        "socketpair": sha256(bytes(echoed)) == sha256(data),
        "go_ahead": (await loop.sock_recv(go_ahead, 1)).decode(),
    }


def expected_report(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    return {
        "_get_running_loop": "None",
        "get_running_loop": "raised",
        "loop": qualified_name(loop),
        "timers": "in order",
        "socketpair": True,
        "go_ahead": "g",
    }


def fork_child(loop_factory: LoopFactory, channel: socket.socket) -> int:
    """os.fork(); the child runs child_work on a new loop from *loop_factory*, sends its
    report (JSON) through *channel* and exits. Returns the child's pid, in the parent."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        report = running_loop_report()
        loop = loop_factory()
        try:
            report.update(loop.run_until_complete(asyncio.wait_for(child_work(channel), GUARD)))
        finally:
            loop.close()
        channel.setblocking(True)
        channel.sendall(json.dumps(report).encode())
        status = 0
    except BaseException:
        os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(status)


async def reap(pid: int) -> int:
    """The exit code of child *pid*, waited for in the loop's executor."""
    loop = asyncio.get_running_loop()
    try:
        _, status = await wait(loop.run_in_executor(None, os.waitpid, pid, 0))
    except BaseException:
        # (the executor's waitpid may still reap it: then these find no child)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def run_in(loop: asyncio.AbstractEventLoop, main: Any) -> Any:
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())


# -- os.fork ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["callback", "coroutine"])
def test_os_fork_inside_the_running_loop(
    new_loop: LoopFactory, loop_factory: LoopFactory, where: str
) -> None:
    """os.fork() in a callback or a coroutine of the running loop: the child has no running
    loop, runs a new one of the same kind, reports and exits 0; the parent's timers and its
    TCP connection carry on before, during and after the child's life."""
    loop = new_loop()

    async def main() -> tuple[int, bytes]:
        async with serving(loop) as (server, _):
            client = await connect(loop, *address_of(server))
            exchange = Exchange(client)
            await carry_on(exchange, 1)

            parent_end, child_end = socket.socketpair()
            with parent_end, child_end:
                if where == "coroutine":
                    pid = fork_child(loop_factory, child_end)
                else:
                    forked: asyncio.Future[int] = loop.create_future()
                    loop.call_soon(lambda: forked.set_result(fork_child(loop_factory, child_end)))
                    pid = await forked
                child_end.close()  # the child's copy is the last: EOF when it exits
                try:
                    await carry_on(exchange, 2)  # the child waits for the go-ahead meanwhile
                    parent_end.setblocking(False)
                    await wait(loop.sock_sendall(parent_end, b"g"))
                    report = await wait(read_to_eof(parent_end))
                except BaseException:
                    os.kill(pid, signal.SIGKILL)  # rather than wait for a go-ahead
                    raise
                finally:
                    code = await reap(pid)
            await carry_on(exchange, 3)  # after the child has exited
            exchange.check()
            await client.close()
        return code, report

    code, report = run_in(loop, main())
    assert code == 0
    assert json.loads(report) == expected_report(loop)


# -- multiprocessing --------------------------------------------------------------------------


def multiprocessing_child(loop_factory: LoopFactory, go_ahead: socket.socket, sender: Any) -> None:
    """The target of a "fork" Process: child_work on a loop of its own, made by asyncio's
    runner (asyncio.run with a loop_factory from 3.12, asyncio.Runner before), the report sent
    back through a multiprocessing Pipe."""
    report = running_loop_report()
    if sys.version_info >= (3, 12):
        report.update(asyncio.run(child_work(go_ahead), loop_factory=loop_factory))
    else:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            report.update(runner.run(child_work(go_ahead)))
    sender.send(report)


def test_multiprocessing_fork_inside_the_running_loop(
    new_loop: LoopFactory, loop_factory: LoopFactory
) -> None:
    """A multiprocessing Process of the "fork" context started in a coroutine of the running
    loop, joined in the loop's executor: the child runs its own loop and returns its report
    through a Pipe; the parent's loop carries on as above."""
    context = multiprocessing.get_context("fork")
    loop = new_loop()

    async def main() -> tuple[int | None, Any]:
        async with serving(loop) as (server, _):
            client = await connect(loop, *address_of(server))
            exchange = Exchange(client)
            await carry_on(exchange, 1)

            parent_end, child_end = socket.socketpair()
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=multiprocessing_child, args=(loop_factory, child_end, sender)
            )
            with parent_end, child_end, receiver, sender:
                try:
                    process.start()  # forks here, in the loop's thread
                    child_end.close()
                    sender.close()
                    await carry_on(exchange, 2)
                    parent_end.setblocking(False)
                    await wait(loop.sock_sendall(parent_end, b"g"))
                    await wait(loop.run_in_executor(None, process.join, GUARD))
                    report = receiver.recv() if receiver.poll(0) else None
                finally:
                    if process.is_alive():
                        process.kill()
                        process.join()
                    code = process.exitcode
                    process.close()
            await carry_on(exchange, 3)
            exchange.check()
            await client.close()
        return code, report

    code, report = run_in(loop, main())
    assert code == 0
    assert report == expected_report(loop)


# -- what the child inherited -----------------------------------------------------------------


@pytest.mark.epolloop_only
def test_a_child_closing_what_it_inherited_leaves_the_parent_alone(
    new_loop: LoopFactory,
) -> None:
    """A child forked in a callback closes the parent's server and aborts both ends of the
    parent's connection, through its inherited copy of the loop, then exits. The parent's
    server still accepts and its connection still carries data: the child's copy of the loop
    has kernel objects of its own (asyncio's shares the parent's epoll instance, so the same
    calls there unregister the parent's sockets)."""
    loop = new_loop()

    async def main() -> int:
        async with serving(loop) as (server, accepting):
            address = address_of(server)
            client = await connect(loop, *address)
            accepted = await accepting.next()
            exchange = Exchange(client)
            await carry_on(exchange, 1)

            def fork_and_close_everything(forked: asyncio.Future[int]) -> None:
                pid = os.fork()
                if pid:
                    forked.set_result(pid)
                    return
                status = 1
                try:
                    server.close()
                    assert client.transport is not None and accepted.transport is not None
                    client.transport.abort()
                    accepted.transport.abort()
                    status = 0
                except BaseException:
                    os.write(2, traceback.format_exc().encode())
                finally:
                    os._exit(status)

            forked: asyncio.Future[int] = loop.create_future()
            loop.call_soon(fork_and_close_everything, forked)
            code = await reap(await forked)

            await carry_on(exchange, 2)
            later = await connect(loop, *address)
            await round_trip(later, b"accepted after the child left")
            await later.close()
            exchange.check()
            await client.close()
        return code

    assert run_in(loop, main()) == 0
