"""The benchmark suite's smoke test: each benchmark runs end to end with tiny sizes and prints
its table, so that `python -m benchmarks` cannot rot between measurements. Figures are not
checked here (speed is the benchmarks' business, never the tests')."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import GUARD

ROOT = Path(__file__).resolve().parent.parent


def _benchmark(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=4 * GUARD,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_loop_internals() -> None:
    out = _benchmark(
        "benchmarks.loop_internals", "--rounds", "1", "--scale", "0.01", "--loops", "epolloop"
    )
    assert "call_soon chain" in out
    assert "threadsafe burst" in out


def test_timer_precision() -> None:
    out = _benchmark(
        "benchmarks.timer_precision", "--rounds", "1", "--timers", "20", "--loops", "epolloop"
    )
    assert "epolloop" in out


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="benchmarks.echo compiles its C client and ceiling server: no C compiler here",
)
def test_echo_against_the_c_ceiling() -> None:
    out = _benchmark(
        "benchmarks.echo",
        "--rounds",
        "1",
        "--duration",
        "0.2",
        "--kinds",
        "protocol,sock",
        "--loops",
        "epolloop",
    )
    assert "C ceiling" in out
    assert "protocol" in out and "sock" in out
