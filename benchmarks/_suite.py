"""What a workload is, how one is measured in child processes, and the rounds that interleave
the loops.

A workload measures one loop (or the C ceiling) once and returns its figures. The driver runs
every selected workload on every selected loop, round after round, rotating the order of the
loops each round (A B C D, B C D A, ...) so that drift in the machine's speed falls on all of
them alike; the report takes medians and ratios from these rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._loops import CEILING, environment, rotated
from ._machine import Cores, Noise, pinned, process_cpu

_ROOT = Path(__file__).resolve().parent.parent


class RunFailed(Exception):
    """A measuring process failed: the loop lacks something the workload needs, or broke."""


@dataclass(frozen=True)
class Figure:
    key: str
    unit: str
    higher_is_better: bool = False


@dataclass(frozen=True)
class Context:
    duration: float  # seconds of load per run; in-process workloads scale their size with it
    tools: dict[str, Path] | None  # the compiled C load client and ceiling server
    cores: Cores
    wrk: str | None = None  # wrk's path, when HTTP is to be loaded by wrk
    round: int = 0


@dataclass(frozen=True)
class Workload:
    family: str
    name: str
    figures: tuple[Figure, ...]  # the first is the headline: ratios and charts use it
    # (context, loop name) -> figures; None for a workload read back from a saved run
    measure: Callable[[Context, str], dict[str, float]] | None
    ceiling: str | None = None  # workloads sharing this key load the C server identically
    default: bool = False  # part of the default (short) run
    needs_tools: bool = False  # skipped without a C compiler
    note: str = ""  # the unit of the "rate" figure shown under the headline, e.g. requests/s
    group: str = ""  # the chart it is drawn in, when not its family's

    @property
    def chart(self) -> str:
        return self.group or self.family

    @classmethod
    def described(cls, entry: dict[str, Any]) -> Workload:
        """A workload as describe_workload saved it: enough to report on, not to measure."""
        figures = tuple(Figure(**figure) for figure in entry["figures"])
        fields = {key: entry[key] for key in ("ceiling", "note", "group") if key in entry}
        return cls(entry["family"], entry["name"], figures, None, **fields)


def describe_workload(workload: Workload) -> dict[str, Any]:
    """What a saved run keeps of a workload (see Workload.described)."""
    return {
        "family": workload.family,
        "name": workload.name,
        "figures": [vars(figure) for figure in workload.figures],
        "ceiling": workload.ceiling,
        "note": workload.note,
        "group": workload.group,
    }


@dataclass
class Record:
    round: int
    workload: str
    loop: str
    figures: dict[str, float] = field(default_factory=dict)
    noise: float = 0.0  # other processes' CPU during the run, in cores
    seconds: float = 0.0
    error: str | None = None


def _child_command(mode: str, function: Callable[..., Any], loop: str, **arguments: Any):
    target = f"{function.__module__}:{function.__qualname__}"
    return [sys.executable, "-m", "benchmarks._child", mode, target, loop, json.dumps(arguments)]


def _child_env(loop: str) -> dict[str, str]:
    return {**os.environ, **environment(loop)}


def run_in_child(function: Callable[..., dict[str, float]], loop: str, **arguments: Any):
    """function(loop_factory, **arguments) in a fresh interpreter running *loop*."""
    done = subprocess.run(
        _child_command("run", function, loop, **arguments),
        env=_child_env(loop),
        cwd=_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RunFailed(_last_lines(done.stderr))
    return json.loads(done.stdout.splitlines()[-1])


def _last_lines(text: str, count: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-count:]) or "no output"


@contextmanager
def running(
    argv: list[str], env: dict[str, str], cores: frozenset[int]
) -> Iterator[tuple[int, str]]:
    """A process that prints one line when it is ready (a server its address) and runs until
    its stdin closes, started on *cores*; yields (pid, that line)."""
    server = subprocess.Popen(
        argv,
        env=env,
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **pinned(cores),  # type: ignore[arg-type]
    )
    try:
        line = server.stdout.readline().strip()  # type: ignore[union-attr]
        if not line:
            server.wait(timeout=30)
            raise RunFailed(_last_lines(server.stderr.read()))  # type: ignore[union-attr]
        yield server.pid, line
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()  # type: ignore[union-attr]
        server.stderr.close()  # type: ignore[union-attr]


def server_command(
    loop: str, ceiling_mode: str, start: Callable[..., Any], ctx: Context, **arguments: Any
) -> tuple[list[str], dict[str, str]]:
    """How to start the server under test: the C ceiling server in *ceiling_mode*, or
    await start(**arguments) in a child running *loop*."""
    if loop == CEILING:
        assert ctx.tools is not None
        return [str(ctx.tools["server"]), ceiling_mode, arguments["address"]], dict(os.environ)
    return _child_command("serve", start, loop, **arguments), _child_env(loop)


def run_client(argv: list[str], cores: Cores) -> str:
    """Run a load client on the client's cores; its stdout."""
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        **pinned(cores.client),  # type: ignore[arg-type]
    )
    if done.returncode != 0:
        raise RunFailed(f"load client: {_last_lines(done.stderr + done.stdout)}")
    return done.stdout


def loaded(
    server: tuple[list[str], dict[str, str]],
    client: Callable[[str, float], list[str]],
    count: Callable[[str], int],
    ctx: Context,
) -> dict[str, float]:
    """Load a server with a client and report the server's CPU per request.

    *client(address, seconds)* is the client's command line, *count(stdout)* the requests it
    completed. A short unmeasured warm-up comes first: a fresh server is not yet in its steady
    state (stock asyncio pays glibc's mmap for each 256 KiB read buffer until it has freed one).
    """
    with running(*server, ctx.cores.server) as (pid, address):
        run_client(client(address, max(0.1, ctx.duration / 10)), ctx.cores)
        before = process_cpu(pid)
        started = time.monotonic()
        requests = count(run_client(client(address, ctx.duration), ctx.cores))
        elapsed = time.monotonic() - started
        cpu = process_cpu(pid) - before
    if requests <= 0:
        raise RunFailed("the client completed no request")
    return {"cpu_us": cpu / requests * 1e6, "rate": requests / elapsed}


Progress = Callable[[int, int, int, Workload, str], None]


def run_rounds(
    workloads: list[Workload],
    loops: list[str],
    rounds: int,
    make_context: Callable[[int], Context],
    progress: Progress,
) -> list[Record]:
    """Every workload on every loop (and its C ceiling), *rounds* times, interleaved."""
    total = rounds * sum(len(loops) + (w.ceiling is not None) for w in workloads)
    records: list[Record] = []
    done = 0
    for round_index in range(rounds):
        ctx = make_context(round_index)
        ceilings: dict[str, Record] = {}  # one ceiling run per key and round serves them all
        for workload in workloads:
            names = [*loops, CEILING] if workload.ceiling else loops
            for name in rotated(names, round_index):
                progress(done, total, round_index, workload, name)
                done += 1
                if name == CEILING and workload.ceiling in ceilings:
                    shared = ceilings[workload.ceiling]
                    records.append(Record(**{**vars(shared), "workload": workload.name}))
                    continue
                record = _measure(workload, name, ctx)
                records.append(record)
                if name == CEILING:
                    ceilings[workload.ceiling] = record  # type: ignore[index]
    progress(total, total, rounds - 1, workloads[-1], "")
    return records


def _measure(workload: Workload, loop: str, ctx: Context) -> Record:
    record = Record(ctx.round, workload.name, loop)
    noise = Noise()
    started = time.monotonic()
    try:
        assert workload.measure is not None, "a workload read back from a report"
        record.figures = workload.measure(ctx, loop)
    except (RunFailed, subprocess.SubprocessError, OSError, ValueError) as exc:
        record.error = str(exc) or type(exc).__name__
    record.seconds = time.monotonic() - started
    record.noise = noise.cores()
    return record
