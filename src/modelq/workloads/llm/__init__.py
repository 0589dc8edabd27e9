"""``llm``: many prompts against an OpenAI-compatible chat server (vLLM, llama.cpp server, ...).

A stand-in OpenAI-compatible server for tests and benchmarks is :mod:`modelq.testing.llm_stub`.

Importing the package registers the task and nothing more (see :mod:`.task`); the modules
that make calls are loaded when a job runs:

* :mod:`.schema` — the job's input and its checks (the 422s);
* :mod:`.job` — one job: map, progress, cancel, optional reduce, the result;
* :mod:`.fanout` — the worker process's call threads and one job's map over them;
* :mod:`.client` — one endpoint's HTTP calls (sharded connection pools);
* :mod:`.retry` — backoff with jitter and ``Retry-After``;
* :mod:`.ratelimit` — the cluster-wide requests/s and tokens/min budget per endpoint.
"""

from modelq.workloads.llm import task as _task  # noqa: F401 - registers the task
