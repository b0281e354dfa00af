"""What a run reports: the summary (medians, ratios within rounds), the terminal table, the
JSON file with every round, and PNG charts.

Ratios are speeds relative to the reference loop (uvloop when it runs): above 1 is faster,
whichever way the figure points (CPU per request: theirs / ours; operations per second: ours
/ theirs). Each is taken within a round and the median of those is reported, so drift in the
machine's speed cancels. The share of the ceiling is the same ratio against the C ceiling.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ._loops import CEILING, median
from ._suite import Figure, Record, Workload

NOISY = 0.25  # cores of other processes' CPU during a run that make its figures suspect


@dataclass(frozen=True)
class Cell:
    value: float | None  # median over rounds; None when every round failed
    note: float | None  # median of the secondary figure (requests/s)
    speed: float | None  # relative to the reference loop, >1 faster
    of_ceiling: float | None


def reference_loop(loops: Sequence[str]) -> str:
    for name in ("uvloop", "asyncio"):
        if name in loops:
            return name
    return loops[0]


def _speed(figure: Figure, ours: float, theirs: float) -> float:
    if figure.higher_is_better:
        return ours / theirs if theirs else float("nan")
    return theirs / ours if ours else float("nan")


class Summary:
    """Every figure of every workload on every loop, reduced over rounds."""

    def __init__(self, records: list[Record], loops: Sequence[str]) -> None:
        self.loops = list(loops)
        self.reference = reference_loop(loops)
        self._runs: dict[tuple[str, str], dict[int, Record]] = {}
        for record in records:
            self._runs.setdefault((record.workload, record.loop), {})[record.round] = record

    def _values(self, workload: str, loop: str, key: str) -> dict[int, float]:
        runs = self._runs.get((workload, loop), {})
        return {r: rec.figures[key] for r, rec in runs.items() if key in rec.figures}

    def _ratio(self, workload: str, figure: Figure, loop: str, other: str) -> float | None:
        ours, theirs = (self._values(workload, name, figure.key) for name in (loop, other))
        ratios = [_speed(figure, ours[r], theirs[r]) for r in ours.keys() & theirs.keys()]
        return median(ratios) if ratios else None

    def cell(self, workload: Workload, figure: Figure, loop: str) -> Cell:
        values = self._values(workload.name, loop, figure.key)
        notes = self._values(workload.name, loop, "rate") if workload.note else {}
        headline = figure is workload.figures[0]
        return Cell(
            value=median(list(values.values())) if values else None,
            note=median(list(notes.values())) if notes else None,
            speed=self._ratio(workload.name, figure, loop, self.reference),
            of_ceiling=(
                self._ratio(workload.name, figure, loop, CEILING)
                if headline and workload.ceiling and loop != CEILING
                else None
            ),
        )

    def errors(self) -> list[Record]:
        return [rec for runs in self._runs.values() for rec in runs.values() if rec.error]


def _number(value: float | None) -> str:
    if value is None:
        return "failed"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"


def _cell_text(cell: Cell, loop: str, reference: str) -> str:
    parts = [_number(cell.value)]
    if cell.speed is not None and loop not in (reference, CEILING):
        parts.append(f"{cell.speed:.2f}x")
    if cell.of_ceiling is not None:
        parts.append(f"{cell.of_ceiling:.0%}")
    return " ".join(parts)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> None:
    """A plain-text table (the first two columns left-aligned, the rest right-aligned), or a
    Markdown one for the README."""
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + " --- |" * 2 + " ---: |" * (len(headers) - 2))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


def print_summary(
    summary: Summary, workloads: list[Workload], records: list[Record], markdown: bool = False
) -> None:
    loops = summary.loops
    print(
        f"\nmedians over rounds; after a figure: speed relative to {summary.reference} "
        "(>1 is faster) and, in I/O workloads, the share of the C ceiling's speed"
    )
    for family in dict.fromkeys(w.family for w in workloads):
        members = [w for w in workloads if w.family == family]
        columns = [*loops, *([CEILING] if any(w.ceiling for w in members) else [])]
        rows = []
        for workload in members:
            for figure in workload.figures:
                cells = [summary.cell(workload, figure, loop) for loop in columns]
                rows.append(
                    [
                        workload.name if figure is workload.figures[0] else "",
                        figure.unit,
                        *(
                            _cell_text(c, n, summary.reference)
                            for c, n in zip(cells, columns, strict=True)
                        ),
                    ]
                )
                if workload.note and figure is workload.figures[0]:
                    rows.append(["", workload.note, *(_number(c.note) for c in cells)])
        print(f"\n### {family}\n" if markdown else f"\n{family}\n")
        print_table(["workload", "figure", *columns], rows, markdown)
    failures: dict[tuple[str, str, str], list[int]] = {}
    for record in summary.errors():
        key = (record.loop, record.workload, record.error or "")
        failures.setdefault(key, []).append(record.round + 1)
    for (loop, workload, error), rounds in failures.items():
        which = ", ".join(map(str, sorted(rounds)))
        print(f"\n{loop} failed {workload!r} (round{'s' * (len(rounds) > 1)} {which}): {error}")
    noisy = [record for record in records if record.noise > NOISY]
    if noisy:
        worst = max(record.noise for record in noisy)
        print(
            f"\nwarning: other processes took CPU during {len(noisy)} of {len(records)} runs "
            f"(up to {worst:.2f} of a core): those figures may be off; the JSON file has "
            "each run's 'noise'."
        )


def save_json(path: Path, run: dict[str, object], records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**run, "records": [asdict(r) for r in records]}, indent=1))


def load_json(path: Path) -> tuple[dict, list[Record]]:
    """A run saved by save_json: its description and its records."""
    run = json.loads(path.read_text())
    return run, [Record(**record) for record in run.pop("records")]


def save_charts(directory: Path, summary: Summary, workloads: list[Workload]) -> list[Path] | str:
    """One PNG per chart group: each workload's headline speed relative to the reference loop,
    a bar per loop (and the ceiling). The paths written, or why none were."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no charts: matplotlib is not installed (pip install -e '.[bench]')"
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for group in dict.fromkeys(w.chart for w in workloads):
        members = [w for w in workloads if w.chart == group]
        bars = [*summary.loops, *([CEILING] if any(w.ceiling for w in members) else [])]
        height = 0.8 / len(bars)
        figure, axes = plt.subplots(figsize=(9, 1 + 0.22 * len(members) * len(bars)))
        for index, loop in enumerate(bars):
            speeds = [summary.cell(w, w.figures[0], loop).speed or 0.0 for w in members]
            positions = [i + (index - (len(bars) - 1) / 2) * height for i in range(len(members))]
            axes.barh(positions, speeds, height=height, label=loop)
        axes.set_yticks(range(len(members)), [w.name for w in members])
        axes.invert_yaxis()
        axes.axvline(1.0, color="black", linewidth=0.8)
        axes.set_xlabel(f"speed relative to {summary.reference} (higher is better)")
        axes.set_title(group)
        axes.legend(fontsize="small", loc="best")
        figure.tight_layout()
        path = directory / f"{group.replace(' ', '_')}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
