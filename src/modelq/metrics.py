"""Prometheus metrics for a modelq deployment, read from the job store and the broker.

Every figure comes from what the whole cluster shares (the job store and the
broker), not from one process's memory: any API replica answers ``/metrics`` with
the same job counts, and workers need no port of their own.

* job counts by task and status: ``COUNT ... GROUP BY`` over the job records;
* queue wait and run time histograms: the jobs finished since the previous
  scrape, read through an index on ``finished_at`` and added to histograms kept
  since this process started (Prometheus handles the reset on restart);
* jobs queued and running per owner, and jobs held back for their turn per queue (fair share, see
  :mod:`modelq.jobs.dispatch`);
* queue depths: a passive declare per queue on the broker;
* stranded jobs: what each worker's placement controller reports (jobs waiting beside an idle worker);
* model loads, evictions, hits and resident bytes: what every worker process
  reports to the job store (see :mod:`modelq.models.reporting`).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from modelq.jobs.status import is_finished

log = logging.getLogger(__name__)

#: Seconds: from a millisecond echo to a long diffusion or timetable run.
BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
#: A job's record may commit a moment after a later one's: histograms read only jobs
#: finished longer ago than this, so none is skipped.
SETTLE = timedelta(seconds=2)


class _Histogram:
    """Cumulative bucket counts and a sum per label set."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, ...], tuple[list[int], float]] = {}

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        counts, total = self.series.get(labels, ([0] * (len(BUCKETS) + 1), 0.0))
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.series[labels] = (counts, total + seconds)

    def family(self, name: str, doc: str, label_names: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=label_names)
        for labels, (counts, total) in sorted(self.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(labels), buckets, total)
        return family


class ModelqCollector(Collector):
    """Collects the metric families of one modelq app (register it on a CollectorRegistry)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.store = app.modelq.store
        self.settings = app.modelq.settings
        self._lock = threading.Lock()
        self._read_until = datetime.now(timezone.utc) - SETTLE
        self._wait = _Histogram()
        self._run = _Histogram()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._job_families()
            yield from self._duration_families()
            yield from self._queue_families()
            yield from self._model_families()

    def _job_families(self) -> Iterator[Metric]:
        submitted = CounterMetricFamily("modelq_jobs_submitted", "Jobs accepted, by task.", labels=["task"])
        finished = CounterMetricFamily(
            "modelq_jobs_finished", "Jobs that reached a final state, by task and status.", labels=["task", "status"]
        )
        current = GaugeMetricFamily(
            "modelq_jobs_unfinished", "Jobs queued or running now, by task and status.", labels=["task", "status"]
        )
        per_task: dict[str, int] = {}
        for task, status, count in self.store.task_status_counts():
            per_task[task] = per_task.get(task, 0) + count
            (finished if is_finished(status) else current).add_metric([task, status], count)
        for task, count in sorted(per_task.items()):
            submitted.add_metric([task], count)
        yield from (submitted, finished, current)
        owners = GaugeMetricFamily(
            "modelq_owner_jobs",
            "Jobs queued or running now, by owner (API key owner; '' "
            "without keys) and status: what fair share divides.",
            labels=["owner", "status"],
        )
        held = GaugeMetricFamily(
            "modelq_held_jobs",
            "Queued jobs the job store holds back for their turn (fair "
            "share: their messages are not on the broker yet), by queue.",
            labels=["queue"],
        )
        for owner, counts in sorted(self.store.owner_counts().items()):
            for status in ("queued", "running"):
                if counts[status]:
                    owners.add_metric([owner, status], counts[status])
        for queue, count in sorted(self.store.held_counts().items()):
            held.add_metric([queue], count)
        yield from (owners, held)

    def _duration_families(self) -> Iterator[Metric]:
        until = datetime.now(timezone.utc) - SETTLE
        if until > self._read_until:
            for job in self.store.finished_between(self._read_until, until):
                started = job.get("started_at")
                if started is None:  # cancelled while queued: it never waited for a worker to finish
                    continue
                self._wait.observe((job["task"],), max((started - job["created_at"]).total_seconds(), 0.0))
                self._run.observe(
                    (job["task"], job["status"]), max((job["finished_at"] - started).total_seconds(), 0.0)
                )
            self._read_until = until
        yield self._wait.family(
            "modelq_job_queue_wait_seconds", "Time from submission to a worker starting the job.", ["task"]
        )
        yield self._run.family(
            "modelq_job_run_seconds", "Time from a worker starting the job to its end.", ["task", "status"]
        )

    def _queue_families(self) -> Iterator[Metric]:
        from modelq.ops import queue_depths

        depth = GaugeMetricFamily("modelq_queue_depth", "Messages waiting in a broker queue.", labels=["queue"])
        queues = [*self.settings.queues, *sorted(set(self.store.backlog("")) - set(self.settings.queues))]
        try:
            depths = queue_depths(self.app, queues)
        except Exception as exc:  # the broker is down: say so in the log, keep the other families
            log.warning("metrics: queue depths unavailable: %s", exc)
            depths = {}
        for queue, count in depths.items():
            if count is not None:
                depth.add_metric([queue], count)
        yield depth
        yield self._stranded_family()

    def _stranded_family(self) -> Metric:
        from modelq.reconciler import stranded_counts

        stranded = GaugeMetricFamily(
            "modelq_stranded_jobs",
            "Jobs waiting in a queue that no live worker reads, or "
            "beside an idle worker that can serve them (see modelq.reconciler and "
            "modelq.models.affinity).",
            labels=["queue"],
        )
        for queue, count in sorted(stranded_counts(self.store, self.app.modelq.settings).items()):
            stranded.add_metric([queue], count)
        return stranded

    def _model_families(self) -> Iterator[Metric]:
        labels = ["worker", "pid", "model", "device"]
        loads = CounterMetricFamily("modelq_model_loads", "Model loads, per worker process.", labels=labels)
        evictions = CounterMetricFamily("modelq_model_evictions", "Model evictions, per worker process.", labels=labels)
        hits = CounterMetricFamily("modelq_model_hits", "Jobs served by an already loaded model.", labels=labels)
        load_seconds = CounterMetricFamily("modelq_model_load_seconds", "Seconds spent loading models.", labels=labels)
        resident = GaugeMetricFamily(
            "modelq_model_resident_bytes", "Memory a resident model takes (0: not loaded).", labels=labels
        )
        for row in self.store.residency():
            values = [row["worker"], str(row["pid"]), row["model"], row["device"]]
            loads.add_metric(values, row["loads"])
            evictions.add_metric(values, row["evictions"])
            hits.add_metric(values, row["hits"])
            load_seconds.add_metric(values, row["load_seconds"])
            resident.add_metric(values, row["bytes"] if row["resident"] else 0)
        yield from (loads, evictions, hits, load_seconds, resident)
