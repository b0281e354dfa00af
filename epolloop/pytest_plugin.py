"""pytest-asyncio on epolloop: every async test and async fixture runs on an epolloop loop.

One line of configuration turns it on, in pyproject.toml::

    [tool.pytest.ini_options]
    addopts = "-p epolloop.pytest_plugin"

(or ``pytest_plugins = ["epolloop.pytest_plugin"]`` in the top-level conftest.py). It answers
pytest-asyncio's ``pytest_asyncio_loop_factories`` hook (pytest-asyncio 1.3+). A conftest.py
that answers the hook itself takes precedence, e.g. to run each test on epolloop and stock
asyncio side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import epolloop


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    return {"epolloop": epolloop.new_event_loop}
