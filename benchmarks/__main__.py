"""python -m benchmarks: epolloop against stock asyncio, uvloop and rloop, side by side, with
the kernel's own ceiling (a C epoll server) where there is I/O.

    python -m benchmarks                      one workload per family, about two minutes
    python -m benchmarks --full               every workload (echo at 1/10/100 KiB with 1/10/100
                                              connections, every server kind, ...)
    python -m benchmarks --workloads echo,http --loops epolloop,uvloop --duration 2
    python -m benchmarks stress [--seconds 10]   many connections and hostile peers: what held

Families: echo (TCP and Unix sockets), http (keep-alive hello world), internals (callbacks,
timers, tasks, threads), timers (lateness), scale (memory per idle connection), transports
(UDP, pipes, subprocesses). The table goes to the terminal; every round goes to
benchmarks/results/benchmarks.json and the charts to benchmarks/results/*.png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from . import echo, http_keepalive, loop_internals, scale, stress, timer_precision, unix_transports
from ._loops import available_loops, select_loops
from ._machine import Cores, compile_tools, describe
from ._report import Summary, load_json, print_summary, save_charts, save_json
from ._suite import Context, Record, Workload, describe_workload, run_rounds

RESULTS = Path(__file__).with_name("results")


def all_workloads(idle_connections: int = scale.CONNECTIONS) -> list[Workload]:
    return [
        *echo.workloads(),
        *http_keepalive.workloads(),
        *loop_internals.workloads(),
        *timer_precision.workloads(),
        *scale.workloads(idle_connections),
        *unix_transports.workloads(),
    ]


def choose(workloads: list[Workload], spec: str | None, full: bool) -> list[Workload]:
    """--workloads: each entry names a family or a part of workloads' names; otherwise the
    default run's workloads, or all of them with --full."""
    if not spec:
        return workloads if full else [w for w in workloads if w.default]
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    chosen = [w for w in workloads if any(p == w.family or p in w.name for p in wanted)]
    if not chosen:
        families = ", ".join(dict.fromkeys(w.family for w in workloads))
        raise SystemExit(f"no workload matches {spec!r} (families: {families})")
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("--full", action="store_true", help="run every workload")
    parser.add_argument("--workloads", metavar="NAME,...", help="families or parts of names")
    parser.add_argument(
        "--loops",
        metavar="NAME,...",
        help=f"compare only these (here: {', '.join(available_loops())}; or module:callable)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--duration",
        type=float,
        default=1.0,
        help="seconds of load per I/O run; in-process workloads scale their size with it (1)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON and charts go")
    parser.add_argument(
        "--http-client",
        choices=("auto", "wrk", "builtin"),
        default="auto",
        help="what loads the HTTP servers: wrk, the C client, or wrk when installed (auto)",
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=scale.CONNECTIONS,
        metavar="N",
        help=f"connections the scale workload holds ({scale.CONNECTIONS:,})",
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="print a saved run's report (and redraw its charts) instead of measuring",
    )
    return parser


def _progress(done: int, total: int, round_index: int, workload: Workload, loop: str) -> None:
    if done == total:
        print("\r\033[K" if sys.stderr.isatty() else "", end="", file=sys.stderr, flush=True)
        return
    line = f"[{done + 1}/{total}] round {round_index + 1}: {workload.name} on {loop}"
    if sys.stderr.isatty():
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, workloads: list[Workload]) -> tuple[dict, list[Record]]:
    """Run the workloads; the run's description and every round's record."""
    loops = select_loops(args.loops)
    wrk = shutil.which("wrk") if args.http_client != "builtin" else None
    if args.http_client == "wrk" and wrk is None:
        raise SystemExit("--http-client wrk: wrk is not installed")
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="epolloop-bench-") as directory:
        tools = compile_tools(Path(directory))
        if tools is None:
            print("no C compiler (cc): skipping the I/O workloads", file=sys.stderr)
            workloads = [w for w in workloads if not w.needs_tools]
        cores = Cores.split()
        clock = time.monotonic()
        records = run_rounds(
            workloads,
            loops,
            args.rounds,
            lambda r: Context(args.duration, tools, cores, wrk, r),
            _progress,
        )
    run = {
        "command": ["python", "-m", "benchmarks", *args.argv],
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - clock),
        "machine": describe(),
        "loops": loops,
        "rounds": args.rounds,
        "duration": args.duration,
        "http_client": "wrk" if wrk else "builtin",
        "workloads": [describe_workload(w) for w in workloads],
    }
    save_json(args.output / "benchmarks.json", run, records)
    return run, records


def report(args: argparse.Namespace, run: dict, records: list[Record]) -> None:
    workloads = [Workload.described(entry) for entry in run["workloads"]]
    machine = run["machine"]
    print(
        f"{run['started'][:10]}, {machine['cpu']}, {machine['cores']} cores, "
        f"Linux {machine['kernel']}, Python {machine['python']}; {run['rounds']} rounds, "
        f"{run['duration']:g} s per run, {run['seconds']} s in all; HTTP load from "
        f"{'wrk' if run['http_client'] == 'wrk' else 'the C client'}"
    )
    print(f"command: {' '.join(run['command'])}")
    summary = Summary(records, run["loops"])
    print_summary(summary, workloads, records, args.markdown)
    charts = save_charts(args.output, summary, workloads)
    written = charts if isinstance(charts, str) else ", ".join(str(p) for p in charts)
    if not args.report:
        print(f"\nevery round: {args.output / 'benchmarks.json'}")
    print(f"charts: {written}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stress"]:
        stress.main(argv[1:])
        return
    args = _parser().parse_args(argv)
    args.argv = argv
    if args.rounds < 1 or args.duration <= 0:
        raise SystemExit("--rounds must be at least 1 and --duration positive")
    if args.report:
        run, records = load_json(args.report)
    else:
        workloads = choose(all_workloads(args.idle_connections), args.workloads, args.full)
        if args.list:
            for workload in workloads:
                print(f"{workload.family:<11} {workload.name}")
            return
        run, records = measure(args, workloads)
    report(args, run, records)


if __name__ == "__main__":
    main()
