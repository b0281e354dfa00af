"""Benchmarks: epolloop against stock asyncio, uvloop and rloop, side by side, with a C epoll
server as the ceiling. ``python -m benchmarks`` runs them (see ``__main__``).

    __main__            the command: choose workloads and loops, run, report
    _suite              what a workload is; measuring in child processes; interleaved rounds
    _child              the measuring process (one fresh interpreter per measurement)
    _loops              the loops by name, and how a child makes one
    _machine            /proc figures, core pinning, the noise estimate, the C tools
    _report             medians and ratios, the table, JSON, charts
    echo, http_keepalive, scale            servers loaded by the C client (ceiling/)
    loop_internals, timer_precision, unix_transports   in-process workloads
"""
