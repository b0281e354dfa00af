"""CPython's own asyncio test suite (``test.test_asyncio``) run on epolloop.

Each module in MODULES runs through unittest inside one pytest test, with epolloop as the loop:

* asyncio's default policy is epolloop's: it is patched in where asyncio creates its default
  policy, so it survives the ``set_event_loop_policy(None)`` that stdlib tests do in their
  teardown. ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner`` and
  ``unittest.IsolatedAsyncioTestCase`` all make epolloop loops.
* test_events: ``EventLoopTestsMixin`` and ``SubprocessTestsMixin`` run on epolloop through their
  ``create_event_loop()`` hook, instead of on the stock selector loops.
* Fixtures that build a fake loop where a real one serves as well make an epolloop loop instead:
  ``TestCase.new_test_loop()`` without a time generator (test_tasks, test_futures),
  ``BaseEventLoopTests.setUp`` (test_base_events), ``BaseTest.setUp`` (test_pep492) and
  ``BaseTest.new_loop`` (test_runners). ``TestLoop`` with a time generator (a virtual clock)
  stays, and so do tests that build stock loops or ``BaseEventLoop`` mocks explicitly.
* epolloop logs to the 'asyncio' logger as asyncio does, through its own module global; the tests
  that watch for those errors by patching ``asyncio.base_events.logger`` see epolloop's calls.

A test counts as run on epolloop when it made an epolloop loop; the others are counted apart.
EXCLUDED lists, with a reason each, the tests about asyncio's internals and those about features
epolloop does not have yet; they are not run. Every other test must pass (or be skipped by the
stdlib itself).

``python -m tests.test_stdlib_asyncio [-v] [MODULE ...]`` prints the counts, one line a module
(``pytest -s`` prints the same lines); ``-v`` also lists the excluded tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
import time
import types
import unittest
from asyncio import events
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
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
)

# -- exclusions -----------------------------------------------------------------------------
# A reason starts with its kind (the summary counts by kind). Missing features name the part
# of the package (DESIGN.md) whose issue brings them.
UDP = "networking: datagram endpoints are not implemented (transports/datagram.py issue)"
PIPES = "pipes: connect_read_pipe/connect_write_pipe are not implemented (transports/pipes.py)"
SUBPROCESS = "subprocess: subprocesses are not implemented (transports/subprocess.py issue)"
SIGNALS = "signals: add_signal_handler is not implemented (signals.py issue)"
MOCKED_SOCKET = "internals: mocks the socket module inside asyncio.base_events"
SCHEDULED = "internals: inspects BaseEventLoop._scheduled, the stock loop's timer heap"
SELECTOR = "internals: mocks BaseEventLoop._selector/_process_events and drives _run_once()"

_EVENTS = "test_events.EpolloopEventLoopTests."
_BASE = "test_base_events.BaseEventLoopTests."
_STREAMS = "test_streams.StreamTests."

EXCLUDED: dict[str, str] = {
    # test_events: the mixins run on epolloop
    _EVENTS + "test_add_signal_handler": SIGNALS,
    _EVENTS + "test_signal_handling_args": SIGNALS,
    _EVENTS + "test_signal_handling_while_selecting": SIGNALS,
    _EVENTS + "test_bidirectional_pty": PIPES,
    _EVENTS + "test_read_pipe": PIPES,
    _EVENTS + "test_read_pty_output": PIPES,
    _EVENTS + "test_unclosed_pipe_transport": PIPES,
    _EVENTS + "test_write_pipe": PIPES,
    _EVENTS + "test_write_pipe_disconnect_on_close": PIPES,
    _EVENTS + "test_write_pty": PIPES,
    _EVENTS + "test_create_datagram_endpoint": UDP,
    _EVENTS + "test_create_datagram_endpoint_ipv6": UDP,
    _EVENTS + "test_create_datagram_endpoint_sock": UDP,
    _EVENTS + "test_datagram_send_to_non_listening_address": UDP,
    _EVENTS + "test_create_server_multiple_hosts_ipv4": MOCKED_SOCKET,
    _EVENTS + "test_create_server_multiple_hosts_ipv6": MOCKED_SOCKET,
    _EVENTS + "test_timeout_rounding": "internals: wraps _run_once, reads _clock_resolution",
    "test_events.EpolloopSubprocessTests": SUBPROCESS,  # the whole mixin
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
    _STREAMS + "test_read_all_from_pipe_reader": PIPES,
}

# Excluded tests that only some of the supported Pythons (3.11 to 3.13) have: their minor
# versions. Any other excluded test must exist, so that the list stays exact.
ONLY_IN: dict[str, set[int]] = {
    _EVENTS + "test_create_server_trsock": {12, 13},
    _EVENTS + "test_datagram_send_to_non_listening_address": {13},
    _BASE + "test_custom_run_forever_integration": {13},
    _STREAMS + "test_unclosed_server_resource_warnings": {13},
    _STREAMS + "test_unhandled_cancel": {13},
    _STREAMS + "test_unhandled_exception": {13},
    _STREAMS + "test_unhandled_exceptions": {11, 12},
}

# -- epolloop as the loop -------------------------------------------------------------------

_loops_made = 0  # epolloop loops made by the tests: how a test is known to run on epolloop


def new_loop() -> epolloop.Loop:
    global _loops_made
    _loops_made += 1
    return epolloop.new_event_loop()


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
        patch(mock.patch.object(test_utils.TestCase, "new_test_loop", new_test_loop))
        for owner, name, replacement in _FIXTURES.get(module.__name__.rpartition(".")[2], ()):
            patch(mock.patch.object(getattr(module, owner), name, replacement))
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


def _events_tests(module: types.ModuleType) -> Iterator[unittest.TestCase]:
    """test_events: the event loop mixins on epolloop, in place of their runs on the stock
    selector loops (SelectEventLoopTests, PollEventLoopTests, EPollEventLoopTests...)."""
    from test.test_asyncio import utils as test_utils

    class EpolloopEventLoopTests(module.EventLoopTestsMixin, test_utils.TestCase):
        def create_event_loop(self) -> epolloop.Loop:
            return new_loop()

    class EpolloopSubprocessTests(module.SubprocessTestsMixin, test_utils.TestCase):
        setUp = _set_up_with_epolloop

    stock = (module.EventLoopTestsMixin, module.SubprocessTestsMixin)
    for test in _flatten(unittest.defaultTestLoader.loadTestsFromModule(module)):
        if not isinstance(test, stock):
            yield test
    for cls in (EpolloopEventLoopTests, EpolloopSubprocessTests):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
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
    return EXCLUDED.get(test_id) or EXCLUDED.get(test_id.rpartition(".")[0])


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

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
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


def run_module(name: str) -> Report:
    """Run test.test_asyncio.<name> on epolloop (ModuleNotFoundError if this Python lacks it)."""
    module = importlib.import_module(f"{PACKAGE}.{name}")
    report = Report(name)
    if name == "test_events":
        tests = list(_events_tests(module))
    else:
        tests = list(_flatten(unittest.defaultTestLoader.loadTestsFromModule(module)))
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
    with _epolloop_everywhere(module):
        unittest.TestSuite(to_run).run(_Recorder(report))
    report.seconds = time.monotonic() - started
    return report


@pytest.mark.loop_errors  # the stdlib tests provoke loop errors and check them themselves
@pytest.mark.parametrize("name", MODULES)
def test_stdlib_module(name: str) -> None:
    try:
        report = run_module(name)
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
