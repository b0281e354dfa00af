"""python -m epolloop: an unmodified asyncio program, run on epolloop as python would run it.

Each test starts a real ``python -m epolloop ...`` and checks what the program saw (its loop,
argv, __name__, sys.path) and what its parent sees (exit code, stdout, stderr). The command
is epolloop's own, so these tests run once, not per loop.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from signal import SIGINT

import pytest
from _helpers import GUARD, Child

import epolloop

# What a program reports of the loops asyncio gives it (and of itself), one line each.
_REPORT = """\
import asyncio, sys

async def main():
    print(type(asyncio.get_running_loop()).__module__)
    return 0

print(__name__, sys.argv[1:])
asyncio.run(main())
with asyncio.Runner() as runner:
    runner.run(main())
loop = asyncio.new_event_loop()
print(type(loop).__module__)
loop.close()
"""


def _epolloop(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "epolloop", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=GUARD,
    )


def test_script_runs_as_main_on_epolloop(tmp_path: Path) -> None:
    script = tmp_path / "report.py"
    script.write_text(_REPORT)
    done = _epolloop(str(script), "one", "--two")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "__main__ ['one', '--two']",
        "epolloop.loop",  # asyncio.run
        "epolloop.loop",  # asyncio.Runner
        "epolloop.loop",  # asyncio.new_event_loop
    ]


def test_module_runs_as_main_on_epolloop(tmp_path: Path) -> None:
    (tmp_path / "report.py").write_text(_REPORT)
    done = _epolloop("-m", "report", "x", cwd=tmp_path)  # found on sys.path: the cwd, as -m
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "__main__ ['x']"
    assert done.stdout.splitlines()[1:] == ["epolloop.loop"] * 3


def test_script_imports_its_neighbours_and_exits_with_its_code(tmp_path: Path) -> None:
    """sys.path[0] is the script's directory (as for python SCRIPT), and SystemExit's code
    is the process's."""
    (tmp_path / "neighbour.py").write_text("CODE = 7\n")
    script = tmp_path / "exits.py"
    script.write_text(
        "import asyncio, sys, neighbour\n"
        "async def main():\n"
        "    return neighbour.CODE\n"
        "sys.exit(asyncio.run(main()))\n"
    )
    done = _epolloop(str(script), cwd=Path("/"))
    assert done.returncode == 7, done.stderr


def test_traceback_shows_the_programs_frames(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    raise LookupError('from the program')\n"
        "asyncio.run(main())\n"
    )
    done = _epolloop(str(script))
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):\n"), done.stderr
    assert f'File "{script}", line 4, in <module>' in done.stderr
    assert done.stderr.rstrip().endswith("LookupError: from the program")
    assert "runpy" not in done.stderr
    assert "epolloop/__main__.py" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-script.py"], "epolloop: can't open file 'no-such-script.py'"),
        (["-m", "no_such_module_here"], "epolloop: No module named 'no_such_module_here'"),
        (["-m"], "epolloop: -m needs a module name"),
    ],
)
def test_bad_target_is_one_line_and_a_failure(args: list[str], message: str) -> None:
    done = _epolloop(*args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_no_arguments_print_the_usage() -> None:
    done = _epolloop()
    assert done.returncode == 2
    assert "usage: python -m epolloop" in done.stdout


def test_version_names_the_core_and_the_kernel_facilities() -> None:
    done = _epolloop("--version")
    assert done.returncode == 0
    line = done.stdout.strip()
    assert line.startswith(f"epolloop {epolloop.__version__} (core: {epolloop.core};")
    for facility in ("epoll", "timerfd", "eventfd", "pidfd"):
        assert facility in line


def test_ctrl_c_cancels_the_main_task_and_exits_interrupted(tmp_path: Path) -> None:
    script = tmp_path / "waits.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    asyncio.get_running_loop().call_soon(lambda: print('ready', flush=True))\n"
        "    try:\n"
        "        await asyncio.Event().wait()\n"
        "    except asyncio.CancelledError:\n"
        "        print('cancelled', flush=True)\n"
        "        raise\n"
        "asyncio.run(main())\n"
    )
    with Child([sys.executable, "-m", "epolloop", str(script)]) as child:
        child.expect("ready")
        child.interrupt()
        returncode, out, err = child.finish()
    assert out == ["cancelled"], err
    # Uncaught KeyboardInterrupt: Python ends itself with SIGINT, as for python SCRIPT.
    assert returncode == -SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
