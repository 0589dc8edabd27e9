"""The plan of scenario ``chaos`` (:mod:`modelq.bench.chaos`): its cluster, its jobs, what happens
where in the stream, and the targets."""

from __future__ import annotations

TARGET = {"lost": 0, "duplicated_concurrently": 0}
WORKERS = 2
CONCURRENCY = 2
VISIBILITY_TIMEOUT = 6
JOB_SECONDS = 0.5
LONG_JOB_SECONDS = 45.0
#: Seconds between two submissions (a little under what the workers can run).
PACE = 0.15
#: Seconds the broker stays down at least; submissions go on (and are refused) meanwhile.
OUTAGE_SECONDS = 1.5
SETTLE_TIMEOUT = 90.0
BUSY_TIMEOUT = 20.0

#: What happens where in the stream: (jobs accepted before it, event).
QUICK_PLAN = [
    (10, "kill_child"),
    (20, "long_job"),
    (25, "kill_broker"),
    (32, "take_message"),
    (40, "kill_worker"),
    (50, "flush_broker"),
]
FULL_PLAN = [
    (20, "kill_child"),
    (40, "kill_worker"),
    (60, "long_job"),
    (65, "kill_broker"),
    (80, "take_message"),
    (90, "kill_child"),
    (100, "flush_broker"),
    (110, "kill_worker"),
    (130, "long_job"),
    (135, "wipe_broker"),
    (150, "take_message"),
    (160, "kill_child"),
    (170, "flush_broker"),
    (180, "kill_worker"),
]
#: The reconciler's grace and interval here: lost messages come back within seconds.
RECONCILE_GRACE = 3
RECONCILE_INTERVAL = 1
#: A killed run's job starts again once three heartbeats were missed: 3 s here.
RUN_HEARTBEAT_INTERVAL = 1
