"""Bench output: a rich table, a PNG bar chart (matplotlib, Agg) and the ``--json`` object."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelq.errors import MissingDependency


@dataclass
class Panel:
    """One subplot of the chart: a bar per label, and an optional target line; or, with ``lines``,
    a curve per label (its ``(x, y)`` points) instead of the bars."""

    title: str
    ylabel: str
    bars: dict[str, float]
    target: float | None = None
    target_label: str = "target"
    lines: dict[str, list[tuple[float, float]]] | None = None
    xlabel: str = ""


@dataclass
class Report:
    """What a scenario measured."""

    scenario: str
    title: str
    #: The JSON object (flat figures, ``target``, ``meets_target`` ...).
    figures: dict[str, Any]
    columns: list[str]
    rows: list[list[str]]
    panels: list[Panel]
    notes: list[str] = field(default_factory=list)


def progress_printer() -> Callable[[str], None]:
    """A ``say(message)`` that writes dim progress lines to stderr."""
    from rich.console import Console

    console = Console(stderr=True)

    def say(message: str) -> None:
        console.print(f"[dim]bench: {message}[/dim]", highlight=False)

    return say


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{unit}"


def verdict(met: bool) -> str:
    """A table cell saying whether a target was met."""
    return "[green]yes[/green]" if met else "[red]no[/red]"


def print_table(report: Report, *, stderr: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=stderr)
    table = Table(title=report.title)
    for i, column in enumerate(report.columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in report.rows:
        table.add_row(*row)
    console.print(table)
    for note in report.notes:
        console.print(note, highlight=False)


def write_chart(report: Report, path: Path) -> Path:
    """Write the report's panels as a PNG bar chart (matplotlib's Agg canvas, no display)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependency("matplotlib", "bench") from exc

    panels = report.panels
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    colors = ["#8c8c8c", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728"]
    for ax, panel in zip(axes, panels, strict=False):
        if panel.lines is not None:
            for label, points in panel.lines.items():
                if points:
                    ax.plot([x for x, _ in points], [y for _, y in points], marker=".", linewidth=1, label=label)
            ax.set_yscale("log")
            ax.set_title(panel.title, fontsize=10)
            ax.set_ylabel(panel.ylabel)
            ax.set_xlabel(panel.xlabel)
            ax.legend(fontsize=6, loc="upper right")
            continue
        labels = list(panel.bars)
        values = [panel.bars[k] for k in labels]
        bars = ax.bar(labels, values, color=[colors[i % len(colors)] for i in range(len(labels))])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8, padding=2)
        if panel.target is not None:
            ax.axhline(panel.target, color="#d62728", linestyle="--", linewidth=1, label=panel.target_label)
            ax.legend(fontsize=8, loc="upper left")
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel)
        ax.tick_params(axis="x", labelsize=8)
        top = max([*values, panel.target or 0.0, 0.0])
        ax.set_ylim(0, top * 1.18 if top > 0 else 1)
    fig.suptitle(report.title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path


def emit(report: Report, *, as_json: bool, out: Path) -> dict[str, Any]:
    """Write the chart, then print the table (stdout) or the JSON object (stdout, alone)."""
    chart = write_chart(report, out / f"{report.scenario}.png")
    report.figures["chart"] = str(chart)
    if as_json:
        print_table(report, stderr=True)
        sys.stdout.write(json.dumps(report.figures, default=str) + "\n")
        sys.stdout.flush()
    else:
        print_table(report, stderr=False)
        from rich.console import Console

        Console().print(f"chart: {chart}", highlight=False)
    return report.figures
