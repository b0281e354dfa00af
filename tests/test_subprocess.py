"""Child processes: loop.subprocess_exec / loop.subprocess_shell with a SubprocessProtocol, and
asyncio.create_subprocess_exec / create_subprocess_shell with the Process API (communicate,
wait, returncode, kill, terminate, send_signal) on top of them.

Stock asyncio is the reference (base_subprocess.BaseSubprocessTransport and
unix_events._UnixSubprocessTransport, Python 3.11 to 3.13): every assertion holds there; where
uvloop differs, the test says so with an xfail and its reason. The children are cheap ones
(/bin/sh, cat, head, true), never Python.

What is covered: output checked byte for byte (100 children at once among them); exit codes and
deaths by signal; a child that exits while a grandchild keeps its stdout open, and one that
closes its pipes long before it exits; the order of SubprocessProtocol callbacks; stdio choices
(PIPE, DEVNULL, STDOUT, a file, inherited) and get_pipe_transport; write and drain on stdin with
flow control; pass_fds, start_new_session, process_group, cwd and env; transport.close() killing
a running child; the errors for a program that cannot run and for arguments asyncio rejects.

Every child is reaped: an autouse check fails a test that leaves a zombie child of this
process behind, and every test fails if it leaves a file descriptor open. Waits are on
events (protocol callbacks, stream reads, wait()), never on sleeps; ``wait``'s guard only turns
a callback that never comes into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import random
import select
import signal
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import GUARD, open_fds, spin, until, wait

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
KiB = 1024
MiB = 1024 * KiB

pytestmark = pytest.mark.usefixtures("no_leaked_fds")


def payload(size: int, seed: int = 0) -> bytes:
    """*size* reproducible random bytes (random data catches reordering and duplication)."""
    return random.Random(seed).randbytes(size)


# -- processes as /proc sees them ----------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int, int]:
    """(state, ppid, process group, session) of *pid*, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name, in parentheses, may hold spaces and parentheses: split after it.
        fields = stat.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # closed meanwhile
        return ""


def zombie_children() -> set[int]:
    """The children of this process that have exited and not been reaped."""
    me = os.getpid()
    zombies = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state, ppid, _, _ = proc_stat(int(name))
        except (OSError, IndexError):  # gone meanwhile
            continue
        if ppid == me and state == "Z":
            zombies.add(int(name))
    return zombies


def exit_code_of(pid: int) -> int:
    """The exit code of child *pid*, which no loop watches, once it has exited; one that is
    still running after GUARD seconds is killed, and the test fails."""
    pidfd = os.pidfd_open(pid)
    try:
        exited = select.select([pidfd], [], [], GUARD)[0]
    finally:
        os.close(pidfd)
    if not exited:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"process {pid} still running after {GUARD} s")
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture(autouse=True)
def _no_zombies() -> Iterator[None]:
    """Every child a test starts has been reaped when it ends. (Zombies found before the test
    are someone else's.)"""
    before = zombie_children()
    yield
    left = zombie_children() - before
    assert not left, f"zombie children left behind: {sorted(left)}"


# -- a recording SubprocessProtocol --------------------------------------------------------


class Recording(asyncio.SubprocessProtocol):
    """Records every callback, in order, in ``events`` as tuples: ("connection_made",),
    ("pipe_data_received", fd), ("pipe_connection_lost", fd, exc), ("process_exited",
    returncode the transport reports then), ("connection_lost", exc), ("pause_writing",),
    ("resume_writing",). Keeps the bytes of each fd in ``data``. Futures ``made``, ``exited``,
    ``lost``, ``resumed`` and ``pipe_lost[fd]`` resolve at those callbacks;
    ``await received(fd, n)`` waits until at least *n* bytes have come on *fd*."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.SubprocessTransport | None = None
        self.events: list[tuple[Any, ...]] = []
        self.data: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.pid_at_made: int | None = None
        self.made = self.loop.create_future()
        self.exited = self.loop.create_future()
        self.lost = self.loop.create_future()
        self.resumed = self.loop.create_future()
        self.pipe_lost = {fd: self.loop.create_future() for fd in (0, 1, 2)}
        self._waiters: list[tuple[int, int, asyncio.Future[bytes]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pid_at_made = transport.get_pid()
        self.events.append(("connection_made",))
        self.made.set_result(transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.events.append(("pipe_data_received", fd))
        self.data[fd] += data
        self._wake()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.events.append(("pipe_connection_lost", fd, exc))
        self.pipe_lost[fd].set_result(exc)
        self._wake()

    def process_exited(self) -> None:
        assert self.transport is not None
        self.events.append(("process_exited", self.transport.get_returncode()))
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("connection_lost", exc))
        self.lost.set_result(exc)
        self._wake()

    def pause_writing(self) -> None:
        self.events.append(("pause_writing",))

    def resume_writing(self) -> None:
        self.events.append(("resume_writing",))
        if not self.resumed.done():
            self.resumed.set_result(None)

    def _wake(self) -> None:
        still = []
        for fd, count, waiter in self._waiters:
            if len(self.data[fd]) >= count:
                waiter.set_result(bytes(self.data[fd]))
            elif self.pipe_lost[fd].done() or self.lost.done():
                waiter.set_exception(EOFError(f"fd {fd} ended after {len(self.data[fd])} bytes"))
            else:
                still.append((fd, count, waiter))
        self._waiters = still

    async def received(self, fd: int, count: int) -> bytes:
        """Everything received on *fd* so far, once at least *count* bytes have come."""
        waiter: asyncio.Future[bytes] = self.loop.create_future()
        self._waiters.append((fd, count, waiter))
        self._wake()
        return await wait(waiter)


def names(events: list[tuple[Any, ...]]) -> list[str]:
    return [event[0] for event in events]


def squeeze(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """*events* with runs of the same event collapsed into one (data may come in pieces)."""
    return [event for index, event in enumerate(events) if index == 0 or event != events[index - 1]]


def check_callback_order(
    events: list[tuple[Any, ...]], pipes: tuple[int, ...], loop_name: str
) -> None:
    """What asyncio guarantees of a SubprocessProtocol's callbacks, whatever the timing:
    connection_made first and connection_lost(None) last, once each; process_exited once;
    pipe_connection_lost(fd, None) once per pipe and none for an fd that is not a pipe; no data
    on an fd after its pipe_connection_lost. (process_exited and the pipes' losses come in no
    fixed order: asyncio's child watcher and the pipes race.)"""
    assert events[0] == ("connection_made",)
    assert names(events).count("connection_made") == 1
    assert names(events).count("connection_lost") == 1
    assert names(events).count("process_exited") == 1
    lost = [event for event in events if event[0] == "pipe_connection_lost"]
    assert sorted(event[1] for event in lost) == sorted(pipes)
    assert all(event[2] is None for event in lost)
    for fd in pipes:
        at = events.index(("pipe_connection_lost", fd, None))
        assert ("pipe_data_received", fd) not in events[at:]
    if loop_name == "uvloop" and events[-1] != ("connection_lost", None):
        pytest.xfail(
            "uvloop: when pipes close before connection_made, it replays their losses after "
            "it has queued connection_lost"
        )
    assert events[-1] == ("connection_lost", None)


def pipe_of(transport: asyncio.SubprocessTransport, fd: int) -> Any:
    """The pipe transport of *fd*, which must be piped."""
    pipe = transport.get_pipe_transport(fd)
    assert pipe is not None, f"fd {fd} is not a pipe"
    return pipe


async def exec_recording(
    *args: Any, **kwargs: Any
) -> tuple[asyncio.SubprocessTransport, Recording]:
    loop = asyncio.get_running_loop()
    transport, protocol = await wait(loop.subprocess_exec(Recording, *args, **kwargs))
    return transport, protocol


# -- output, byte for byte -----------------------------------------------------------------


async def test_communicate_echoes_input() -> None:
    """cat gets 1 MiB on stdin and gives it back: communicate() writes and reads at once (the
    pipes hold far less), returns (stdout, None) when stderr is not piped, and the exit code."""
    data = payload(1 * MiB)
    proc = await wait(asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE))
    assert proc.returncode is None  # cat waits for the end of its input
    stdout, stderr = await wait(proc.communicate(data))
    assert stdout == data
    assert stderr is None
    assert proc.returncode == 0
    assert await wait(proc.wait()) == 0


async def test_hundred_children_at_once() -> None:
    """100 children run concurrently, each fed its own data on stdin (0 to 128 KiB, often more
    than a pipe holds): the even ones are cat and give all of it back, the odd ones are head -c
    and give back the first half, exiting before the rest is written (communicate() ignores the
    broken pipe). Every child's output is checked byte for byte, so no stream is mixed up with
    another's."""

    async def child(index: int) -> None:
        data = payload((index * 7919) % (128 * KiB), seed=index)
        expected = data if index % 2 == 0 else data[: len(data) // 2]
        argv = ["cat"] if index % 2 == 0 else ["head", "-c", str(len(expected))]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        stdout, stderr = await proc.communicate(data)
        assert (index, stdout) == (index, expected)
        assert (index, stderr, proc.returncode) == (index, b"", 0)

    await wait(asyncio.gather(*(child(index) for index in range(100))))


async def test_shell_command_str_and_bytes() -> None:
    """create_subprocess_shell runs the command with /bin/sh -c, given as str or bytes."""
    for cmd in ("printf '%s-%s' shell $((6 * 7))", b"printf '%s-%s' shell $((6 * 7))"):
        proc = await wait(asyncio.create_subprocess_shell(cmd, stdout=PIPE))
        assert await wait(proc.communicate()) == (b"shell-42", None)
        assert proc.returncode == 0


async def test_program_and_arguments_as_bytes_and_paths() -> None:
    """The program and its arguments may be str, bytes or path-like."""
    proc = await wait(
        asyncio.create_subprocess_exec(
            Path("/bin/sh"), b"-c", "printf '%s %s' \"$0\" \"$1\"", Path("zero"), b"one",
            stdout=PIPE,
        )
    )  # fmt: skip
    assert await wait(proc.communicate()) == (b"zero one", None)


# -- exit codes and signals ----------------------------------------------------------------


async def test_exit_code_and_pid() -> None:
    """returncode is None while the child runs, then its exit code; pid is the child's (a child
    of this process), and the transport tells the same."""
    proc = await wait(
        asyncio.create_subprocess_exec("/bin/sh", "-c", "read line; exit 3", stdin=PIPE)
    )
    transport = proc._transport  # type: ignore[attr-defined]
    assert proc.pid == transport.get_pid()
    assert proc_stat(proc.pid)[1] == os.getpid()
    assert proc.returncode is None
    assert transport.get_returncode() is None
    assert proc.stdout is None and proc.stderr is None
    assert proc.stdin is not None
    proc.stdin.write(b"\n")
    assert await wait(proc.wait()) == 3
    assert proc.returncode == 3
    assert transport.get_returncode() == 3
    assert transport.get_pid() == proc.pid  # still known after the exit


@pytest.mark.parametrize(
    ("how", "signum"),
    [
        ("kill", signal.SIGKILL),
        ("terminate", signal.SIGTERM),
        ("send_signal", signal.SIGUSR1),
    ],
)
async def test_child_killed_by_a_signal(how: str, signum: int) -> None:
    """A child that dies of a signal has returncode -signal, from wait() and the returncode
    attribute alike; its output pipe then ends."""
    proc = await wait(asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE))
    if how == "send_signal":
        proc.send_signal(signum)
    else:
        getattr(proc, how)()
    assert await wait(proc.wait()) == -signum
    assert proc.returncode == -signum
    assert await wait(proc.stdout.read()) == b""  # type: ignore[union-attr]


# -- a child whose pipes outlive it, and one that closes them early ------------------------

# The child starts a grandchild that echoes stdin to stdout (so it holds both pipes open) and
# exits at once. A non-interactive shell points a background command's stdin at /dev/null
# unless it is redirected explicitly: hence fd 3.
OUTLIVED = "exec 3<&0; cat <&3 & printf child; exit 7"


async def test_child_exits_while_a_grandchild_holds_stdout() -> None:
    """The child exits; its grandchild keeps stdout open until the test closes stdin. The exit
    code is known at once (returncode, and wait() called now returns it) while stdout is still
    open and still carries the grandchild's output; a wait() started before the exit returns
    the exit code too (at the latest once the pipes close)."""
    proc = await wait(
        asyncio.create_subprocess_exec("/bin/sh", "-c", OUTLIVED, stdin=PIPE, stdout=PIPE)
    )
    assert proc.stdin is not None and proc.stdout is not None
    early_wait = asyncio.ensure_future(proc.wait())
    assert await wait(proc.stdout.readexactly(5)) == b"child"
    await until(lambda: proc.returncode is not None, "returncode after the child's exit")
    assert proc.returncode == 7
    assert await wait(proc.wait()) == 7
    assert not proc.stdout.at_eof()
    proc.stdin.write(b"ping")
    await wait(proc.stdin.drain())
    assert await wait(proc.stdout.readexactly(4)) == b"ping"  # from the grandchild
    proc.stdin.close()  # the grandchild reads EOF and exits: stdout ends
    assert await wait(proc.stdout.read()) == b""
    assert await wait(early_wait) == 7


async def test_protocol_sees_the_exit_before_the_pipes_close() -> None:
    """The same child with a SubprocessProtocol: process_exited comes while stdout is open, the
    stdout pipe still delivers data after it, and connection_lost comes only once every pipe
    is closed."""
    transport, protocol = await exec_recording("/bin/sh", "-c", OUTLIVED, stderr=DEVNULL)
    assert await protocol.received(1, 5) == b"child"
    assert await wait(protocol.exited) == 7
    assert not protocol.pipe_lost[0].done() and not protocol.pipe_lost[1].done()
    stdin = pipe_of(transport, 0)
    stdin.write(b"ping")
    assert await protocol.received(1, 9) == b"childping"
    assert not protocol.lost.done()
    stdin.close()
    assert await wait(protocol.lost) is None
    # The child's output and its exit race each other; what follows the exit does not.
    events = protocol.events
    exited = events.index(("process_exited", 7))
    assert events[0] == ("connection_made",)
    assert set(events[1:exited]) <= {("pipe_data_received", 1)}
    assert squeeze(events[exited + 1 :]) == [
        ("pipe_data_received", 1),  # the grandchild's echo
        ("pipe_connection_lost", 0, None),
        ("pipe_connection_lost", 1, None),
        ("connection_lost", None),
    ]
    transport.close()


# The child closes stdout and stderr, then waits for a line on stdin before it exits.
CLOSES_EARLY = "exec >&- 2>&-; read line; exit 5"


async def test_child_closes_its_pipes_long_before_exiting(loop_name: str) -> None:
    """stdout and stderr reach EOF while the child lives on: returncode stays None, and
    neither process_exited nor connection_lost comes until the child is told to exit."""
    if loop_name == "uvloop":
        # Not run there: the EOF never comes, and the test would only hang until its guard.
        pytest.xfail(
            "uvloop: the child holds extra copies of its stdio sockets (see "
            "test_child_inherits_only_its_stdio_and_pass_fds), so closing fds 1 and 2 in the "
            "child gives the parent no EOF"
        )
    proc = await wait(
        asyncio.create_subprocess_exec(
            "/bin/sh", "-c", CLOSES_EARLY, stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    assert await wait(proc.stdout.read()) == b""
    assert await wait(proc.stderr.read()) == b""
    assert proc.returncode is None
    assert proc_stat(proc.pid)[0] != "Z"  # alive, not merely unreaped
    proc.stdin.write(b"go\n")
    assert await wait(proc.wait()) == 5

    transport, protocol = await exec_recording("/bin/sh", "-c", CLOSES_EARLY)
    await wait(protocol.pipe_lost[1])
    await wait(protocol.pipe_lost[2])
    await spin()
    assert transport.get_returncode() is None
    assert not protocol.exited.done() and not protocol.lost.done()
    pipe_of(transport, 0).write(b"go\n")
    assert await wait(protocol.lost) is None
    check_callback_order(protocol.events, pipes=(0, 1, 2), loop_name=loop_name)
    assert ("process_exited", 5) in protocol.events
    transport.close()


# -- the SubprocessProtocol callbacks ------------------------------------------------------


async def test_protocol_callbacks_in_order(loop_name: str) -> None:
    """With every stdio piped: connection_made is called before subprocess_exec() returns,
    with the pid already known; data on stdout and stderr; pipe_connection_lost for each fd,
    process_exited (with the returncode set) and connection_lost(None) last."""
    loop = asyncio.get_running_loop()
    transport, protocol = await wait(
        loop.subprocess_exec(Recording, "/bin/sh", "-c", "cat; printf err >&2; exit 4")
    )
    assert protocol.transport is transport
    assert protocol.events == [("connection_made",)]
    assert protocol.pid_at_made == transport.get_pid()
    stdin = pipe_of(transport, 0)
    stdin.write(b"hello")
    assert await protocol.received(1, 5) == b"hello"
    stdin.close()  # cat ends; then the shell writes to stderr and exits
    assert await wait(protocol.pipe_lost[0]) is None
    assert await wait(protocol.lost) is None
    assert bytes(protocol.data[1]) == b"hello"
    assert bytes(protocol.data[2]) == b"err"
    check_callback_order(protocol.events, pipes=(0, 1, 2), loop_name=loop_name)
    assert ("process_exited", 4) in protocol.events
    # stdin was closed by the test before the child wrote to stderr
    assert protocol.events.index(("pipe_connection_lost", 0, None)) < protocol.events.index(
        ("pipe_data_received", 2)
    )
    transport.close()


async def test_stdin_pipe_is_lost_when_the_child_exits_without_reading(loop_name: str) -> None:
    """A child that never reads stdin and exits: the stdin pipe is reported lost (its reader
    is gone) without the test closing it, so connection_lost comes on its own."""
    transport, protocol = await exec_recording("true")
    assert await wait(protocol.lost) is None
    check_callback_order(protocol.events, pipes=(0, 1, 2), loop_name=loop_name)
    assert ("process_exited", 0) in protocol.events
    transport.close()


async def test_stdin_flow_control_reaches_the_protocol(loop_name: str) -> None:
    """Writing more to stdin than the pipe takes pauses the SubprocessProtocol
    (pause_writing), and resume_writing follows once the child has read enough."""
    data = payload(1 * MiB)
    transport, protocol = await exec_recording("cat", stdout=DEVNULL, stderr=DEVNULL)
    stdin = pipe_of(transport, 0)
    stdin.write(data)
    assert protocol.events[-1] == ("pause_writing",)
    await wait(protocol.resumed)
    assert stdin.get_write_buffer_size() < stdin.get_write_buffer_limits()[1]
    stdin.close()  # flushes, then closes: cat reads all of it and exits
    assert await wait(protocol.lost) is None
    assert ("process_exited", 0) in protocol.events
    check_callback_order(protocol.events, pipes=(0,), loop_name=loop_name)
    transport.close()


async def test_stdin_write_and_drain() -> None:
    """Process.stdin is a StreamWriter: lines written and drained come back from cat one by
    one; a large write drains while the output is read concurrently; close() gives the child
    EOF."""
    proc = await wait(asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE))
    assert proc.stdin is not None and proc.stdout is not None
    for number in range(5):
        line = f"line {number}\n".encode()
        proc.stdin.write(line)
        await wait(proc.stdin.drain())
        assert await wait(proc.stdout.readline()) == line
    big = payload(2 * MiB)
    proc.stdin.write(big)
    reading = asyncio.ensure_future(proc.stdout.readexactly(len(big)))
    await wait(proc.stdin.drain())
    assert await wait(reading) == big
    proc.stdin.close()
    await wait(proc.stdin.wait_closed())
    assert await wait(proc.stdout.read()) == b""
    assert await wait(proc.wait()) == 0


# -- stdio choices and pipe transports -----------------------------------------------------


async def test_subprocess_exec_pipes_all_three_by_default() -> None:
    """loop.subprocess_exec pipes stdin, stdout and stderr unless told otherwise (unlike
    create_subprocess_exec): get_pipe_transport gives a write transport for 0, read transports
    for 1 and 2, and None for any other fd."""
    transport, protocol = await exec_recording("cat")
    stdin, stdout, stderr = (pipe_of(transport, fd) for fd in (0, 1, 2))
    assert callable(stdin.write) and callable(stdin.get_write_buffer_size)
    for pipe in (stdout, stderr):
        assert callable(pipe.pause_reading) and callable(pipe.resume_reading)
    assert transport.get_pipe_transport(3) is None
    pipe_of(transport, 0).close()
    assert await wait(protocol.lost) is None
    transport.close()


async def test_transports_derive_from_asyncio_classes(loop_name: str) -> None:
    """The transport is an asyncio.SubprocessTransport, the stdin pipe an
    asyncio.WriteTransport, the stdout and stderr pipes asyncio.ReadTransports."""
    transport, protocol = await exec_recording("true")
    derive = [
        isinstance(transport, asyncio.SubprocessTransport),
        isinstance(pipe_of(transport, 0), asyncio.WriteTransport),
        isinstance(pipe_of(transport, 1), asyncio.ReadTransport),
        isinstance(pipe_of(transport, 2), asyncio.ReadTransport),
    ]
    assert await wait(protocol.lost) is None
    transport.close()
    if loop_name == "uvloop" and derive == [False] * 4:
        pytest.xfail("uvloop: its process and pipe transports derive from no asyncio class")
    assert derive == [True] * 4


async def test_pipe_transports_are_none_when_not_piped() -> None:
    """get_pipe_transport(fd) is None for each fd that is not a pipe (DEVNULL, inherited)."""
    transport, protocol = await exec_recording("true", stdin=DEVNULL, stdout=DEVNULL, stderr=None)
    assert [transport.get_pipe_transport(fd) for fd in (0, 1, 2)] == [None, None, None]
    assert await wait(protocol.lost) is None
    assert protocol.events == [
        ("connection_made",),
        ("process_exited", 0),
        ("connection_lost", None),
    ]
    transport.close()


async def test_stderr_to_stdout(loop_name: str) -> None:
    """stderr=STDOUT: both streams arrive, in order, on the one stdout pipe; there is no
    stderr pipe."""
    script = "echo one; echo two >&2; echo three"
    proc = await wait(
        asyncio.create_subprocess_exec("/bin/sh", "-c", script, stdout=PIPE, stderr=STDOUT)
    )
    assert proc.stderr is None
    assert proc._transport.get_pipe_transport(2) is None  # type: ignore[attr-defined]
    assert await wait(proc.communicate()) == (b"one\ntwo\nthree\n", None)

    transport, protocol = await exec_recording("/bin/sh", "-c", script, stderr=STDOUT)
    assert transport.get_pipe_transport(2) is None
    pipe_of(transport, 0).close()
    assert await wait(protocol.lost) is None
    assert bytes(protocol.data[1]) == b"one\ntwo\nthree\n"
    assert protocol.data[2] == b""
    check_callback_order(protocol.events, pipes=(0, 1), loop_name=loop_name)
    transport.close()


async def test_stdout_devnull() -> None:
    """stdout=DEVNULL: the output is discarded, there is no stdout stream; stderr is still
    piped."""
    proc = await wait(
        asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "echo out; echo err >&2", stdout=DEVNULL, stderr=PIPE
        )
    )
    assert proc.stdout is None
    assert await wait(proc.communicate()) == (None, b"err\n")
    assert proc.returncode == 0


async def test_stdio_to_and_from_files(tmp_path: Path) -> None:
    """stdin and stdout may be files (file objects or fds): the child reads and writes them
    directly."""
    source = tmp_path / "in"
    source.write_bytes(b"from a file\n")
    with open(source, "rb") as stdin, open(tmp_path / "out", "wb") as stdout:
        proc = await wait(
            asyncio.create_subprocess_exec("cat", stdin=stdin, stdout=stdout.fileno())
        )
        assert proc.stdin is None and proc.stdout is None
        assert await wait(proc.wait()) == 0
    assert (tmp_path / "out").read_bytes() == b"from a file\n"


# -- Popen options: pass_fds, sessions and process groups, cwd, env ------------------------


async def test_pass_fds() -> None:
    """A child writes to an fd passed with pass_fds; the same fd not passed is closed in the
    child (the shell cannot open it). The parent's fd stays non-inheritable."""
    read_end, write_end = os.pipe()
    try:
        # dash's >&N takes one digit only: reach the fd through /proc instead
        script = f"printf passed >/proc/self/fd/{write_end}"
        proc = await wait(
            asyncio.create_subprocess_exec("/bin/sh", "-c", script, pass_fds=(write_end,))
        )
        assert await wait(proc.wait()) == 0
        assert os.read(read_end, 100) == b"passed"
        assert not os.get_inheritable(write_end)

        proc = await wait(asyncio.create_subprocess_exec("/bin/sh", "-c", script, stderr=PIPE))
        _, stderr = await wait(proc.communicate())
        assert proc.returncode != 0
        assert stderr  # the shell's complaint that there is no such file
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_child_inherits_only_its_stdio_and_pass_fds(loop_name: str) -> None:
    """The child has fds 0, 1 and 2 and those of pass_fds open, nothing else: no copy of a
    pipe end (a stray copy would keep a pipe from reaching EOF when the child closes its
    stdout), none of the loop's own fds."""
    read_end, write_end = os.pipe()
    try:
        proc = await wait(
            asyncio.create_subprocess_exec(
                "cat", stdin=PIPE, stdout=PIPE, stderr=PIPE, pass_fds=(write_end,)
            )
        )
        assert proc.stdin is not None and proc.stdout is not None
        # Once cat echoes, it is past its start-up (the dynamic loader and the locale open
        # files of their own for a while) and waits in read(): its fds are the inherited ones.
        proc.stdin.write(b"x")
        assert await wait(proc.stdout.readexactly(1)) == b"x"
        child_fds = {int(fd) for fd in os.listdir(f"/proc/{proc.pid}/fd")}
        proc.stdin.close()
        assert await wait(proc.communicate()) == (b"", b"")
    finally:
        os.close(read_end)
        os.close(write_end)
    if loop_name == "uvloop" and child_fds != {0, 1, 2, write_end}:
        pytest.xfail("uvloop: the child inherits its stdio sockets again at fds >= 3, and more")
    assert child_fds == {0, 1, 2, write_end}


SESSIONS = [
    pytest.param({}, "parent's", "parent's", id="default"),
    pytest.param({"start_new_session": True}, "own", "own", id="start_new_session"),
    pytest.param({"process_group": 0}, "own", "parent's", id="process_group"),
]


@pytest.mark.parametrize(("options", "group", "session"), SESSIONS)
async def test_session_and_process_group(
    options: dict[str, Any], group: str, session: str, loop_name: str
) -> None:
    """start_new_session=True: the child leads a new session (and process group);
    process_group=0 (Python 3.11+): it leads a new process group in our session; by default it
    stays in ours."""
    try:
        proc = await wait(asyncio.create_subprocess_exec("cat", stdin=PIPE, **options))
    except ValueError as exc:
        if loop_name == "uvloop" and "process_group" in str(exc):
            pytest.xfail("uvloop: no process_group (ValueError: unexpected kwargs: process_group)")
        raise
    try:
        _, ppid, pgrp, sid = proc_stat(proc.pid)
        assert ppid == os.getpid()
        assert pgrp == (proc.pid if group == "own" else os.getpgrp())
        assert sid == (proc.pid if session == "own" else os.getsid(0))
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        assert await wait(proc.wait()) == 0


async def test_cwd_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cwd (a path-like) sets the child's working directory; env replaces its environment (no
    PATH needed for an absolute program); without env the child inherits ours."""
    script = 'pwd; printf "%s|%s" "${EPOLLOOP_GIVEN-unset}" "${EPOLLOOP_OURS-unset}"'
    monkeypatch.setenv("EPOLLOOP_OURS", "inherited")
    proc = await wait(
        asyncio.create_subprocess_exec(
            "/bin/sh", "-c", script, cwd=tmp_path, env={"EPOLLOOP_GIVEN": "given"}, stdout=PIPE
        )
    )
    stdout, _ = await wait(proc.communicate())
    assert stdout == f"{os.path.realpath(tmp_path)}\ngiven|unset".encode()

    proc = await wait(asyncio.create_subprocess_exec("/bin/sh", "-c", script, stdout=PIPE))
    stdout, _ = await wait(proc.communicate())
    assert stdout == f"{os.getcwd()}\nunset|inherited".encode()


# -- closing the transport, reaping and file descriptors -----------------------------------


async def test_close_kills_a_running_child(loop_name: str) -> None:
    """transport.close() on a running child closes the pipes and kills it (SIGKILL): the
    protocol still gets pipe_connection_lost for each pipe, process_exited and
    connection_lost; the child is reaped. A second close() does nothing."""
    transport, protocol = await exec_recording("cat")
    pid = transport.get_pid()
    pipes = [pipe_of(transport, fd) for fd in (0, 1, 2)]
    transport.close()
    assert all(pipe.is_closing() for pipe in pipes)
    assert await wait(protocol.lost) is None
    assert transport.get_returncode() == -signal.SIGKILL
    check_callback_order(protocol.events, pipes=(0, 1, 2), loop_name=loop_name)
    assert ("process_exited", -signal.SIGKILL) in protocol.events
    transport.close()
    assert pid not in zombie_children()


async def test_is_closing(loop_name: str) -> None:
    """is_closing() is False until close() is called, True from then on, even while the
    killed child has not been reaped yet."""
    transport, protocol = await exec_recording("cat")
    assert not transport.is_closing()
    transport.close()
    closing = transport.is_closing()
    assert await wait(protocol.lost) is None
    if loop_name == "uvloop" and not closing:
        pytest.xfail("uvloop: is_closing() stays False after close() until the child is reaped")
    assert closing


async def test_close_after_the_exit_does_not_signal() -> None:
    """A child that has exited and whose pipes are closed: connection_lost comes without
    close(); kill(), terminate() and send_signal() then raise ProcessLookupError (the pid may
    be someone else's by now); close() afterwards keeps the exit code (nothing is killed)."""
    transport, protocol = await exec_recording("/bin/sh", "-c", "exit 3")
    assert await wait(protocol.lost) is None
    assert transport.get_returncode() == 3
    with pytest.raises(ProcessLookupError):
        transport.kill()
    with pytest.raises(ProcessLookupError):
        transport.terminate()
    with pytest.raises(ProcessLookupError):
        transport.send_signal(signal.SIGTERM)
    transport.close()
    assert transport.is_closing()
    assert transport.get_returncode() == 3


async def test_closed_early_child_is_reaped_while_loop_runs() -> None:
    """Children closed before they exit (with stdout and stderr piped, and without) are
    killed and reaped while the loop runs: each gets process_exited and connection_lost, and no
    zombie is left."""
    recordings = []
    for stdio in (PIPE, DEVNULL):
        transport, protocol = await exec_recording(
            "/bin/sh", "-c", "read line", stdin=PIPE, stdout=stdio, stderr=stdio
        )
        recordings.append(protocol)
        transport.close()
    for protocol in recordings:
        assert await wait(protocol.exited) == -signal.SIGKILL
        assert await wait(protocol.lost) is None
    assert not zombie_children() & {p.pid_at_made for p in recordings}


async def test_pipe_fds_are_closed_once_the_child_ends() -> None:
    """The parent's ends of the pipes are closed once the child has exited and its output has
    been read, while the loop still runs (not only when it closes)."""
    before = open_fds()

    def new_pipes() -> set[int]:
        # pipes or sockets (uvloop's pipes are socketpairs); uvloop also keeps a /dev/null
        # open for the loop's life
        return {fd for fd in open_fds() - before if _fd_target(fd).startswith(("pipe:", "socket:"))}

    proc = await wait(asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE, stderr=PIPE))
    assert len(new_pipes()) == 3  # the parent's ends of the three pipes
    assert await wait(proc.communicate(b"data")) == (b"data", b"")
    await until(lambda: not new_pipes(), "pipe fds closed")

    transport, protocol = await exec_recording("true")
    assert await wait(protocol.lost) is None
    transport.close()
    await until(lambda: not new_pipes(), "pipe fds closed")


@pytest.mark.epolloop_only
def test_close_after_the_loop_closed_kills_and_reaps_the_child(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """A transport still open when its loop closes, with its child running, closed afterwards
    (by hand here; by __del__ when it is collected): close() raises nothing, kills the child
    and reaps it at once (no loop will ever watch it again), and leaves no fd open.

    epolloop only: stock asyncio's close() raises RuntimeError('Event loop is closed') here
    (its pipe transports call_soon on the closed loop) before it kills anything, so the child
    keeps running and nobody reaps it; uvloop's raises RuntimeError('unable to perform
    operation on <UVProcessTransport ...>; the handler is closed')."""
    before = open_fds()
    loop = new_loop()
    transport, _ = loop.run_until_complete(
        exec_recording("sleep", "30", stdin=PIPE, stdout=PIPE, stderr=DEVNULL)
    )
    pid = transport.get_pid()
    loop.close()
    assert proc_stat(pid)[0] != "Z"  # closing the loop leaves the child be
    transport.close()
    assert transport.get_returncode() == -signal.SIGKILL
    with pytest.raises(ChildProcessError):  # reaped already: no zombie left in /proc
        os.waitpid(pid, os.WNOHANG)
    assert not os.path.exists(f"/proc/{pid}")
    assert open_fds() == before  # the loop's fds, the pipes and the pidfd
    transport.close()  # a second time: nothing more to do


@pytest.mark.epolloop_only
def test_a_forked_copy_of_the_loop_leaves_the_parents_child_alone(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """os.fork() while the loop has a running child; the forked process closes its copy of
    the loop (the usual advice) and lets the Process go: the child, which is the parent's, is
    not killed, and the parent's loop still sees it exit.

    epolloop only: on Python 3.11 stock asyncio's parent never sees the child exit (proc.wait()
    hangs): the fork's loop.close() unregisters the self-pipe from the epoll instance the two
    processes share, and the ThreadedChildWatcher wakes the loop through that self-pipe.
    (asyncio 3.12+ and uvloop pass.)"""
    loop = new_loop()
    proc = loop.run_until_complete(wait(asyncio.create_subprocess_exec("sleep", "30")))
    with warnings.catch_warnings():
        # Python 3.12+ warns if other threads exist: they can only be libuv's idle workers
        # (left by earlier uvloop tests), which the forked process never needs
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        forked = os.fork()
    if forked == 0:  # the forked process: it must never return into pytest
        status = 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the Process it drops is unclosed
                loop.close()
                del proc
                gc.collect()
            status = 0
        finally:
            os._exit(status)
    assert exit_code_of(forked) == 0
    assert proc_stat(proc.pid)[0] not in ("Z", "X")
    os.kill(proc.pid, 0)  # still there
    # SIGTERM, not SIGKILL: a child that the fork had killed would report -SIGKILL
    proc.terminate()
    assert loop.run_until_complete(wait(proc.wait())) == -signal.SIGTERM


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["program", "cwd"])
async def test_program_that_cannot_run(missing: str) -> None:
    """A program or a cwd that does not exist: subprocess_exec raises FileNotFoundError
    (errno ENOENT); no pipe is left open, no child is left behind, the protocol never hears of
    a connection."""
    loop = asyncio.get_running_loop()
    made: list[Recording] = []

    def factory() -> Recording:
        made.append(Recording())
        return made[-1]

    args = ("/nonexistent/epolloop-test",) if missing == "program" else ("true",)
    kwargs = {"cwd": "/nonexistent/epolloop-test"} if missing == "cwd" else {}
    with pytest.raises(FileNotFoundError) as caught:
        await wait(loop.subprocess_exec(factory, *args, **kwargs))
    assert caught.value.errno == errno.ENOENT
    assert all(protocol.events == [] for protocol in made)
    with pytest.raises(FileNotFoundError):
        await wait(asyncio.create_subprocess_exec(*args, **kwargs))


BAD_ARGUMENTS = [
    ("exec", "true", {"universal_newlines": True}),
    ("exec", "true", {"text": True}),
    ("exec", "true", {"encoding": "utf-8"}),
    ("exec", "true", {"errors": "strict"}),
    ("exec", "true", {"bufsize": 1}),
    ("exec", "true", {"bufsize": -1}),
    ("exec", "true", {"shell": True}),
    ("shell", "true", {"universal_newlines": True}),
    ("shell", "true", {"text": True}),
    ("shell", "true", {"encoding": "utf-8"}),
    ("shell", "true", {"errors": "strict"}),
    ("shell", "true", {"bufsize": 1}),
    ("shell", "true", {"shell": False}),
    ("shell", ["true"], {}),
    ("shell", 42, {}),
]


def _bad_argument_id(case: tuple[str, Any, dict[str, Any]]) -> str:
    method, cmd, kwargs = case
    given = ",".join(f"{key}={value!r}" for key, value in kwargs.items()) or f"cmd={cmd!r}"
    return f"{method}-{given}"


@pytest.mark.parametrize(
    ("method", "cmd", "kwargs"),
    BAD_ARGUMENTS,
    ids=[_bad_argument_id(case) for case in BAD_ARGUMENTS],
)
async def test_arguments_asyncio_rejects(
    method: str, cmd: Any, kwargs: dict[str, Any], loop_name: str
) -> None:
    """Text mode, buffering, the wrong shell= and (for the shell) a command that is not str or
    bytes: ValueError, exactly, before any process is started or protocol made."""
    loop = asyncio.get_running_loop()
    made: list[Recording] = []

    def factory() -> Recording:
        made.append(Recording())
        return made[-1]

    start = loop.subprocess_exec if method == "exec" else loop.subprocess_shell
    with pytest.raises(Exception) as caught:
        await wait(start(factory, cmd, **kwargs))
    if loop_name == "uvloop" and type(caught.value) is TypeError:
        pytest.xfail("uvloop: a shell command that is not str or bytes gives TypeError (late)")
    assert type(caught.value) is ValueError, repr(caught.value)
    assert made == []


async def test_create_subprocess_rejects_the_wrong_shell() -> None:
    """create_subprocess_exec(shell=True) and create_subprocess_shell(shell=False) pass the
    option on to the loop, which refuses it."""
    with pytest.raises(ValueError):
        await wait(asyncio.create_subprocess_exec("true", shell=True))
    with pytest.raises(ValueError):
        await wait(asyncio.create_subprocess_shell("true", shell=False))
