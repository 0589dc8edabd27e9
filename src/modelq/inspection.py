"""Worker replies to ``celery inspect`` turned into table rows (``modelq inspect``).

Pure functions: each takes what ``app.control.inspect()`` returns, ``{worker: reply}``,
and gives column names and rows of strings, so the CLI only draws them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

Table = tuple[list[str], list[list[str]]]


def _when(timestamp: Any) -> str:
    if not timestamp:
        return ""
    try:
        moment = datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
    except (TypeError, ValueError):
        return str(timestamp)
    return f"{moment:%H:%M:%S} ({(datetime.now(timezone.utc) - moment).total_seconds():.0f}s ago)"


def _args(request: dict[str, Any]) -> str:
    kwargs = request.get("kwargs") or {}
    text = json.dumps(kwargs.get("input", kwargs), default=str, separators=(",", ":"))
    return text if len(text) <= 60 else text[:57] + "..."


def pool_name(implementation: str | None) -> str | None:
    """``celery.concurrency.thread:TaskPool`` -> ``threads``, as ``--pool`` spells it."""
    if not implementation:
        return None
    module = implementation.split(":", 1)[0].rsplit(".", 1)[-1]
    return {"thread": "threads"}.get(module, module)


def _ping(replies: dict[str, Any]) -> Table:
    return ["worker", "reply"], [
        [w, r.get("ok", json.dumps(r)) if isinstance(r, dict) else str(r)] for w, r in sorted(replies.items())
    ]


def _requests(replies: dict[str, Any]) -> Table:
    rows = []
    for worker, requests in sorted(replies.items()):
        for req in requests or []:
            queue = (req.get("delivery_info") or {}).get("routing_key", "")
            rows.append(
                [
                    worker,
                    req.get("id", ""),
                    req.get("name", ""),
                    queue,
                    _when(req.get("time_start")),
                    str(req.get("worker_pid") or ""),
                    _args(req),
                ]
            )
    return ["worker", "job", "task", "queue", "started", "pid", "input"], rows


def _scheduled(replies: dict[str, Any]) -> Table:
    rows = []
    for worker, entries in sorted(replies.items()):
        for entry in entries or []:
            req = entry.get("request") or {}
            rows.append(
                [
                    worker,
                    req.get("id", ""),
                    req.get("name", ""),
                    str(entry.get("eta", "")),
                    str(entry.get("priority", "")),
                ]
            )
    return ["worker", "job", "task", "eta", "priority"], rows


def _registered(replies: dict[str, Any]) -> Table:
    rows = [[worker, name] for worker, names in sorted(replies.items()) for name in sorted(names or [])]
    return ["worker", "task"], rows


def _stats(replies: dict[str, Any]) -> Table:
    rows = []
    for worker, stats in sorted(replies.items()):
        pool = stats.get("pool") or {}
        processes = pool.get("processes")
        concurrency = pool.get("max-concurrency", len(processes) if isinstance(processes, list) else "")
        done = sum((stats.get("total") or {}).values())
        rss_kb = (stats.get("rusage") or {}).get("maxrss")
        rows.append(
            [
                worker,
                str(stats.get("pid", "")),
                pool_name(pool.get("implementation")) or "",
                str(concurrency),
                str(done),
                f"{stats.get('uptime', 0)}s",
                f"{int(rss_kb) // 1024} MB" if rss_kb else "",
                str((stats.get("broker") or {}).get("transport", "")),
            ]
        )
    return ["worker", "pid", "pool", "concurrency", "jobs done", "uptime", "max rss", "transport"], rows


def _active_queues(replies: dict[str, Any]) -> Table:
    rows = []
    for worker, queues in sorted(replies.items()):
        for queue in sorted(queues or [], key=lambda q: q.get("name", "")):
            exchange = queue.get("exchange") or {}
            rows.append([worker, queue.get("name", ""), exchange.get("name", ""), queue.get("routing_key", "")])
    return ["worker", "queue", "exchange", "routing key"], rows


TABLES: dict[str, Callable[[dict[str, Any]], Table]] = {
    "ping": _ping,
    "active": _requests,
    "reserved": _requests,
    "scheduled": _scheduled,
    "registered": _registered,
    "stats": _stats,
    "active-queues": _active_queues,
}


def table_for(command: str, replies: dict[str, Any]) -> Table:
    """Columns and rows for one inspect command's replies."""
    return TABLES[command](replies)
