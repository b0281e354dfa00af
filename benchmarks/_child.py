"""The measuring process: every measurement runs in a fresh interpreter, started by the driver
with the loop's environment (``EPOLLOOP_NO_EXTENSIONS=1`` for the pure core), so no loop sees
another's imports, heap or garbage.

    python -m benchmarks._child run MODULE:FUNCTION LOOP ARGUMENTS_JSON
        FUNCTION(loop_factory, **arguments) -> {figure: value}; printed as JSON

    python -m benchmarks._child serve MODULE:FUNCTION LOOP ARGUMENTS_JSON
        await FUNCTION(**arguments) -> address, inside LOOP; the address is printed, then the
        server serves until this process's stdin closes
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import resource
import sys
from collections.abc import Callable
from typing import Any

from ._loops import factory


def _function(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


async def _serve(start: Callable[..., Any], arguments: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    print(await start(**arguments), flush=True)
    stdin_closed = loop.create_future()
    loop.add_reader(0, lambda: stdin_closed.done() or stdin_closed.set_result(None))
    await stdin_closed
    loop.remove_reader(0)


def _raise_file_limit() -> None:
    """Servers hold tens of thousands of connections (the scale workload): raise the open
    files limit as far as the kernel lets anyone (fs.nr_open) when privileged, else to the
    hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with open("/proc/sys/fs/nr_open") as nr_open:
        most = int(nr_open.read())
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    mode, target, loop_name, arguments = sys.argv[1:5]
    function, make_loop, kwargs = _function(target), factory(loop_name), json.loads(arguments)
    _raise_file_limit()
    # A fresh interpreter's first collections walk everything the imports left behind (over
    # a millisecond here): move that out of the collector's sight, so what we measure is the
    # loop's work, not start-up's. The loop's own garbage is still collected.
    gc.collect()
    gc.freeze()
    if mode == "run":
        print(json.dumps(function(make_loop, **kwargs)), flush=True)
    elif mode == "serve":
        with asyncio.Runner(loop_factory=make_loop) as runner:
            runner.run(_serve(function, kwargs))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
