"""epolloop.pytest_plugin: a user's pytest-asyncio suite runs on epolloop with the one line of
configuration the README shows (a real pytest run in a subprocess, through pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

_SUITE = """
import asyncio

import pytest


@pytest.fixture
async def loop_module():
    return type(asyncio.get_running_loop()).__module__


async def test_runs_on_epolloop(loop_module):
    assert loop_module == "epolloop.loop"
    assert type(asyncio.get_running_loop()).__module__ == "epolloop.loop"
    await asyncio.sleep(0)
"""


def test_one_line_of_configuration_puts_the_suite_on_epolloop(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=_SUITE)
    pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\nasyncio_mode = "auto"\naddopts = "-p epolloop.pytest_plugin"\n'
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_without_the_plugin_the_suite_runs_on_asyncio(pytester: pytest.Pytester) -> None:
    """The check above can fail: the same suite without the line is not on epolloop."""
    pytester.makepyfile(test_user=_SUITE)
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nasyncio_mode = "auto"\n')
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
