"""Nothing accumulates: file descriptors, resident memory and live objects level off while a
loop churns through connections, timers, tasks, subprocesses and executor jobs.

The test runs the same batch of work several times on one loop and samples after every batch
(after a full collection). The first batches warm caches up (the executor's threads, free
lists, the allocator's arenas); from then on a leak of one object per operation would grow the
samples by hundreds per batch, far above the tolerances.

Two more tests do the same on the C core at scale, 100,000 connections and 1,000,000 callbacks
and timers, and count the objects the collector does not see as well (see below).
"""

from __future__ import annotations

import array
import asyncio
import contextvars
import gc
import os
import random
import socket
import sys
import threading
import weakref
from typing import Any

import pytest
from _helpers import GUARD, until, var, wait

import epolloop
import epolloop.loop

BATCHES = 6
WARM_UP = 2  # batches before the samples must level off
CONNECTIONS = 150
TIMERS = 5_000
TASKS = 2_000
CHILDREN = 4
JOBS = 200

OBJECTS_TOLERANCE = 200  # a leak of one object per operation: hundreds per batch
RSS_TOLERANCE = 4 << 20  # the allocator keeps some freed memory; a leak is steady growth


def _sample() -> tuple[int, int, int]:
    """(open fds, resident bytes, live GC-tracked objects), after a full collection."""
    gc.collect()
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return len(os.listdir("/proc/self/fd")), rss, len(gc.get_objects())


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read(1024))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _connections(port: int) -> None:
    for _ in range(CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await reader.read(1024) == b"ping"
        writer.close()
        await writer.wait_closed()


async def _timers(rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    live = TIMERS // 2
    fired = loop.create_future()
    count = 0

    def fire() -> None:
        nonlocal count
        count += 1
        if count == live:
            fired.set_result(None)

    handles = [loop.call_later(rng.uniform(0, 0.002), fire) for _ in range(TIMERS)]
    for handle in handles[live:]:
        handle.cancel()
    await fired


async def _tasks() -> None:
    async def sleeper() -> None:
        await asyncio.sleep(0.001)

    tasks = [asyncio.ensure_future(sleeper()) for _ in range(TASKS)]
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == TASKS // 2


async def _children() -> None:
    for _ in range(CHILDREN):
        child = await asyncio.create_subprocess_exec("true", stdout=asyncio.subprocess.PIPE)
        await child.communicate()
        assert child.returncode == 0


async def _jobs() -> None:
    loop = asyncio.get_running_loop()
    assert await asyncio.gather(*(loop.run_in_executor(None, abs, -n) for n in range(JOBS))) == [
        *range(JOBS)
    ]


@pytest.mark.timeout(300)
async def test_fds_memory_and_objects_level_off_under_churn() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rng = random.Random(8)
    samples = []
    try:
        for _ in range(BATCHES):
            await _connections(port)
            await _timers(rng)
            await _tasks()
            await _children()
            await _jobs()
            samples.append(_sample())
    finally:
        server.close()
        await server.wait_closed()
    (fds, rss, objects), *_, (fds_end, rss_end, objects_end) = samples[WARM_UP - 1 :]
    assert fds_end == fds, samples
    assert objects_end - objects <= OBJECTS_TOLERANCE, samples
    assert rss_end - rss <= RSS_TOLERANCE, samples


# -- the C core: 100,000 connections, 1,000,000 callbacks and timers ----------------------------
#
# The C core makes its handles from freelists, and keeps the handles of call_soon and call_later
# (with their contexts and argument tuples) out of the collector's sight until they outlive the
# reactor's own reference (epolloop/_core/handles.c). An object it forgets to release is then
# invisible to gc.get_objects(), so these tests count every block the allocator hands out
# (sys.getallocatedblocks(), tracked or not) beside the tracked objects, the live handles, the
# resident memory and the descriptors. They sample after a full collection between batches of
# identical work: the first CHECKPOINT batches (20% of the work) warm up the freelists, caches
# and arenas, and from there to the end nothing may grow by more than a tolerance well below one
# block or object per hundred operations, and descriptors and live handles not at all.

CYCLES = 100_000  # connection open / exchange / close cycles
CYCLE_BATCHES = 10
CONCURRENCY = 100  # connections in flight at once
CALLBACKS = 1_000_000  # callbacks and timers scheduled
CALLBACK_BATCHES = 10
CHECKPOINT = 2  # batches (20% of the work) before the samples must level off

# Growth allowed from the checkpoint to the end, over 80,000 connections or 800,000 callbacks
# (beside OBJECTS_TOLERANCE and RSS_TOLERANCE above): leaking one block per hundred operations
# would grow the blocks by 800 or 8,000. Measured on Python 3.11 to 3.13: 0 to 16 blocks over
# the connections, -25 to +70 over the callbacks (freelists never end a batch quite as full).
BLOCKS_TOLERANCE = 250

PAYLOAD = bytes(range(256)) * 4


class _Samples:
    """Samples taken after a full collection: open descriptors, resident memory, blocks
    allocated by Python's allocator (every object, tracked or not), objects the collector
    tracks, and live handles (tracked by the collector, or held by the reactor). They are kept
    in an array allocated beforehand, so that keeping them allocates nothing."""

    FIELDS = ("fds", "rss KiB", "blocks", "objects", "handles")

    def __init__(self, count: int) -> None:
        self.values = array.array("q", bytes(8 * len(self.FIELDS) * count))
        self.taken = 0

    def take(self, loop: Any) -> None:
        gc.collect()
        blocks = sys.getallocatedblocks()
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        fds = len(os.listdir("/proc/self/fd"))
        tracked = gc.get_objects()
        # Untracked handles are the reactor's alone (handles.c): its queue, heap and fd table.
        # Not counted: cancelled timers it has yet to drop (it keeps up to a hundred or so until
        # they reach the top of its heap or it compacts it), as many as timing left there.
        held = [*loop._ready, *(entry[-1] for entry in loop._timers)]
        held += [handle for pair in loop._watchers.values() for handle in pair if handle]
        dropping = {id(handle) for handle in held if handle.cancelled()}
        live = {id(o) for o in tracked if isinstance(o, asyncio.Handle)} - dropping
        live |= {id(handle) for handle in held} - dropping
        start = self.taken * len(self.FIELDS)
        self.values[start : start + len(self.FIELDS)] = array.array(
            "q", [fds, rss >> 10, blocks, len(tracked), len(live)]
        )
        self.taken += 1

    def __getitem__(self, index: int) -> dict[str, int]:
        width = len(self.FIELDS)
        return dict(zip(self.FIELDS, self.values[index * width : (index + 1) * width], strict=True))

    def __str__(self) -> str:
        rows = [" ".join(f"{name:>9}" for name in ("after", *self.FIELDS))]
        for n in range(self.taken):
            row = [f"batch {n}" if n else "start", *self[n].values()]
            rows.append(" ".join(f"{value:>9}" for value in row))
        return "\n".join(rows)

    def check_levelled_off(self) -> None:
        """From the checkpoint to the end: no descriptor or handle more, and the objects,
        blocks and resident memory within their tolerances."""
        start, end = self[CHECKPOINT], self[self.taken - 1]
        table = str(self)
        print(table)  # pytest -rP shows it
        assert end["fds"] == start["fds"], table
        assert end["handles"] <= start["handles"], table
        assert end["objects"] - start["objects"] <= OBJECTS_TOLERANCE, table
        assert end["blocks"] - start["blocks"] <= BLOCKS_TOLERANCE, table
        assert end["rss KiB"] - start["rss KiB"] <= RSS_TOLERANCE >> 10, table


def _on_the_c_core(loop: Any) -> None:
    if epolloop.core != "c":
        pytest.skip("about the C core's memory management, and the C core is not live here")
    if not isinstance(loop, epolloop.loop.CLoop):
        pytest.skip("about the C core's freelists and untracked handles: this is the pure core")


# -- connections


class _EchoServer(asyncio.Protocol):
    """Echoes; closes at the client's EOF (eof_received returns None). *live* counts the
    connections not yet lost."""

    live = 0

    def connection_made(self, transport: Any) -> None:
        _EchoServer.live += 1
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        _EchoServer.live -= 1


class _EchoClient(asyncio.Protocol):
    """Sends PAYLOAD at connection_made, closes once it has all come back."""

    def __init__(self, lost: asyncio.Future[int]) -> None:
        self.lost = lost
        self.received = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(PAYLOAD)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received == len(PAYLOAD):
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(self.received)


_streams_live = 0


async def _stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global _streams_live
    _streams_live += 1
    try:
        writer.write(await reader.readexactly(len(PAYLOAD)))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    finally:
        _streams_live -= 1


async def _protocol_cycle(port: int) -> None:
    loop = asyncio.get_running_loop()
    lost = loop.create_future()
    await loop.create_connection(lambda: _EchoClient(lost), "127.0.0.1", port)
    assert await lost == len(PAYLOAD)


async def _streams_cycle(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PAYLOAD)
    assert await reader.readexactly(len(PAYLOAD)) == PAYLOAD
    writer.close()
    await writer.wait_closed()


async def _sock_cycle(port: int) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, PAYLOAD)
        received = bytearray()
        while len(received) < len(PAYLOAD):
            chunk = await loop.sock_recv(sock, len(PAYLOAD))
            assert chunk
            received += chunk
        assert received == PAYLOAD


async def _connection_batch(protocol_port: int, streams_port: int) -> None:
    """CYCLES // CYCLE_BATCHES cycles, CONCURRENCY at a time: 6 in 10 with Protocols, 2 with
    streams (tasks, StreamReader) against a streams server, 2 with sock_* calls."""

    async def client(kind: int, cycles: int) -> None:
        for _ in range(cycles):
            # A failure guard, and a timer cancelled before it fires for every cycle.
            async with asyncio.timeout(GUARD):
                if kind < 6:
                    await _protocol_cycle(protocol_port)
                elif kind < 8:
                    await _streams_cycle(streams_port)
                else:
                    await _sock_cycle(protocol_port)

    per_client = CYCLES // CYCLE_BATCHES // CONCURRENCY
    await asyncio.gather(*(client(n % 10, per_client) for n in range(CONCURRENCY)))
    await until(lambda: _EchoServer.live == 0 and _streams_live == 0, "servers' side closed")


@pytest.mark.epolloop_only
@pytest.mark.timeout(300)
def test_c_core_levels_off_over_100000_connections(no_leaked_fds: None, new_loop: Any) -> None:
    loop = new_loop()
    _on_the_c_core(loop)
    assert CYCLES % (CYCLE_BATCHES * CONCURRENCY) == 0
    protocol_server = loop.run_until_complete(
        loop.create_server(_EchoServer, "127.0.0.1", 0, backlog=CONCURRENCY)
    )
    streams_server = loop.run_until_complete(
        asyncio.start_server(_stream_echo, "127.0.0.1", 0, backlog=CONCURRENCY)
    )
    ports = [server.sockets[0].getsockname()[1] for server in (protocol_server, streams_server)]
    samples = _Samples(1 + CYCLE_BATCHES)
    samples.take(loop)
    for _ in range(CYCLE_BATCHES):
        loop.run_until_complete(_connection_batch(*ports))
        samples.take(loop)
    for server in (protocol_server, streams_server):
        server.close()
        loop.run_until_complete(wait(server.wait_closed()))
    samples.check_levelled_off()


# -- callbacks and timers


class _Counter:
    """A callback that counts its calls; ``await reached(n)`` waits until n have run."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.count = 0
        self.target = -1
        self.waiter: asyncio.Future[None] | None = None

    def __call__(self, *args: Any) -> None:
        self.count += 1
        if self.count == self.target and self.waiter is not None:
            self.waiter.set_result(None)

    async def reached(self, target: int) -> None:
        if self.count < target:
            self.target = target
            self.waiter = self.loop.create_future()
            await wait(self.waiter)
            self.waiter = None
        assert self.count == target


class _Owner:
    """An object that stores the handle that will call it back: a reference cycle."""

    handle: Any

    def method(self, counter: _Counter | None = None) -> None:
        if counter is not None:
            counter()


_owner_var: contextvars.ContextVar[_Owner | None] = contextvars.ContextVar("owner", default=None)


class _Boom(Exception):
    pass


def _raise(n: int) -> None:
    raise _Boom(n)


# One round of a callback batch schedules this many of each, ROUND in all.
_SOON, _SOON_ARGS, _SOON_CONTEXT, _FIRING, _TIMEOUTS, _RAISING = 260, 150, 100, 150, 200, 10
_CYCLES = 6  # of each of the 5 kinds of reference cycle
_THREADSAFE = 100  # from another thread
ROUND = _SOON + _SOON_ARGS + _SOON_CONTEXT + _FIRING + _TIMEOUTS + _RAISING + 5 * _CYCLES
ROUND += _THREADSAFE
ROUNDS = CALLBACKS // CALLBACK_BATCHES // ROUND
WEAKREF_EVERY = 7  # a weak reference to one cyclic object in so many


class _CallbackWork:
    """Batches of callbacks and timers, ROUNDS rounds each, with a thread calling
    call_soon_threadsafe throughout."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.ran = _Counter(loop)
        self.ran_threadsafe = _Counter(loop)
        self.expected = 0  # callbacks scheduled in the loop's thread that must run
        self.expected_threadsafe = 0  # and from the other thread
        self.scheduled = 0  # callbacks and timers scheduled, run or not
        self.errors = 0
        self.rng = random.Random(7)
        self.context = contextvars.copy_context()
        self.context.run(var.set, "context=")
        self.owners = 0
        # Weak references to a sample of the cyclic objects: those that must be gone at the
        # next collection, and those the reactor may still hold (cancelled timers left in its
        # heap) until it lets go of them, when the loop closes at the latest.
        self.collectable: list[weakref.ref[_Owner]] = []
        self.held: list[weakref.ref[_Owner]] = []
        self.pending_timeouts: list[Any] = []
        loop.set_exception_handler(self.exception_handler)

    def exception_handler(self, loop: Any, context: dict[str, Any]) -> None:
        assert isinstance(context["exception"], _Boom), context
        self.errors += 1

    def _owner(self, sample: list[weakref.ref[_Owner]]) -> _Owner:
        owner = _Owner()
        self.owners += 1
        if self.owners % WEAKREF_EVERY == 0:
            sample.append(weakref.ref(owner))
        return owner

    def _cycles(self) -> None:
        """Five kinds of cycle through a handle, each object dropped at once."""
        loop = self.loop
        for _ in range(_CYCLES):
            # A timeout stored on the object whose method it calls, cancelled.
            owner = self._owner(self.collectable)
            owner.handle = loop.call_later(10, owner.method)
            owner.handle.cancel()
            # The same, firing.
            owner = self._owner(self.collectable)
            owner.handle = loop.call_later(self.rng.uniform(0, 0.0005), owner.method, self.ran)
            # Through the argument tuple of a callback.
            owner = self._owner(self.collectable)
            owner.handle = loop.call_soon(self.ran, owner)
            # Through the context copied for a callback.
            owner = self._owner(self.collectable)
            token = _owner_var.set(owner)
            owner.handle = loop.call_soon(self.ran)
            _owner_var.reset(token)
            # Through the context copied for a timeout, cancelled in the next round: cancel()
            # keeps the context, so the cycle lasts, in the heap until the reactor lets go.
            owner = self._owner(self.held)
            token = _owner_var.set(owner)
            owner.handle = loop.call_later(10, owner.method)
            _owner_var.reset(token)
            self.pending_timeouts.append(owner.handle)
        self.scheduled += 5 * _CYCLES
        self.expected += 3 * _CYCLES

    def round(self) -> None:
        loop, ran, rng = self.loop, self.ran, self.rng
        for _ in range(_SOON):
            loop.call_soon(ran)
        for n in range(_SOON_ARGS):
            loop.call_soon(ran, n, PAYLOAD)
        for _ in range(_SOON_CONTEXT):
            loop.call_soon(ran, context=self.context)
        for n in range(_FIRING):
            if n % 3 == 0:
                loop.call_later(rng.uniform(-0.0001, 0.0005), ran)
            elif n % 3 == 1:
                loop.call_at(loop.time() + rng.uniform(0, 0.0005), ran, n, context=self.context)
            else:
                loop.call_later(0, ran, n)
        # Timeouts, all cancelled before they fire: half at once, half in the next round.
        for handle in self.pending_timeouts:
            handle.cancel()
        timeouts = []
        for n in range(_TIMEOUTS):
            if n % 3 == 0:
                timeouts.append(loop.call_later(rng.uniform(5, 10), ran))
            elif n % 3 == 1:
                timeouts.append(loop.call_later(rng.uniform(5, 10), ran, n, PAYLOAD))
            else:
                timeouts.append(loop.call_at(loop.time() + 10, ran, context=self.context))
        for handle in timeouts[::2]:
            handle.cancel()
        self.pending_timeouts = timeouts[1::2]
        for n in range(_RAISING):
            loop.call_soon(_raise, n)
        self._cycles()
        self.scheduled += _SOON + _SOON_ARGS + _SOON_CONTEXT + _FIRING + _TIMEOUTS + _RAISING
        self.expected += _SOON + _SOON_ARGS + _SOON_CONTEXT + _FIRING

    def _from_thread(self, count: int) -> None:
        for n in range(count):
            if n % 2:
                self.loop.call_soon_threadsafe(self.ran_threadsafe, n)
            else:
                self.loop.call_soon_threadsafe(self.ran_threadsafe, context=self.context)

    async def batch(self) -> None:
        count = ROUNDS * _THREADSAFE
        thread = threading.Thread(target=self._from_thread, args=(count,))
        thread.start()
        try:
            for _ in range(ROUNDS):
                self.round()
                await self.ran.reached(self.expected)
        finally:
            thread.join(GUARD)
        self.scheduled += count
        self.expected_threadsafe += count
        await self.ran_threadsafe.reached(self.expected_threadsafe)
        for handle in self.pending_timeouts:
            handle.cancel()
        self.pending_timeouts = []


@pytest.mark.epolloop_only
@pytest.mark.timeout(300)
def test_c_core_levels_off_over_1000000_callbacks_and_timers(
    no_leaked_fds: None, new_loop: Any
) -> None:
    loop = new_loop()
    _on_the_c_core(loop)
    assert CALLBACKS % (CALLBACK_BATCHES * ROUND) == 0
    work = _CallbackWork(loop)
    samples = _Samples(1 + CALLBACK_BATCHES)
    samples.take(loop)
    for _ in range(CALLBACK_BATCHES):
        loop.run_until_complete(work.batch())
        samples.take(loop)  # after a full collection
        alive = sum(ref() is not None for ref in work.collectable)
        assert not alive, f"{alive} of {len(work.collectable)} cyclic objects not collected"
        work.collectable = []
        # The others only while the reactor still holds their cancelled timer.
        work.held = [ref for ref in work.held if ref() is not None]
        in_heap = {id(entry[-1]) for entry in loop._timers}
        stray = [ref for ref in work.held if id(getattr(ref(), "handle", None)) not in in_heap]
        assert not stray, f"{len(stray)} cyclic objects not collected"
    assert work.scheduled == CALLBACKS
    assert work.ran.count == work.expected
    assert work.errors == CALLBACK_BATCHES * ROUNDS * _RAISING
    samples.check_levelled_off()
    # Cycles through callbacks and timers still pending when the loop closes go with it.
    for n in range(1000):
        owner = _Owner()
        owner.handle = (
            loop.call_soon(owner.method) if n % 2 else loop.call_later(3600, owner.method)
        )
        work.held.append(weakref.ref(owner))
    del owner
    loop.close()
    gc.collect()
    alive = sum(ref() is not None for ref in work.held)
    assert not alive, f"{alive} of {len(work.held)} cyclic objects outlived the loop"
