"""What the benchmarks read from the machine: CPU and memory of processes (/proc), the cores to
pin server and client to, other processes' CPU during a run (the noise warning), the C tools
compiled for this run, and a description of the machine for the report."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_CEILING_SOURCES = Path(__file__).with_name("ceiling")


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process *pid* has used so far, to the nanosecond: from
    its CPU-time clock (clock_getcpuclockid(3): CPUCLOCK_SCHED of the whole process), where
    /proc/PID/stat counts 10 ms ticks — too coarse for a short run of a fast server, whose
    CPU time then read 0."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS


def process_rss(pid: int) -> int:
    """Resident memory of process *pid*, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass(frozen=True)
class Cores:
    """Where the server runs and where its load client runs: different cores when there are
    two or more, so the client never takes the server's CPU."""

    server: frozenset[int]
    client: frozenset[int]

    @classmethod
    def split(cls) -> Cores:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(frozenset(cores), frozenset(cores))
        return cls(frozenset(cores[:1]), frozenset(cores[1:]))

    @property
    def client_threads(self) -> int:
        return len(self.client - self.server) or 1


def pinned(cores: frozenset[int]) -> dict[str, object]:
    """subprocess.Popen arguments that start the child on *cores* only."""
    return {"preexec_fn": lambda: os.sched_setaffinity(0, cores)}


class Noise:
    """CPU taken by processes other than ours while a measurement runs, in cores (0.25 = a
    quarter of one core on average). Ours are this process and the children it has reaped
    since, which is every process a measurement starts. Interrupt time is left out: loopback
    traffic is processed in softirq on behalf of whoever sent it."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (fields[0] + fields[1] + fields[2] + fields[7]) / _TICKS
        ours = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return time.monotonic(), busy, ours

    def cores(self) -> float:
        start, busy, ours = self._start
        end, busy_now, ours_now = self._sample()
        others = (busy_now - busy) - (ours_now - ours)
        return max(0.0, others / max(end - start, 1e-9))


def compile_tools(directory: Path) -> dict[str, Path] | None:
    """The C load client and the C ceiling server, compiled into *directory*; None without a
    C compiler (the workloads that need them are then skipped)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    tools = {}
    for name in ("load_client", "server"):
        binary = directory / name
        source = _CEILING_SOURCES / f"{name}.c"
        subprocess.run([compiler, "-O2", "-pthread", "-o", str(binary), str(source)], check=True)
        tools[name] = binary
    return tools


def describe() -> dict[str, object]:
    """The machine and software a run measured, for the report."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    versions = {}
    for package in ("epolloop", "uvloop", "rloop", "aiohttp", "httptools"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(memory) / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }
