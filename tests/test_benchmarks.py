"""The benchmark suite's smoke test: `python -m benchmarks` runs end to end with tiny durations,
one round, on epolloop and stock asyncio, and writes its table, JSON file and charts, so that
the README's main command cannot rot between measurements. Figures are not checked here
(speed is the benchmarks' business, never the tests')."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import GUARD

ROOT = Path(__file__).resolve().parent.parent
HAVE_CC = shutil.which("cc") is not None or shutil.which("gcc") is not None


def _benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=8 * GUARD,
    )


def _run(output: Path, workloads: str) -> tuple[str, dict]:
    done = _benchmarks(
        "--workloads",
        workloads,
        "--loops",
        "epolloop,asyncio",
        "--rounds",
        "1",
        "--duration",
        "0.05",
        "--output",
        str(output),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads((output / "benchmarks.json").read_text())


def _figures(report: dict, workload: str, loop: str) -> dict[str, float]:
    (record,) = [r for r in report["records"] if r["workload"] == workload and r["loop"] == loop]
    assert record["error"] is None, record["error"]
    return record["figures"]


def test_in_process_workloads(tmp_path: Path) -> None:
    out, report = _run(tmp_path, "internals,timers,transports")
    for family in ("internals", "timers", "transports"):
        assert f"\n{family}\n" in out
    assert "speed relative to asyncio" in out  # the reference when uvloop is not compared
    names = {w["name"] for w in report["workloads"]}
    assert {"call_soon chain", "threadsafe ping-pong", "loop creation", "udp ping-pong"} <= names
    assert {r["loop"] for r in report["records"]} == {"epolloop", "asyncio"}
    for loop in ("epolloop", "asyncio"):
        assert _figures(report, "gather", loop)["rate"] > 0
    timer = next(n for n in names if n.startswith("timer error"))
    assert set(_figures(report, timer, "epolloop")) >= {"p50", "p99", "max", "early"}
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "internals.png").stat().st_size > 0
    # A saved run's report again, as Markdown for the README, without measuring anything.
    again = _benchmarks(
        "--report", str(tmp_path / "benchmarks.json"), "--markdown", "--output", str(tmp_path)
    )
    assert again.returncode == 0, again.stderr
    assert "### internals" in again.stdout and "| call_soon chain | ops/s |" in again.stdout
    assert "command: python -m benchmarks --workloads internals,timers,transports" in again.stdout


@pytest.mark.skipif(not HAVE_CC, reason="the I/O workloads compile their C client and server")
def test_io_workloads_against_the_c_ceiling(tmp_path: Path) -> None:
    workloads = "echo tcp protocol 1KiB x10,echo unix sock,http httptools,scale"
    out, report = _run(tmp_path, workloads)
    assert "C ceiling" in out
    assert "round trips/s" in out and "requests/s" in out
    for workload in ("echo tcp protocol 1KiB x10", "echo unix sock 1KiB x10"):
        for loop in ("epolloop", "asyncio", "C ceiling"):
            figures = _figures(report, workload, loop)
            assert figures["cpu_us"] > 0 and figures["rate"] > 0
    for loop in ("epolloop", "C ceiling"):
        assert _figures(report, "http httptools x10", loop)["rate"] > 0
    assert _figures(report, "idle connections x10000", "epolloop")["kib_per_connection"] > 0


def test_selection_and_listing() -> None:
    listed = _benchmarks("--list").stdout.splitlines()
    assert len(listed) == 6  # the default run: one workload per family
    full = _benchmarks("--list", "--full").stdout.splitlines()
    assert len(full) > 50
    assert any("echo tcp streams 100KiB x100" in line for line in full)
    echo = _benchmarks("--list", "--workloads", "echo").stdout.splitlines()
    assert echo and all(line.startswith("echo") for line in echo)
    for bad in (["--workloads", "nothing-like-this"], ["--loops", "no-such-loop"]):
        done = _benchmarks(*bad)
        assert done.returncode != 0 and ("no workload" in done.stderr or "unknown" in done.stderr)


@pytest.mark.skipif(not HAVE_CC, reason="the stress command's good client is the C load client")
def test_stress_command() -> None:
    done = _benchmarks(
        "stress", "--seconds", "0.5", "--connections", "50", "--loops", "epolloop,asyncio"
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    for loop in ("epolloop", "asyncio"):
        assert rows[loop][1] == "50", done.stdout  # the good connections all held
        assert rows[loop][-2:] == ["0", "yes"], done.stdout  # no error reported; alive
