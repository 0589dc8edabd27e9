"""Scenario ``llm`` (target P5): 168 LLM calls of 3.5 s each from one ``io`` worker.

Deployment 4's GraphRAG indexer made 168 calls to a vLLM server one at a time (9.8 min); P5 asks
modelq to finish them within 1.3x one call's latency, and at least 100x faster than one at a time.

One embedded Redis under a fresh temporary home, a stand-in OpenAI-compatible server in this
process (:class:`~modelq.testing.llm_stub.StubLLMServer`) answering every call after a
fixed latency, and one ``modelq worker -Q io`` (its default threads pool) with
``MODELQ_LLM_MAX_IN_FLIGHT=200``, as the seed ran 200 gevent greenlets. Measured:

* ``latency_s``: one call straight to the server (no modelq), the unit of ``wall_over_latency``;
* ``sequential``: an ``llm`` job with ``max_in_flight: 1`` (one call at a time, the seed's prefork
  worker) over a few prompts; its per-call time times 168 is the sequential wall time;
* ``wall_s``: an ``llm`` job with the 168 prompts, from submit to its result in the client;
* the worker's resident memory: idle after a warm-up job, and its peak during the run (sampled
  from ``/proc`` every 20 ms; ``VmHWM`` as well, which also covers start-up).

``--quick`` keeps the shape (168 calls, all in flight) with a latency of 1.4 s, not 3.5 s: at 0.35 s
the first calls of a loaded 2-core machine ended before the worker had issued the last.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt, verdict
from modelq.bench.support import Child, child_env, hermetic_settings, release_results, wait_until

TARGET = {"wall_over_latency_max": 1.3, "speedup_vs_sequential_min": 100.0}
WORKER = "io@modelq-bench"
MODEL = "bench-llm"
WORKER_START_TIMEOUT = 90.0


def run(
    *,
    settings: Any = None,
    quick: bool = False,
    say: Callable[[str], None] = lambda _m: None,
    calls: int = 168,
    latency: float | None = None,
    in_flight: int = 200,
) -> Report:
    """Measure; returns the report (see the module docstring).

    Args:
        calls: prompts in the measured job.
        latency: seconds the server takes per call (default 3.5, or 1.4 with ``quick``).
        in_flight: ``MODELQ_LLM_MAX_IN_FLIGHT`` of the worker.
    """
    from modelq.testing.llm_stub import StubLLMServer

    latency = latency if latency is not None else (1.4 if quick else 3.5)
    sample = 4
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-llm-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        say(f"starting the stand-in LLM server ({latency:g}s a call)")
        server = StubLLMServer(latency=latency).start()
        stack.callback(server.stop)
        llm_env = {
            "MODELQ_LLM_ENDPOINTS": json.dumps(
                {"bench": {"base_url": server.base_url, "models": [MODEL], "timeout": latency * 4 + 30}}
            ),
            "MODELQ_LLM_MAX_IN_FLIGHT": str(in_flight),
            "MODELQ_LLM_MAX_PROMPTS": str(max(calls, 10_000)),
        }
        client, worker = _start(stack, home, llm_env, say)

        say("one call straight to the server")
        one_call = _direct_call(server.base_url)
        say("warm-up job (1 prompt)")
        _job(client, ["warm up"], timeout=latency * 2 + 60)
        idle_kib = _rss_kib(worker.pid)

        say(f"one call at a time: {sample} prompts with max_in_flight 1")
        started = time.perf_counter()
        _job(client, [f"sequential {i}" for i in range(sample)], max_in_flight=1, timeout=latency * sample * 2 + 60)
        per_call = (time.perf_counter() - started) / sample

        say(f"fan-out: {calls} prompts, up to {in_flight} in flight")
        server.reset()
        with _peak_rss(worker.pid) as peak:
            started = time.perf_counter()
            result = _job(client, [f"community {i}" for i in range(calls)], timeout=latency * 4 + 120)
            wall = time.perf_counter() - started
        if result["succeeded"] != calls:
            raise BenchError(f"{result['failed']} of {calls} calls failed: {result['results'][0].get('error')}")
        say("stopping the worker and the broker")
        return _report(
            calls=calls,
            latency=latency,
            one_call=one_call,
            per_call=per_call,
            sample=sample,
            wall=wall,
            in_flight=in_flight,
            server_peak=server.peak_active,
            idle_kib=idle_kib,
            peak_kib=peak["run"],
            hwm_kib=_hwm_kib(worker.pid),
        )


def _start(stack: ExitStack, home: Path, llm_env: dict[str, str], say: Callable[[str], None]) -> tuple[Any, Child]:
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.client import Client

    say(f"starting the embedded Redis under {home}")
    embedded = EmbeddedRedis(home)
    embedded.ensure_running()
    stack.callback(embedded.stop)
    say("starting modelq worker -Q io (threads pool)")
    worker = Child(
        "modelq io worker",
        [sys.executable, "-m", "modelq", "worker", "-Q", "io", "--hostname", WORKER, "--loglevel", "WARNING"],
        env=child_env(home, **llm_env),
        cwd=home,
        log=home / "io-worker.log",
    )
    stack.callback(worker.stop)
    # The submitting side has the worker's settings: the submit-time checks use them.
    app = create_celery_app(hermetic_settings(home, llm_env), start_broker=True)
    stack.callback(release_results, app)
    app.modelq.store  # noqa: B018 - migrate now, not during the first job

    def answered() -> bool:
        replies = app.control.ping(destination=[WORKER], timeout=0.5) or []
        return any(WORKER in reply for reply in replies)

    wait_until(
        answered,
        timeout=WORKER_START_TIMEOUT,
        what="the io worker to answer a ping",
        interval=0.05,
        check=worker.ensure_alive,
    )
    return Client.in_process(app=app), worker


def _direct_call(base_url: str) -> float:
    import httpx

    body = {"model": MODEL, "messages": [{"role": "user", "content": "direct"}]}
    with httpx.Client(timeout=120) as http:
        started = time.perf_counter()
        http.post(f"{base_url}/chat/completions", json=body).raise_for_status()
        return time.perf_counter() - started


def _job(client: Any, prompts: list[str], *, timeout: float, **options: Any) -> dict[str, Any]:
    job = client.submit("llm", {"prompts": prompts, "model": MODEL, **options})
    done = client.wait(job["id"], timeout=timeout)
    if done["status"] != "succeeded":
        raise BenchError(f"llm job {job['id']} {done['status']}: {done.get('error')}")
    return done["result"]


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def _hwm_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


@contextmanager
def _peak_rss(pid: int, interval: float = 0.02) -> Iterator[dict[str, int]]:
    """Sample a process's resident memory while the block runs; ``["run"]`` is the peak (KiB)."""
    peak = {"run": _rss_kib(pid)}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak["run"] = max(peak["run"], _rss_kib(pid))

    thread = threading.Thread(target=sample, name="modelq-bench-rss", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join(timeout=5)
        peak["run"] = max(peak["run"], _rss_kib(pid))


def _report(
    *,
    calls: int,
    latency: float,
    one_call: float,
    per_call: float,
    sample: int,
    wall: float,
    in_flight: int,
    server_peak: int,
    idle_kib: int,
    peak_kib: int,
    hwm_kib: int,
) -> Report:
    sequential = per_call * calls
    ratios = {"wall_over_latency": wall / one_call, "speedup_vs_sequential": sequential / wall}
    meets = {
        "wall_over_latency": ratios["wall_over_latency"] <= TARGET["wall_over_latency_max"],
        "speedup_vs_sequential": ratios["speedup_vs_sequential"] >= TARGET["speedup_vs_sequential_min"],
    }
    mib = 1024.0
    figures: dict[str, Any] = {
        "scenario": "llm",
        **{k: round(v, 3) for k, v in ratios.items()},
        "calls": calls,
        "server_latency_s": latency,
        "latency_s": round(one_call, 4),
        "wall_s": round(wall, 3),
        "sequential_per_call_s": round(per_call, 4),
        "sequential_wall_s": round(sequential, 2),
        "sequential_sample_calls": sample,
        "max_in_flight": in_flight,
        "server_peak_concurrent": server_peak,
        "worker_idle_rss_mb": round(idle_kib / mib, 1),
        "worker_peak_rss_mb": round(peak_kib / mib, 1),
        "worker_vmhwm_mb": round(hwm_kib / mib, 1),
        "worker_rss_growth_mb": round((peak_kib - idle_kib) / mib, 1),
        "target": dict(TARGET),
        "meets_target": meets,
        "broker": "embedded redis (unix socket)",
        "pool": "threads (io queue), call threads inside the task",
    }

    rows = [
        ["one call, straight to the server", fmt(one_call, " s", 3), "", ""],
        [f"{calls} calls one at a time (from {sample})", fmt(sequential, " s", 1), "", ""],
        [f"{calls} calls, modelq llm job", fmt(wall, " s", 3), "", ""],
        [
            "wall / one call",
            fmt(ratios["wall_over_latency"], "x", 3),
            f"<= {TARGET['wall_over_latency_max']}x",
            verdict(meets["wall_over_latency"]),
        ],
        [
            "speedup vs one at a time",
            fmt(ratios["speedup_vs_sequential"], "x", 1),
            f">= {TARGET['speedup_vs_sequential_min']:g}x",
            verdict(meets["speedup_vs_sequential"]),
        ],
        ["calls in flight at the server (peak)", str(server_peak), f"<= {in_flight}", ""],
        ["worker RSS idle / peak", f"{idle_kib / mib:.0f} / {peak_kib / mib:.0f} MiB", "", ""],
    ]
    return Report(
        scenario="llm",
        title=f"P5: {calls} LLM calls at {latency:g}s each, one io worker",
        figures=figures,
        columns=["", "measured", "target", "met"],
        rows=rows,
        panels=[
            Panel(
                f"wall time ({sequential:.0f} s one at a time)",
                "s",
                {"one call": one_call, f"{calls} calls": wall},
                target=one_call * TARGET["wall_over_latency_max"],
                target_label="P5 limit (1.3x one call)",
            ),
            Panel(
                "speedup vs one at a time",
                "x",
                {"modelq llm": ratios["speedup_vs_sequential"]},
                target=TARGET["speedup_vs_sequential_min"],
                target_label="P5 floor (100x)",
            ),
            Panel("io worker memory", "MiB", {"idle": idle_kib / mib, "peak in run": peak_kib / mib}),
        ],
        notes=[
            f"stand-in OpenAI server in the bench process, {latency:g}s a call; modelq worker -Q io, "
            f"MODELQ_LLM_MAX_IN_FLIGHT={in_flight}; one-at-a-time = an llm job with max_in_flight 1 over "
            f"{sample} prompts, times {calls}.",
        ],
    )


# How the mechanism was chosen: python -m modelq.bench.llm --mechanisms ---------------------------

#: One mechanism, one run, in a fresh interpreter (gevent must patch before anything imports socket):
#: ``k = min(c, n)`` workers (coroutines, threads or greenlets) pull prompt numbers from one iterator;
#: worker ``j`` uses connection pool ``j // shard``. Prints wall, CPU and peak RSS as one JSON line.
_MECHANISM_SCRIPT = r"""
import sys
mech, url, n, c, shard = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mech == "gevent":
    from gevent import monkey; monkey.patch_all()
import json, resource, ssl, threading, time
import httpx

def body(i):
    return {"model": "m", "messages": [{"role": "user", "content": f"prompt {i} " + "word " * 200}], "max_tokens": 64}

k = min(c, n)
pools = -(-k // shard)
tls = ssl.create_default_context()
limits = httpx.Limits(max_connections=shard, max_keepalive_connections=shard)
out, numbers, lock = [None] * n, iter(range(n)), threading.Lock()
started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
if mech == "asyncio":
    import asyncio

    async def main():
        clients = [httpx.AsyncClient(verify=tls, limits=limits, timeout=120) for _ in range(pools)]
        async def worker(j):
            for i in numbers:
                out[i] = (await clients[j // shard].post(url, json=body(i))).json()["choices"][0]["message"]["content"]
        await asyncio.gather(*(worker(j) for j in range(k)))
    asyncio.run(main())
else:
    clients = [httpx.Client(verify=tls, limits=limits, timeout=120) for _ in range(pools)]
    def worker(j):
        while True:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            out[i] = clients[j // shard].post(url, json=body(i)).json()["choices"][0]["message"]["content"]
    if mech == "gevent":
        from gevent.pool import Pool
        Pool(k).map(worker, range(k))
    else:
        threads = [threading.Thread(target=worker, args=(j,)) for j in range(k)]
        for t in threads: t.start()
        for t in threads: t.join()
wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
assert all(text and text.startswith("m: prompt") for text in out)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_mb": round(after.ru_maxrss / 1024, 1)}))
"""

#: (server latency s, calls, in flight): P5's shape, "hundreds in flight", and pure per-call overhead.
MECHANISM_CASES = ((3.5, 168, 200), (1.0, 1000, 500), (0.0, 2000, 64))


def compare_mechanisms(say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every mechanism (asyncio+httpx, threads+httpx, gevent+httpx; one pool, or pools of 16)
    against a stand-in server in its own process; gevent rows need ``pip install gevent``."""
    import importlib.util
    import subprocess

    from modelq.bench.support import free_port

    mechanisms = ["asyncio", "threads"] + (["gevent"] if importlib.util.find_spec("gevent") else [])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "mechanism.py"
        script.write_text(_MECHANISM_SCRIPT)
        for latency, n, c in MECHANISM_CASES:
            port = free_port()
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelq.testing.llm_stub",
                    "--port",
                    str(port),
                    "--latency",
                    str(latency),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                server.stdout.readline()  # type: ignore[union-attr] - it prints once it listens
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                for mechanism in mechanisms:
                    for shard in (c, 16):
                        proc = subprocess.run(
                            [sys.executable, str(script), mechanism, url, str(n), str(c), str(shard)],
                            capture_output=True,
                            text=True,
                            timeout=600,
                        )
                        row = {
                            "latency_s": latency,
                            "calls": n,
                            "in_flight": c,
                            "mechanism": mechanism,
                            "pools": "one pool" if shard == c else "pools of 16",
                        }
                        if proc.returncode == 0:
                            row.update(json.loads(proc.stdout))
                        else:  # a failed run is a finding too (one pool of 500 threads can break)
                            row["error"] = (
                                proc.stderr.strip().splitlines()[-1][-300:] if proc.stderr.strip() else "failed"
                            )
                        say(json.dumps(row))
                        rows.append(row)
            finally:
                server.terminate()
                server.wait()
    return rows


if __name__ == "__main__":
    if sys.argv[1:] == ["--mechanisms"]:
        compare_mechanisms()
    else:
        sys.exit("usage: python -m modelq.bench.llm --mechanisms   (the P5 scenario itself: modelq bench llm)")
