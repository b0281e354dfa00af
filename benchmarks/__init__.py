"""Benchmarks: epolloop against stock asyncio, uvloop and rloop, side by side.

One module per concern, each runnable on its own:

    python -m benchmarks.timer_precision   how late (or early) timers fire
    python -m benchmarks.loop_internals    call_soon, call_later churn, sleep(0), threadsafe

``_loops`` says which loops exist here and how to make one; nothing else is shared.
"""
