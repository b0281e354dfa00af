"""python -m epolloop: run an unmodified asyncio program with epolloop as its event loop.

    python -m epolloop SCRIPT [ARGS...]
    python -m epolloop -m MODULE [ARGS...]
    python -m epolloop --version

The program runs as ``python SCRIPT`` or ``python -m MODULE`` would run it — as ``__main__``,
with its own argv, sys.path and exit code — except that asyncio's loop is epolloop's:
asyncio.run(), asyncio.Runner() and asyncio.new_event_loop() inside it all make epolloop loops
(through the event loop policy). A traceback shows the program's frames, not ours.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import runpy
import sys
import traceback
from types import TracebackType

import epolloop

_USAGE = "usage: python -m epolloop [--version] (SCRIPT | -m MODULE) [ARGS...]"


def version() -> str:
    """The version, the live core and the kernel facilities the loop runs on."""
    return (
        f"epolloop {epolloop.__version__} (core: {epolloop.core}; "
        f"Python {platform.python_version()}; Linux {platform.release()}: "
        "epoll, timerfd, eventfd, pidfd, set_wakeup_fd)"
    )


def _program_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the program's first frame on: runpy's and ours dropped."""
    here = os.path.abspath(__file__)
    while tb is not None and (
        os.path.abspath(tb.tb_frame.f_code.co_filename) == here
        or tb.tb_frame.f_globals.get("__name__") == "runpy"
    ):
        tb = tb.tb_next
    return tb


def _run(argv: list[str]) -> None:
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit(f"{_USAGE}\nepolloop: -m needs a module name")
        module = argv[1]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise SystemExit(f"epolloop: No module named {module!r}")
        sys.argv = [module, *argv[2:]]  # runpy sets argv[0] to the module's file
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        if not os.path.exists(script):
            raise SystemExit(f"epolloop: can't open file {script!r}: no such file")
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(script))  # as python SCRIPT has it
        runpy.run_path(script, run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{_USAGE}\n\n{__doc__.strip().splitlines()[0]}")
        raise SystemExit(0 if argv else 2)
    if argv[0] == "--version":
        print(version())
        return
    epolloop.install()
    try:
        _run(argv)
    except (SystemExit, KeyboardInterrupt):
        raise  # the program's exit code; Ctrl-C as Python ends a program on it
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, _program_frames(exc.__traceback__))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
