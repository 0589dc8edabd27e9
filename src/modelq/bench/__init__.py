"""``modelq bench``: each scenario measures modelq beside its baseline, side by side in one run.

A scenario returns a :class:`~modelq.bench.report.Report`; :func:`run_scenario` prints it as
a table (or one JSON object with ``--json``) and writes a PNG chart to ``out/<scenario>.png``.

Scenarios are hermetic: each starts its own embedded Redis (or ``modelq up``) under a fresh
temporary ``MODELQ_HOME`` and ignores the ``MODELQ_*`` settings of the calling shell, so two
runs on one machine compare like with like. Figures are reported, never asserted.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelq.errors import InvalidInput, ModelqError

__all__ = ["SCENARIOS", "BenchError", "run_scenario"]


class BenchError(ModelqError):
    """A benchmark could not run (a process did not start, a job did not finish in time)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    module: str
    target: str
    description: str


#: The registry: scenario name -> where its ``run(settings=..., quick=..., say=...)`` lives.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("queue", "modelq.bench.queue", "P1", "no-op job round trip and throughput vs raw Celery, same broker"),
        Scenario("up", "modelq.bench.up", "P7", "`modelq up` from spawn to accepting and finishing a job"),
        Scenario(
            "llm", "modelq.bench.llm", "P5", "168 LLM calls of 3.5 s on one io worker vs one call and one at a time"
        ),
        Scenario(
            "warm", "modelq.bench.warm", "P2", "a warm model job (MiniLM encode of 32) vs the same call in-process"
        ),
        Scenario(
            "embed",
            "modelq.bench.embed",
            "P3",
            "many one-sentence embed jobs, batched, vs in-process encode and vs no batching",
        ),
        Scenario(
            "switch",
            "modelq.bench.switch",
            "P4",
            "mixed stream over two models with room for one vs a single-model stream",
        ),
        Scenario(
            "timetable",
            "modelq.bench.timetable",
            "P6",
            "timetable islands on 2 workers vs 1 at equal evaluations, best scores per mode",
        ),
        Scenario(
            "itc",
            "modelq.bench.itc",
            "T1",
            "ITC-2007 comp01-comp07 at a fixed time budget on 1 and 2 workers, beside the winner",
        ),
        Scenario(
            "cluster",
            "modelq.bench.cluster",
            "C1",
            "bursts and Poisson arrivals over 3 models on 1, 2, 4 workers vs a static placement",
        ),
        Scenario(
            "fairness",
            "modelq.bench.fairness",
            "F1",
            "owner B's 10 jobs behind owner A's 500, interactive behind a batch, vs first in first out",
        ),
        Scenario(
            "chaos",
            "modelq.bench.chaos",
            "R1",
            "jobs submitted while workers and the broker are killed: lost and run twice at once",
        ),
    )
}


def run_scenario(
    scenario: str,
    *,
    settings: Any = None,
    as_json: bool = False,
    out: Path | str = Path("bench-results"),
    quick: bool = False,
) -> dict[str, Any]:
    """Run one scenario, print its report and write its chart.

    Args:
        scenario: a name from :data:`SCENARIOS`.
        settings: the caller's settings; scenarios run in their own temporary home and
            broker, so these are only passed along.
        as_json: print exactly one JSON object on stdout (progress and the table go to stderr).
        out: folder for ``<scenario>.png``.
        quick: fewer iterations (a smoke run).

    Returns:
        The figures (the JSON object).

    Raises:
        InvalidInput: unknown scenario.
        BenchError: the benchmark could not run.
    """
    spec = SCENARIOS.get(scenario)
    if spec is None:
        raise InvalidInput(f"unknown scenario {scenario!r}; known scenarios: {', '.join(SCENARIOS)}", field="scenario")
    from modelq.bench import report as reporting

    say = reporting.progress_printer()
    module = importlib.import_module(spec.module)
    # In --json mode stdout carries the JSON object alone: anything a library prints goes to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with redirect:
        result: reporting.Report = module.run(settings=settings, quick=quick, say=say)
        result.figures.setdefault("scenario", spec.name)
        result.figures.setdefault("target_id", spec.target)
        result.figures.setdefault("quick", quick)
    return reporting.emit(result, as_json=as_json, out=Path(out))
