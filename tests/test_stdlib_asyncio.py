"""CPython's own asyncio test suite (``test.test_asyncio``) run on epolloop.

Each module in MODULES runs through unittest inside one pytest test, with epolloop as the loop
(on the live core; ``--loops epolloop,epolloop-pure`` runs them on both, see conftest.py):

* asyncio's default policy is epolloop's: it is patched in where asyncio creates its default
  policy, so it survives the ``set_event_loop_policy(None)`` that stdlib tests do in their
  teardown. ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner`` and
  ``unittest.IsolatedAsyncioTestCase`` all make epolloop loops.
* Test classes that the stdlib runs on each of its stock loops (a mixin with a loop hook such
  as ``create_event_loop()`` or ``new_loop()``, subclassed once per loop: test_events,
  test_sock_lowlevel, test_sendfile, test_buffered_proto, test_server, test_sslproto), and a few
  that build a ``SelectorEventLoop`` in ``setUp`` for networking tests (test_base_events,
  test_unix_events), run once on epolloop instead, as ``Epolloop...Tests`` (_ON_EPOLLOOP).
* Fixtures that build a fake loop where a real one serves as well make an epolloop loop instead:
  ``TestCase.new_test_loop()`` without a time generator (test_tasks, test_futures),
  ``BaseEventLoopTests.setUp`` (test_base_events), ``BaseTest.setUp`` (test_pep492) and
  ``BaseTest.new_loop`` (test_runners). ``TestLoop`` with a time generator (a virtual clock)
  stays, and so do the fake loops on which test_unix_events tests asyncio's pipe transports and
  child watchers, and the tests that build stock loops or ``BaseEventLoop`` mocks explicitly.
* epolloop logs to the 'asyncio' logger as asyncio does, through its own module global; the tests
  that watch for those errors by patching ``asyncio.base_events.logger`` see epolloop's calls.

A test counts as run on epolloop when it made an epolloop loop; the others are counted apart.
EXCLUDED lists, with a reason each, the tests about asyncio's internals and those about features
epolloop does not have yet; they are not run. Every other test must pass (or be skipped by the
stdlib itself); one that hangs fails after TIME_LIMIT, and the run goes on.

``python -m tests.test_stdlib_asyncio [-v] [MODULE ...]`` prints the counts, one line a module
(``pytest -s`` prints the same lines); ``-v`` also lists the excluded tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import importlib
import signal
import sys
import time
import types
import unittest
from asyncio import events
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from unittest import mock

import pytest

import epolloop
import epolloop.loop

PACKAGE = "test.test_asyncio"

MODULES = (
    "test_events",
    "test_base_events",
    "test_tasks",
    "test_futures",
    "test_futures2",
    "test_locks",
    "test_queues",
    "test_timeouts",
    "test_taskgroups",
    "test_context",
    "test_runners",
    "test_waitfor",
    "test_pep492",
    "test_threads",
    "test_eager_task_factory",  # 3.12+
    "test_staggered",  # 3.13+
    "test_streams",
    "test_sock_lowlevel",
    "test_server",
    "test_buffered_proto",
    "test_sendfile",
    "test_ssl",
    "test_sslproto",
    "test_unix_events",
    "test_subprocess",
)

# -- exclusions -----------------------------------------------------------------------------
# A reason starts with its kind (the summary counts by kind). Missing features name the part
# of the package (DESIGN.md) whose issue brings them.
MOCKED_SOCKET = "internals: mocks the socket module inside asyncio.base_events"
SCHEDULED = "internals: inspects BaseEventLoop._scheduled, the stock loop's timer heap"
SELECTOR = "internals: mocks BaseEventLoop._selector/_process_events and drives _run_once()"
ACCEPT = "internals: calls BaseSelectorEventLoop._accept_connection with a mock socket"
SENDFILE_IMPL = "internals: calls SelectorEventLoop._sock_sendfile_native_impl, reads _selector"
WATCHERS = (
    "internals: child watchers; epolloop watches its children through pidfds, never a watcher"
)
POPEN_KILL = "internals: patches Popen.kill; epolloop signals its children through their pidfd"
PIPES_VIA_LOOP = (
    "internals: patches loop.connect_read_pipe to reach a subprocess's pipe transports (epolloop "
    "makes them directly)"
)
SERVER_ATTACH = "internals: calls Server._attach()/_detach(), 3.12's private client count"

_EVENTS = "test_events.EpolloopEventLoopTests."
_NET = "test_base_events.EpolloopNetworkingTests."
_UNIX_SOCKET = "test_unix_events.EpolloopUnixSocketTests."
_UNIX_SENDFILE = "test_unix_events.SelectorEventLoopUnixSockSendfileTests."
_BASE = "test_base_events.BaseEventLoopTests."
_STREAMS = "test_streams.StreamTests."

EXCLUDED: dict[str, str] = {
    # test_events: the mixins run on epolloop
    _EVENTS + "test_create_server_multiple_hosts_ipv4": MOCKED_SOCKET,
    _EVENTS + "test_create_server_multiple_hosts_ipv6": MOCKED_SOCKET,
    _EVENTS + "test_timeout_rounding": "internals: wraps _run_once, reads _clock_resolution",
    # test_base_events: BaseEventLoopTests run on epolloop
    _BASE + "test__add_callback_cancelled_handle": "internals: calls BaseEventLoop._add_callback",
    _BASE + "test__add_callback_handle": "internals: calls BaseEventLoop._add_callback",
    _BASE + "test__run_once": SCHEDULED,
    _BASE + "test__run_once_schedule_handle": SCHEDULED,
    _BASE + "test_call_later": SCHEDULED,
    _BASE + "test__run_once_cancelled_event_cleanup": "internals: _timer_cancelled_count",
    _BASE + "test_custom_run_forever_integration": SELECTOR,  # (blocks in epoll_wait)
    _BASE + "test_run_forever_pre_stopped": SELECTOR,
    _BASE + "test_single_selecter_event_callback_after_stopping": SELECTOR,
    _BASE + "test_not_implemented": "internals: BaseEventLoop's _make_*_transport hooks",
    # test_tasks
    "test_tasks.CoroutineGatherTests.test_issue46672": (
        "internals: patches BaseEventLoop.call_exception_handler (epolloop.Loop has its own)"
    ),
    # test_streams: the StreamReader tests run; these need connections
    # test_base_events: BaseEventLoopWithSelectorTests run on epolloop
    _NET + "test_accept_connection_exception": ACCEPT,
    _NET + "test_accept_connection_retry": ACCEPT,
    _NET + "test_create_connection_bluetooth": MOCKED_SOCKET,
    _NET + "test_create_connection_ip_addr": MOCKED_SOCKET,
    _NET + "test_create_connection_ipv6_scope": MOCKED_SOCKET,
    _NET + "test_create_connection_multiple_errors": MOCKED_SOCKET,
    _NET + "test_create_connection_multiple_errors_local_addr": MOCKED_SOCKET,
    _NET + "test_create_connection_no_inet_pton": MOCKED_SOCKET,
    _NET + "test_create_connection_service_name": MOCKED_SOCKET,
    _NET + "test_create_connection_timeout": MOCKED_SOCKET,
    _NET + "test_create_server_cant_bind": MOCKED_SOCKET,
    _NET + "test_create_server_nosoreuseport": MOCKED_SOCKET,
    _NET + "test_create_server_soreuseport_only_defined": MOCKED_SOCKET,
    _NET + "test_create_datagram_endpoint_cant_bind": MOCKED_SOCKET,
    _NET + "test_create_datagram_endpoint_ip_addr": MOCKED_SOCKET,
    _NET + "test_create_datagram_endpoint_no_addrinfo": MOCKED_SOCKET,
    _NET + "test_create_datagram_endpoint_nosoreuseport": MOCKED_SOCKET,
    _NET + "test_create_datagram_endpoint_setblk_err": MOCKED_SOCKET,
    _NET + "test_create_datagram_endpoint_socket_err": MOCKED_SOCKET,
    # test_sendfile
    # test_server
    "test_server.TestServer2.test_wait_closed_basic": SERVER_ATTACH,
    "test_server.TestServer2.test_wait_closed_race": SERVER_ATTACH,
    # test_unix_events: the Unix socket tests run on epolloop; asyncio's pipe transports and
    # child watchers stay on the fake loop they mock.
    _UNIX_SENDFILE + "test_sock_sendfile_not_available": (
        "internals: mocks the os module inside asyncio.unix_events"
    ),
    _UNIX_SENDFILE + "test_sock_sendfile_blocking_error": SENDFILE_IMPL,
    _UNIX_SENDFILE + "test_sock_sendfile_cancel1": SENDFILE_IMPL,
    _UNIX_SENDFILE + "test_sock_sendfile_cancel2": SENDFILE_IMPL,
    _UNIX_SENDFILE + "test_sock_sendfile_exception": SENDFILE_IMPL,
    _UNIX_SENDFILE + "test_sock_sendfile_os_error_first_call": SENDFILE_IMPL,
    _UNIX_SENDFILE + "test_sock_sendfile_os_error_next_call": SENDFILE_IMPL,
    _UNIX_SOCKET + "test_create_unix_server_bind_error": (
        "internals: mocks the socket module inside asyncio.unix_events"
    ),
    # test_subprocess: SubprocessMixin runs on epolloop
    "test_subprocess.GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher": (
        WATCHERS
    ),
    "test_subprocess.EpolloopSubprocessTests.test_close_kill_running": POPEN_KILL,
    "test_subprocess.GenericWatcherTests.test_create_subprocess_with_pidfd": (
        "stdlib: depends on an earlier test's set_event_loop(None); fails alone on stock "
        "asyncio 3.12.1 too"
    ),
    "test_subprocess.EpolloopSubprocessTests.test_pause_reading": PIPES_VIA_LOOP,
}

# Exclusions that hold on some of the supported Pythons (3.11 to 3.13) only: their minor
# versions. On the others the test is absent, or is another test there, which runs. Any other
# excluded test must exist, so that the list stays exact.
ONLY_IN: dict[str, set[int]] = {
    "test_subprocess.GenericWatcherTests.test_create_subprocess_with_pidfd": {12},
    _EVENTS + "test_datagram_send_to_non_listening_address": {13},
    _BASE + "test_custom_run_forever_integration": {13},
    "test_server.TestServer2.test_wait_closed_basic": {12},  # 3.13's uses a real client
    "test_server.TestServer2.test_wait_closed_race": {12},
    "test_unix_events.TestFork.test_fork_asyncio_subprocess": {12, 13},
    "test_unix_events.TestFork.test_fork_signal_handling": {12, 13},
}

# -- epolloop as the loop -------------------------------------------------------------------

_loops_made = 0  # epolloop loops made by the tests: how a test is known to run on epolloop
_loop_factory: Callable[[], Any] = epolloop.new_event_loop  # the core run_module runs on


def new_loop() -> epolloop.Loop:
    global _loops_made
    _loops_made += 1
    return _loop_factory()


class _Policy(epolloop.EventLoopPolicy):
    def _loop_factory(self) -> epolloop.Loop:
        return new_loop()


class _BaseEventsLogger:
    """Stands for epolloop's logger: whatever asyncio.base_events.logger is at the time (the
    'asyncio' logger itself unless a test patched it)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.modules["asyncio.base_events"].logger, name)


def _init_policy() -> None:
    events._event_loop_policy = _Policy()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _epolloop_everywhere(module: types.ModuleType) -> Iterator[None]:
    from test.test_asyncio import utils as test_utils

    def new_test_loop(self: Any, gen: Any = None) -> Any:
        if gen is not None:
            return real_new_test_loop(self, gen)
        loop = new_loop()
        self.set_event_loop(loop)
        return loop

    real_new_test_loop = test_utils.TestCase.new_test_loop
    saved_policy = events._event_loop_policy  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        patch = stack.enter_context
        patch(mock.patch.object(events, "_init_event_loop_policy", _init_policy))
        patch(mock.patch.object(epolloop.loop, "logger", _BaseEventsLogger()))
        name = module.__name__.rpartition(".")[2]
        if name not in _FAKE_LOOP_FIXTURES:
            patch(mock.patch.object(test_utils.TestCase, "new_test_loop", new_test_loop))
        for owner, attribute, replacement in _FIXTURES.get(name, ()):
            patch(mock.patch.object(getattr(module, owner), attribute, replacement))
        events._event_loop_policy = None  # type: ignore[attr-defined]
        try:
            yield
        finally:
            events._event_loop_policy = saved_policy  # type: ignore[attr-defined]


def _set_up_with_epolloop(self: Any) -> None:
    """setUp of a test_utils.TestCase whose tests use self.loop: an epolloop loop."""
    from test.test_asyncio import utils as test_utils

    test_utils.TestCase.setUp(self)
    self.loop = new_loop()
    self.set_event_loop(self.loop)


def _runners_new_loop(self: Any) -> epolloop.Loop:
    """test_runners.BaseTest.new_loop: its tearDown checks that shutdown_asyncgens ran."""
    loop = new_loop()
    shutdown_asyncgens = loop.shutdown_asyncgens
    loop.shutdown_ag_run = False  # type: ignore[attr-defined]

    async def shutdown_and_record() -> None:
        loop.shutdown_ag_run = True  # type: ignore[attr-defined]
        await shutdown_asyncgens()

    loop.shutdown_asyncgens = shutdown_and_record  # type: ignore[method-assign]
    return loop


# module -> (class, attribute, replacement): fixtures that make an epolloop loop instead of a
# fake one.
_FIXTURES: dict[str, tuple[tuple[str, str, Callable[..., Any]], ...]] = {
    "test_base_events": (("BaseEventLoopTests", "setUp", _set_up_with_epolloop),),
    "test_pep492": (("BaseTest", "setUp", _set_up_with_epolloop),),
    "test_runners": (("BaseTest", "new_loop", _runners_new_loop),),
}


# Modules whose new_test_loop() fixtures test asyncio's own code on the fake loop: it stays
# (test_unix_events: the pipe transports and child watchers of asyncio.unix_events).
_FAKE_LOOP_FIXTURES = {"test_unix_events"}


def _create_loop(self: Any) -> epolloop.Loop:
    return new_loop()


# The stdlib test methods that make a class's loop.
_HOOKS: dict[str, Callable[..., Any]] = {
    "create_event_loop": _create_loop,
    "new_loop": _create_loop,
    "setUp": _set_up_with_epolloop,
}


class _OnEpolloop(NamedTuple):
    """Stdlib tests run on epolloop: a class made of *bases* (names in the module) whose *hook*
    (_HOOKS) makes an epolloop loop. It takes the place of the module's classes derived from
    *replaces* (the first base unless given), which run the same tests on the stock loops, one
    class a loop (SelectorEventLoop with each selector, ProactorEventLoop...)."""

    name: str
    bases: tuple[str, ...]
    hook: str = "create_event_loop"
    replaces: str = ""


_ON_EPOLLOOP: dict[str, tuple[_OnEpolloop, ...]] = {
    "test_events": (
        _OnEpolloop("EpolloopEventLoopTests", ("EventLoopTestsMixin", "test_utils.TestCase")),
        _OnEpolloop(
            "EpolloopSubprocessTests", ("SubprocessTestsMixin", "test_utils.TestCase"), "setUp"
        ),
    ),
    "test_base_events": (
        _OnEpolloop("EpolloopNetworkingTests", ("BaseEventLoopWithSelectorTests",), "setUp"),
    ),
    "test_sock_lowlevel": (
        _OnEpolloop("EpolloopSockTests", ("BaseSockTestsMixin", "test_utils.TestCase")),
    ),
    "test_sendfile": (
        _OnEpolloop("EpolloopSendfileTests", ("SendfileTestsBase", "test_utils.TestCase")),
    ),
    "test_buffered_proto": (
        _OnEpolloop(
            "EpolloopBufferedProtocolTests",
            ("BaseTestBufferedProtocol", "unittest.TestCase"),
            "new_loop",
        ),
    ),
    "test_server": (  # SelectorStartServerTests adds a test of its own (a Unix server)
        _OnEpolloop(
            "EpolloopStartServerTests",
            ("SelectorStartServerTests",),
            "new_loop",
            replaces="BaseStartServer",
        ),
    ),
    "test_sslproto": (
        _OnEpolloop("EpolloopStartTLSTests", ("BaseStartTLS", "unittest.TestCase"), "new_loop"),
    ),
    "test_unix_events": (
        _OnEpolloop("EpolloopUnixSocketTests", ("SelectorEventLoopUnixSocketTests",), "setUp"),
    ),
    "test_subprocess": (
        _OnEpolloop("EpolloopSubprocessTests", ("SubprocessMixin", "test_utils.TestCase"), "setUp"),
    ),
}


def _module_tests(module: types.ModuleType) -> Iterator[unittest.TestCase]:
    """The module's tests, with the classes of _ON_EPOLLOOP in place of those they replace."""
    tests = _flatten(unittest.defaultTestLoader.loadTestsFromModule(module))
    on_epolloop = _ON_EPOLLOOP.get(module.__name__.rpartition(".")[2], ())
    replaced = tuple(getattr(module, each.replaces or each.bases[0]) for each in on_epolloop)
    yield from (test for test in tests if not isinstance(test, replaced))
    for each in on_epolloop:
        bases = tuple(functools.reduce(getattr, base.split("."), module) for base in each.bases)
        namespace = {each.hook: _HOOKS[each.hook], "__module__": module.__name__}
        cls = type(each.name, bases, namespace)
        yield from _flatten(unittest.defaultTestLoader.loadTestsFromTestCase(cls))


def _flatten(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from _flatten(test)
        else:
            yield test  # type: ignore[misc]


def _test_id(test: unittest.TestCase) -> str:
    return test.id().removeprefix(PACKAGE + ".")


def _excluded(test: unittest.TestCase) -> str | None:
    test_id = _test_id(test)
    for excluded in (test_id, test_id.rpartition(".")[0]):
        if excluded in EXCLUDED and sys.version_info.minor in ONLY_IN.get(
            excluded, (sys.version_info.minor,)
        ):
            return EXCLUDED[excluded]
    return None


# -- running and counting -------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    module: str
    outcomes: dict[str, str] = dataclasses.field(default_factory=dict)  # test id -> outcome
    on_epolloop: set[str] = dataclasses.field(default_factory=set)
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # test id -> reason
    tracebacks: dict[str, str] = dataclasses.field(default_factory=dict)
    stale_exclusions: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        return [test for test, outcome in self.outcomes.items() if outcome in _BAD]

    def summary(self) -> str:
        on_epolloop = Counter(self.outcomes[test] for test in self.on_epolloop)
        elsewhere = len(self.outcomes) - len(self.on_epolloop)
        kinds = Counter(reason.partition(":")[0] for reason in self.excluded.values())
        reasons = ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())
        skipped = on_epolloop["skipped"] + on_epolloop["expected failure"]
        return (
            f"{self.module}: {len(self.on_epolloop)} run on epolloop, "
            f"{on_epolloop['passed']} passed"
            + (f", {skipped} skipped by the stdlib" if skipped else "")
            + f"; {elsewhere} more on fake or stock loops"
            + f"; {len(self.excluded)} excluded"
            + (f" ({reasons})" if reasons else "")
            + f"; {len(self.failures)} failed [{self.seconds:.1f} s]"
        )


_BAD = {"failed", "error", "unexpected success"}

# Seconds a test may run: past it, it fails as hung and the run goes on. The slowest one,
# test_tasks' test_task_del_collect (thousands of gc.collect() calls), takes 3 s on an idle
# machine, twice that once Hypothesis (the differential fuzzer) has hooked gc.callbacks, and
# over 30 s in CI, where three interpreters share two cores.
TIME_LIMIT = 120.0


class _Hung(SystemExit):
    """Raised, from SIGALRM, in a test that runs past TIME_LIMIT. A SystemExit, which event loops
    and tasks let through (the signal also ends a blocking epoll_wait), and which unittest
    reports as the test's error before it runs the test's tearDown and cleanups (a
    KeyboardInterrupt would end the whole run)."""


def _hung(signum: int, frame: Any) -> None:
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)  # again, should its tearDown hang too
    raise _Hung(f"the test still ran after {TIME_LIMIT:.0f} s")


@contextlib.contextmanager
def _sigalrm_lent() -> Iterator[None]:
    """SIGALRM and the real-time interval timer, which time the tests (TIME_LIMIT), lent for the
    run: whoever had them (pytest-timeout) gets them back, less the time the run took."""
    handler = signal.getsignal(signal.SIGALRM)
    delay, interval = signal.setitimer(signal.ITIMER_REAL, 0)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if handler is not None:
            signal.signal(signal.SIGALRM, handler)
        if delay:
            left = max(delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


class _Recorder(unittest.TestResult):
    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report
        self._loops_before = 0

    def _record(self, test: Any, outcome: str, err: Any = None) -> str:
        test_id = _test_id(test) if isinstance(test, unittest.TestCase) else str(test)
        if outcome in _BAD or test_id not in self.report.outcomes:
            self.report.outcomes[test_id] = outcome
        if err is not None:
            self.report.tracebacks[test_id] = self._exc_info_to_string(err, test)
        return test_id

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._loops_before = _loops_made
        # Each time: a test may have set a SIGALRM handler of its own.
        signal.signal(signal.SIGALRM, _hung)
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        signal.setitimer(signal.ITIMER_REAL, 0)
        test_id = self._record(test, "passed")
        if _loops_made > self._loops_before:
            self.report.on_epolloop.add(test_id)

    def addError(self, test: Any, err: Any) -> None:  # also setUpClass/setUpModule errors
        super().addError(test, err)
        self._record(test, "error", err)

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "failed", err)

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._record(test, "failed", err)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped")

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected success")


def run_module(name: str, loop_factory: Callable[[], Any] = epolloop.new_event_loop) -> Report:
    """Run test.test_asyncio.<name> on epolloop loops made by *loop_factory* (the live core's by
    default); ModuleNotFoundError if this Python lacks the module."""
    global _loop_factory
    module = importlib.import_module(f"{PACKAGE}.{name}")
    report = Report(name)
    tests = list(_module_tests(module))
    to_run = []
    for test in tests:
        reason = _excluded(test)
        if reason is None:
            to_run.append(test)
        else:
            report.excluded[_test_id(test)] = reason
    known = {_test_id(test) for test in tests} | {_test_id(t).rpartition(".")[0] for t in tests}
    report.stale_exclusions = [
        test_id
        for test_id in EXCLUDED
        if test_id.startswith(name + ".")
        and test_id not in known
        and sys.version_info.minor in ONLY_IN.get(test_id, (sys.version_info.minor,))
    ]
    started = time.monotonic()
    _loop_factory = loop_factory
    try:
        with _epolloop_everywhere(module), _sigalrm_lent(), _collector_sees_only_new_objects():
            unittest.TestSuite(to_run).run(_Recorder(report))
    finally:
        _loop_factory = epolloop.new_event_loop
    report.seconds = time.monotonic() - started
    return report


@contextlib.contextmanager
def _collector_sees_only_new_objects() -> Iterator[None]:
    """Keep what the process holds already out of the garbage collector's full passes while a
    module runs (gc.freeze): test_tasks and test_futures call gc.collect() hundreds of times
    (one test from each of 100 finalizers), and in pytest's process, after the rest of the
    suite, each full pass took a second (test_tasks: 107 s against 19 s on its own)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.epolloop_only
@pytest.mark.live_core  # both cores: --loops epolloop,epolloop-pure (about 4 minutes more)
@pytest.mark.loop_errors  # the stdlib tests provoke loop errors and check them themselves
# A whole module in one pytest test: test_tasks alone runs 30 s on an idle machine and past
# 120 s on a loaded one. Each of its tests has its own hang guard (TIME_LIMIT).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", MODULES)
def test_stdlib_module(loop_factory: Callable[[], Any], name: str) -> None:
    try:
        report = run_module(name, loop_factory)
    except ModuleNotFoundError as exc:
        if exc.name not in (f"{PACKAGE}.{name}", "test", PACKAGE):
            raise
        pytest.skip(f"{PACKAGE}.{name} is not in Python {sys.version.split()[0]}")
    print(f"\n{report.summary()}")
    problems = [
        f"{test} [{report.outcomes[test]}]\n{report.tracebacks.get(test, '')}"
        for test in report.failures
    ]
    problems += [f"{test}: in EXCLUDED but not in this Python" for test in report.stale_exclusions]
    if problems:
        pytest.fail(
            f"{report.summary()}\n{len(problems)} unexpected:\n" + "\n".join(problems),
            pytrace=False,
        )


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    names = [arg for arg in argv if arg != "-v"] or list(MODULES)
    bad = 0
    totals: Counter[str] = Counter()
    for name in names:
        try:
            report = run_module(name)
        except ModuleNotFoundError:
            print(f"{name}: not in Python {sys.version.split()[0]}")
            continue
        print(report.summary(), flush=True)
        for test in report.failures:
            print(f"  FAILED {test} [{report.outcomes[test]}]\n{report.tracebacks.get(test, '')}")
        for test in report.stale_exclusions:
            print(f"  STALE EXCLUSION {test}")
        if verbose:
            for test, reason in report.excluded.items():
                print(f"  excluded {test}: {reason}")
        bad += len(report.failures) + len(report.stale_exclusions)
        totals["run on epolloop"] += len(report.on_epolloop)
        totals["passed"] += sum(report.outcomes[test] == "passed" for test in report.on_epolloop)
        totals["excluded"] += len(report.excluded)
        totals["failed"] += len(report.failures)
    print("total: " + ", ".join(f"{count} {what}" for what, count in totals.items()))
    return 1 if bad else 0


if __name__ == "__main__":
    import logging

    # Errors the tests provoke on purpose are not news: keep them off the terminal.
    logging.getLogger("asyncio").addHandler(logging.NullHandler())
    sys.exit(main(sys.argv[1:]))
