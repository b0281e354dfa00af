"""Memory per idle connection: an echo Protocol server holding 10,000 open connections.

The C client (load_client.c in idle mode) opens the connections and echoes one byte on each,
so the server has surely accepted every one and made its transport and protocol; the figure
is the growth of the server's resident memory divided by the connections (the kernel's socket
buffers are in no process's RSS). There is no C ceiling here: the C server keeps a few dozen
bytes per connection, a figure about C, not about loops.
"""

from __future__ import annotations

import os
import resource
from functools import partial

from ._machine import process_rss
from ._suite import Context, Figure, RunFailed, Workload, running, server_command
from .echo import client_address, start

CONNECTIONS = 10_000


def _descriptors_for(connections: int) -> None:
    """Make sure the server may open *connections* sockets (children inherit the limit)."""
    needed = connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, needed))  # with CAP_SYS_RESOURCE
    except (ValueError, OSError):
        raise RunFailed(
            f"{connections:,} connections need {needed:,} descriptors, and the hard limit "
            f"here is {hard:,} (raising it takes root's CAP_SYS_RESOURCE: ulimit -Hn)"
        ) from None


def measure(connections: int, ctx: Context, loop: str) -> dict[str, float]:
    assert ctx.tools is not None
    _descriptors_for(connections)
    server = server_command(loop, "echo", start, ctx, kind="protocol", address="127.0.0.1:0")
    with running(*server, ctx.cores.server) as (pid, printed):
        before = process_rss(pid)
        client = [str(ctx.tools["load_client"]), "idle", client_address(printed)]
        # It prints "ready" once every connection is open and has echoed a byte; it closes
        # them all when its stdin closes, at the end of this block.
        with running([*client, str(connections)], dict(os.environ), ctx.cores.client):
            after = process_rss(pid)
    return {"kib_per_connection": (after - before) / connections / 1024}


def workloads(connections: int = CONNECTIONS) -> list[Workload]:
    return [
        Workload(
            family="scale",
            name=f"idle connections x{connections}",
            figures=(Figure("kib_per_connection", "server KiB/connection"),),
            measure=partial(measure, connections),
            default=True,
            needs_tools=True,
        )
    ]
