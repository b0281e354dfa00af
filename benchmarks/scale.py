"""Memory per idle connection: an echo Protocol server holding 10,000 open connections.

The C client (load_client.c in idle mode) opens the connections and echoes one byte on each,
so the server has surely accepted every one and made its transport and protocol; the figure
is the growth of the server's resident memory divided by the connections (the kernel's socket
buffers are in no process's RSS). There is no C ceiling here: the C server keeps a few dozen
bytes per connection, a figure about C, not about loops.
"""

from __future__ import annotations

import subprocess
from functools import partial

from ._machine import pinned, process_rss
from ._suite import Context, Figure, RunFailed, Workload, server_command, serving
from .echo import client_address, start

CONNECTIONS = 10_000


def measure(connections: int, ctx: Context, loop: str) -> dict[str, float]:
    assert ctx.tools is not None
    server = server_command(loop, "echo", start, ctx, kind="protocol", address="127.0.0.1:0")
    with serving(*server, ctx.cores) as (pid, printed):
        before = process_rss(pid)
        client = subprocess.Popen(
            [str(ctx.tools["load_client"]), "idle", client_address(printed), str(connections)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **pinned(ctx.cores.client),  # type: ignore[arg-type]
        )
        try:
            ready = client.stdout.readline().strip()  # type: ignore[union-attr]
            if ready != "ready":
                raise RunFailed(f"idle client: {client.stderr.read().strip()}")  # type: ignore[union-attr]
            after = process_rss(pid)
        finally:
            client.communicate()  # closes its stdin: it closes every connection and exits
    return {"kib_per_connection": (after - before) / connections / 1024}


def workloads() -> list[Workload]:
    return [
        Workload(
            family="scale",
            name=f"idle connections x{CONNECTIONS}",
            figures=(Figure("kib_per_connection", "server KiB/connection"),),
            measure=partial(measure, CONNECTIONS),
            default=True,
            needs_tools=True,
        )
    ]
