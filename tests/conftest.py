"""Every test runs on every loop: epolloop, stock asyncio (the reference) and uvloop when it is
installed. ``--loop module:callable`` adds any other loop factory, so the suite doubles as a
conformance suite for asyncio loops; ``--loops a,b`` keeps only the named ones.

epolloop runs on both of its cores: "epolloop" is the live core (``epolloop.new_event_loop``:
the C core, unless it is not built or ``EPOLLOOP_NO_EXTENSIONS=1`` is set) and, when that is
the C core, "epolloop-pure" is the pure-Python core (``epolloop.loop.PythonLoop``) beside it.
``--loops epolloop-pure`` selects the pure core by name on any build (where the pure core is
the live one, "epolloop" and "epolloop-pure" are then the same core under two names).

Async tests get their loop from pytest-asyncio, through the ``pytest_asyncio_loop_factories``
hook below. Synchronous tests that drive a loop themselves take the ``new_loop`` fixture.

As in uvloop's suite, a test fails if its loop logged an error through the default exception
handler (the 'asyncio' logger at ERROR) unless it says it expects that with
``@pytest.mark.loop_errors``.

A test of a guarantee epolloop makes beyond asyncio's (asyncio leaves the matter undefined or
gets it wrong) says so with ``@pytest.mark.epolloop_only``: it then runs on epolloop's loops
alone, those that ``--loops`` kept (all of them when it kept none). Adding
``@pytest.mark.live_core`` keeps it to the live core unless ``--loops`` names the loops: CPython's
own asyncio tests do that, which would otherwise double the suite's time
(``--loops epolloop,epolloop-pure`` runs them on both cores).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pathlib
import tempfile
from collections.abc import Iterator

import pytest
from _helpers import EPOLLOOP_NAMES, LoopFactory, epolloop_loops, no_fd_leaks

import epolloop.loop


def _available_loops() -> dict[str, LoopFactory]:
    loops = epolloop_loops()
    loops["asyncio"] = asyncio.SelectorEventLoop
    try:
        import uvloop
    except ImportError:
        pass
    else:
        loops["uvloop"] = uvloop.new_event_loop
    return loops


def _load_factory(spec: str) -> LoopFactory:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise pytest.UsageError(f"--loop expects module:callable, got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise pytest.UsageError(f"--loop {spec}: {factory!r} is not callable")
    return factory


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loops", "event loops under test")
    group.addoption(
        "--loop",
        action="append",
        default=[],
        metavar="MODULE:CALLABLE",
        help="also run every test on this event loop factory",
    )
    group.addoption(
        "--loops",
        default=None,
        metavar="NAME,...",
        help="run only on these loops (names: epolloop, epolloop-pure, asyncio, uvloop, or a "
        "--loop spec)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "loop_errors: the test expects its loop to log errors (exception handler)"
    )
    config.addinivalue_line(
        "markers", "epolloop_only: a guarantee beyond asyncio's; runs on epolloop's loops alone"
    )
    config.addinivalue_line(
        "markers",
        "live_core: with epolloop_only, runs on the live core alone unless --loops chooses",
    )
    loops = _available_loops()
    for spec in config.getoption("--loop"):
        loops[spec] = _load_factory(spec)
    wanted = config.getoption("--loops")
    if wanted:
        names = [name.strip() for name in wanted.split(",") if name.strip()]
        # The pure core can be asked for by name even where it is the live one.
        selectable = {"epolloop-pure": epolloop.loop.PythonLoop, **loops}
        unknown = [name for name in names if name not in selectable]
        if unknown:
            raise pytest.UsageError(f"--loops: unknown or unavailable loops {unknown}")
        loops = {name: selectable[name] for name in names}
    config.stash[_LOOPS] = loops
    config.stash[_EPOLLOOP_LOOPS] = {
        name: factory for name, factory in loops.items() if name in EPOLLOOP_NAMES
    } or epolloop_loops()


_LOOPS = pytest.StashKey[dict[str, LoopFactory]]()
# What epolloop_only tests run on: epolloop's loops among those selected, or all of them.
_EPOLLOOP_LOOPS = pytest.StashKey[dict[str, LoopFactory]]()


def _loops_for(config: pytest.Config, item: pytest.Item) -> dict[str, LoopFactory]:
    if item.get_closest_marker("live_core") is not None and not config.getoption("--loops"):
        return {"epolloop": epolloop.new_event_loop}
    if item.get_closest_marker("epolloop_only") is not None:
        return config.stash[_EPOLLOOP_LOOPS]
    return config.stash[_LOOPS]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, LoopFactory]:
    return _loops_for(config, item)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "loop_factory" in metafunc.fixturenames:
        loops = _loops_for(metafunc.config, metafunc.definition)
        metafunc.parametrize("loop_factory", list(loops.values()), ids=list(loops))


@pytest.fixture
def new_loop(loop_factory: LoopFactory) -> Iterator[LoopFactory]:
    """Make loops of the parametrised kind; each is closed after the test if still open."""
    made: list[asyncio.AbstractEventLoop] = []

    def make() -> asyncio.AbstractEventLoop:
        loop = loop_factory()
        made.append(loop)
        return loop

    yield make
    for loop in made:
        if not loop.is_closed() and not loop.is_running():
            loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def loop_name(request: pytest.FixtureRequest) -> str:
    """The name of the loop this test runs on: 'epolloop', 'epolloop-pure', 'asyncio',
    'uvloop', ..."""
    params = request.node.callspec.params
    factory = params.get("loop_factory", params.get("_asyncio_loop_factory"))
    config = request.config
    loops = {**config.stash[_EPOLLOOP_LOOPS], **config.stash[_LOOPS]}
    return next(name for name, made in loops.items() if made is factory)


@pytest.fixture
def no_leaked_fds() -> Iterator[None]:
    """Fail the test if it leaves a file descriptor open (its loop included: pytest-asyncio
    closes it before this fixture's teardown)."""
    with no_fd_leaks():
        yield


@pytest.fixture
def sock_dir() -> Iterator[pathlib.Path]:
    """A short directory for Unix socket paths (sun_path holds 108 bytes; tmp_path can be
    longer than that)."""
    with tempfile.TemporaryDirectory(prefix="epolloop-") as path:
        yield pathlib.Path(path)


class _ErrorRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _fail_on_loop_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    recorder = _ErrorRecorder()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(recorder)
    try:
        yield
    finally:
        asyncio_logger.removeHandler(recorder)
    if recorder.records and request.node.get_closest_marker("loop_errors") is None:
        messages = "\n---\n".join(record.getMessage() for record in recorder.records)
        pytest.fail(f"the loop logged unexpected errors:\n{messages}")
