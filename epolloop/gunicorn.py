"""A gunicorn worker class for aiohttp applications on epolloop: N processes share one
listening socket, each running its own epolloop loop — the way to use every core.

    gunicorn myapp:make_app --worker-class epolloop.gunicorn.EpolloopWebWorker --workers 4

``myapp:make_app`` is an aiohttp ``web.Application``, or a coroutine function returning one
(aiohttp's own worker rules). Needs aiohttp and gunicorn installed.
"""

from __future__ import annotations

import asyncio

from aiohttp.worker import GunicornWebWorker

import epolloop


class EpolloopWebWorker(GunicornWebWorker):  # type: ignore[misc]
    """aiohttp's gunicorn worker, with epolloop as the loop of the worker process."""

    def init_process(self) -> None:
        # Forked from the arbiter: every loop this process makes from now on is epolloop's.
        # aiohttp's own worker then makes the worker's loop with asyncio.new_event_loop().
        asyncio.set_event_loop_policy(epolloop.EventLoopPolicy())
        super().init_process()
