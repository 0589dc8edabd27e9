"""Settings: the one source of defaults for the CLI, the API and the workers.

Values come, highest priority first, from keyword arguments, ``MODELQ_*``
environment variables, a ``.env`` file, and a YAML file (``MODELQ_CONFIG``, or
``./modelq.yml`` when present). Invalid values fail at start with one line that
names the bad key (:class:`modelq.errors.ConfigError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from modelq.errors import ConfigError

PoolKind = Literal["prefork", "solo", "threads", "gevent"]

DEFAULT_CONFIG_FILE = "modelq.yml"


class QueueConfig(BaseModel):
    """One named queue and the worker pool that suits it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: PoolKind = "prefork"
    concurrency: int | None = Field(default=None, ge=1)
    prefetch_multiplier: int = Field(default=1, ge=1)
    #: Waiting jobs this queue accepts (its model queues included); more answer 429 (None: no cap).
    max_queued: int | None = Field(default=None, ge=1)


class ExecConfig(BaseModel):
    """An external program tasks may run (``execs:``); see :mod:`modelq.execs`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    #: Seconds before the program is stopped (None: the caller's, else no limit).
    timeout: float | None = Field(default=None, gt=0)
    #: Environment variables passed through from the worker, beyond the basic set.
    env: list[str] = Field(default_factory=list)


class ModelConfig(BaseModel):
    """A model declared in the config file (``models:``); see :mod:`modelq.models.registry`."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    #: ``sentence-transformers``, ``cross-encoder``, ``diffusers``, ``transformers``, or ``module:function``.
    loader: str
    #: Local path or hub id handed to the loader.
    source: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    #: Expected memory size, e.g. ``"90MB"``; replaced by the measured footprint after a load.
    memory: str | None = None
    pinned: bool = False
    #: Seconds an idle model stays loaded; -1 keeps it until evicted for room.
    keep_alive: float | None = None
    preload: bool = False
    #: At most this many jobs of the model run (or wait on the broker) at once across the cluster
    #: (a model a downstream server or a licence limits); None: no cap.
    max_concurrency: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class LLMEndpoint(BaseModel):
    """An OpenAI-compatible chat server (vLLM, llama.cpp server, ...) for the ``llm`` task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The server's OpenAI base URL, e.g. ``http://gpu-1:8001/v1`` (calls go to ``{base_url}/chat/completions``).
    base_url: str
    #: Name of the environment variable that holds the API key on the workers (the key itself never goes in config).
    api_key_env: str | None = None
    #: Model names (globs) this server answers for; a job's ``model`` goes to the first endpoint that matches.
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    #: Cluster-wide limits shared by every worker (None: unlimited).
    requests_per_second: float | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    #: Seconds a call may wait for its answer (default ``llm_timeout``).
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


class WorkloadSettings(BaseModel):
    """The settings of one built-in workload, nested in :class:`Settings` under its name (``llm``).

    Each keeps the flat name it always had: ``MODELQ_LLM_TIMEOUT`` in the environment and ``.env``;
    in ``modelq.yml`` either ``llm: {timeout: 30}`` or ``llm_timeout: 30``; in code
    ``settings.llm.timeout``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class LLMSettings(WorkloadSettings):
    """The ``llm`` task: the chat servers it calls and how it calls them."""

    #: OpenAI-compatible chat servers, by name (see :class:`LLMEndpoint`).
    endpoints: dict[str, LLMEndpoint] = Field(default_factory=dict)
    #: Calls in flight per worker process, shared by all its ``llm`` jobs (its call threads).
    max_in_flight: int = Field(default=64, ge=1, le=4096)
    #: Prompts one ``llm`` job may carry; more is refused at submit time (422).
    max_prompts: int = Field(default=10_000, ge=1)
    #: Seconds a call may wait for its answer, unless its endpoint says otherwise.
    timeout: float = Field(default=120.0, gt=0)
    #: Retries of a call after 408/409/429/5xx, a timeout or a connection error.
    max_retries: int = Field(default=4, ge=0)
    #: First backoff (seconds, doubling, with jitter) and the longest wait, ``Retry-After`` included.
    retry_backoff: float = Field(default=0.5, gt=0)
    retry_backoff_max: float = Field(default=60.0, gt=0)
    #: Where the cluster-wide rate limits live: ``auto`` = Redis (the broker, else the result
    #: backend) when there is one, else the job store's database.
    rate_limit_store: Literal["auto", "redis", "database"] = "auto"


class EmbedSettings(WorkloadSettings):
    """``embed`` (``POST /v1/embeddings``), and the characters of each text ``rerank`` takes."""

    #: Texts per request; more is a 422 naming the field.
    max_texts: int = Field(default=2048, ge=1)
    #: Characters per text (a rerank's query and each document too); more is a 422 naming the field.
    max_chars: int = Field(default=100_000, ge=1)


class RerankSettings(WorkloadSettings):
    """``rerank``: a query against documents, by a cross-encoder."""

    #: Documents per request; more is a 422 naming the field.
    max_documents: int = Field(default=1000, ge=1)


class ImageSettings(WorkloadSettings):
    """``text2img`` and ``img2img``: the default model and the caps checked at submit time (a 422
    naming the field)."""

    #: The model a request that names none uses.
    default_model: str = "stable-diffusion"
    #: Image side in pixels.
    max_side: int = Field(default=2048, ge=8)
    #: Denoising steps.
    max_steps: int = Field(default=150, ge=1)
    #: Images per request.
    max_count: int = Field(default=8, ge=1)
    #: Characters in a prompt (and a negative prompt).
    max_prompt_chars: int = Field(default=20_000, ge=1)
    #: Seconds ``POST /generate`` and ``POST /v1/images/generations`` wait for the images (then 504
    #: naming the job, which goes on; ``/results/{id}`` has it when it is done).
    sync_timeout: float = Field(default=300.0, gt=0)


#: The workloads' settings groups by field name in :class:`Settings`.
WORKLOAD_GROUPS: dict[str, type[WorkloadSettings]] = {
    "llm": LLMSettings,
    "embed": EmbedSettings,
    "rerank": RerankSettings,
    "image": ImageSettings,
}


def _default_queues() -> dict[str, QueueConfig]:
    return {
        "default": QueueConfig(pool="prefork"),
        "cpu": QueueConfig(pool="prefork"),
        # One process per GPU: CUDA must never be initialised in a forked parent.
        # Threads in one process share one copy of each model, and let small requests
        # batch; nothing forks, so CUDA stays safe.
        "gpu": QueueConfig(pool="threads", concurrency=8),
        # I/O-bound work (HTTP calls) wants many in flight per process.
        "io": QueueConfig(pool="threads", concurrency=64, prefetch_multiplier=4),
    }


class Settings(BaseSettings):
    """Everything modelq can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="MODELQ_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        # MODELQ_LLM_TIMEOUT -> llm.timeout: a workload's settings keep their flat environment names.
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    #: Where modelq keeps its state on this machine: the embedded broker, the SQLite job store, artifacts.
    home: Path = Path(".modelq")
    #: ``redis://host:6379/0`` or ``amqp://user:pass@host:5672/vhost``; None: the embedded Redis under ``home``.
    broker_url: str | None = None
    #: Celery's result backend, used only to wake waiters (the job store is the record); None: the broker, when it is Redis.
    result_backend: str | None = None
    #: The job store: ``postgresql://user@host/db`` for a cluster (extra ``postgres``); None: ``sqlite:///<home>/jobs.db``.
    database_url: str | None = None
    #: Message format; pickle is never accepted.
    serializer: Literal["json", "msgpack"] = "json"

    #: Queues by name, each with its pool (``prefork``, ``threads``, ``solo``, ``gevent``), concurrency and prefetch.
    queues: dict[str, QueueConfig] = Field(default_factory=_default_queues)
    #: Prepended to every broker queue and exchange name (``alice`` -> ``alice.gpu``), so several
    #: users or teams share one broker without seeing each other's queues, workers or events.
    queue_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_-]*$")
    #: Task name glob -> queue name; the first matching pattern wins.
    routes: dict[str, str] = Field(default_factory=dict)
    #: External programs by name: ``{"wsclean": "/opt/bin/wsclean"}`` or ``{"wsclean": {"path": ..., "timeout": ...}}``.
    execs: dict[str, ExecConfig] = Field(default_factory=dict)
    #: Python modules workers (and the API) import to register user tasks.
    imports: Annotated[list[str], NoDecode] = Field(default_factory=list)

    #: Where the API listens (beyond loopback only with ``api_keys``, or with ``--insecure``).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    #: API keys by owner, as hashes (``{"alice": ["sha256:..."]}``; ``modelq keys new alice`` makes
    #: one). Each key's jobs are its owner's alone. With none, the API listens on loopback only.
    api_keys: dict[str, list[str]] = Field(default_factory=dict)
    #: ``Host`` header values the API answers (``*.example.com`` matches subdomains; comma-separated
    #: in the environment). None: with no ``api_keys``, only localhost, 127.0.0.1 and [::1], so a web
    #: page cannot reach a keyless API through a DNS name rebound to loopback; with keys, any host.
    allowed_hosts: Annotated[list[str] | None, NoDecode] = None
    #: Fair share: an owner's weight (default 1); owners with jobs waiting in one queue are served in
    #: proportion to their weights (see modelq.jobs.dispatch). JSON in the environment, e.g. {"alice": 3}.
    owner_weights: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    #: Fair share: jobs of one queue waiting on the broker at most; the next ones wait in the job store
    #: for their turn (owners in proportion to their weights, interactive jobs first).
    dispatch_window: int = Field(default=4, ge=1)
    #: With ``api_keys``: jobs one owner may have queued at once (then 429 with Retry-After). None: no limit.
    max_queued_per_owner: int | None = Field(default=None, ge=1)
    #: How deeply a job's input may nest lists and objects (deeper: 422 before anything is recorded).
    max_input_depth: int = Field(default=64, ge=1, le=400)
    #: Larger request bodies answer 413.
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: Most jobs one page of ``GET /v1/jobs`` may list (500 at most); a larger ``limit`` answers 422.
    max_page_size: int = Field(default=500, ge=1)
    #: Seconds a client is told to wait (``Retry-After``) when a queue is at its ``max_queued``.
    queue_full_retry_after: int = Field(default=5, ge=1)

    #: Seconds Celery keeps results (job records stay).
    result_expires: int = Field(default=24 * 3600, ge=1)
    #: Celery task events from every worker (``-E``): three broker messages per job, about half of a
    #: worker's own time per short job. Off: Flower turns them on at the workers it watches (its
    #: ``--enable_events``, on by default); ``celery events`` needs them on, or ``celery control enable_events``.
    task_events: bool = False
    #: Soft limit (seconds) for every job whose task sets none: the task gets ``SoftTimeLimitExceeded``. None: no limit.
    task_soft_time_limit: float | None = Field(default=None, gt=0)
    #: Hard limit (seconds) for every job whose task sets none: the process running it is replaced
    #: (prefork pools; threads and solo pools cannot stop a running thread). A task's own
    #: ``time_limit`` may raise it. None: no limit.
    task_time_limit: float | None = Field(default=6 * 3600.0, gt=0)
    #: Retries of a job whose task raised one of its ``retry_for`` errors (a task's own ``retries`` wins).
    task_max_retries: int = Field(default=3, ge=0)
    #: Times one message may start a job; a job that ends its worker every time (a segfault,
    #: an out-of-memory kill) is then failed and moved to the dead-letter queue.
    max_deliveries: int = Field(default=3, ge=1)
    #: Queue (without ``queue_prefix``) that holds jobs stopped after ``max_deliveries``.
    dead_letter_queue: str = "dead"
    #: The longest backoff (seconds) between retries (exponential, with jitter).
    retry_backoff_max: int = Field(default=600, ge=1)
    #: Seconds a job may wait before the reconciler checks it against the broker (see modelq.reconciler):
    #: republished when its queue holds no message and no worker holds it; reported when nobody reads its queue.
    reconcile_grace: float = Field(default=30.0, gt=0)
    #: Seconds between two passes of the reconciler (one worker at a time runs it).
    reconcile_interval: float = Field(default=5.0, gt=0)
    #: Redis: seconds before an unacknowledged message is delivered again (workers renew the ones they hold).
    visibility_timeout: int = Field(default=3600, ge=1)
    #: Seconds between two heartbeats of a running job in the job store (see modelq.lease): a message
    #: redelivered while its job runs restarts it only after three beats were missed.
    run_heartbeat_interval: float = Field(default=5.0, gt=0)

    #: Processes or threads per worker when ``-c`` is not given, before the queues' own ``concurrency``.
    worker_concurrency: int | None = Field(default=None, ge=1)
    #: Replace a worker child after this many jobs (None: never).
    worker_max_tasks_per_child: int | None = Field(default=None, ge=1)
    #: Resident memory (KiB) after which a worker child is replaced.
    worker_max_memory_per_child: int | None = Field(default=None, ge=1)

    #: Models declared in config (name -> declaration); ``@modelq.model`` adds more in code.
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    #: Directories a request may load undeclared models from, by path or by a path relative to
    #: one of them (comma-separated in the environment). None: ``MODELQ_HOME/models``. Declared
    #: models may use any path. See :mod:`modelq.models.sources`.
    model_roots: Annotated[list[Path] | None, NoDecode] = None
    #: Let a request name a hub id that is not declared (a worker then downloads it). Off: many
    #: clusters are offline, and a request should not make a worker reach the network.
    allow_hub_models: bool = False
    #: Per-device memory budgets: bytes ("12GB", "512MiB") or a fraction of the device ("0.8").
    gpu_memory_budget: str | None = "0.9"
    cpu_memory_budget: str | None = None
    #: Most models resident at once per worker process and device kind (None: no count limit).
    gpu_max_models: int | None = Field(default=1, ge=1)
    cpu_max_models: int | None = Field(default=None, ge=1)
    model_keep_alive: float = Field(default=300.0, description="seconds; -1 = never expire")
    #: Seconds a model nobody serves waits before it may take a worker busy with another model
    #: (see modelq.models.placement for the whole rule and the starvation bound).
    affinity_max_wait: float = Field(default=5.0, gt=0)
    #: k: a worker that is the only one serving its model leaves it for another model only after
    #: serving it for k times the other model's measured load time (so a switch costs at most
    #: 1/(k+1) of the worker's time: a tenth with the default).
    affinity_switch_factor: float = Field(default=9.0, ge=0)
    #: Models this worker serves, and no others (a static placement: "dedicated workers"); None: any.
    worker_models: Annotated[list[str] | None, NoDecode] = None
    #: Dynamic batching (``modelq.batch_call``): most items in one batch, and milliseconds the first waits for more.
    batch_max_size: int = Field(default=32, ge=1)
    batch_max_wait_ms: float = Field(default=5.0, ge=0)
    #: Padded tokens per forward pass: a batch's texts, sorted by length, go through the model in
    #: groups of at most this many (longest x count). Padding a short text to a long one's length
    #: wastes the work, and large padded tensors run slowly on CPUs. None: 256 on a CPU, 16384 on a GPU.
    batch_max_tokens: int | None = Field(default=None, ge=1)
    #: torch's intra-op threads per worker process (None: the cores this worker may use, shared
    #: among its pool processes). Forward passes run one at a time per device, so more only
    #: oversubscribes the cores.
    torch_threads: int | None = Field(default=None, ge=1)

    #: The ``llm`` task (OpenAI-compatible chat servers): ``MODELQ_LLM_*``, see :class:`LLMSettings`.
    llm: LLMSettings = Field(default_factory=LLMSettings)
    #: ``embed`` (``POST /v1/embeddings``): ``MODELQ_EMBED_*``, see :class:`EmbedSettings`.
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    #: ``rerank``: ``MODELQ_RERANK_*``, see :class:`RerankSettings`.
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    #: ``text2img`` and ``img2img``: ``MODELQ_IMAGE_*``, see :class:`ImageSettings`.
    image: ImageSettings = Field(default_factory=ImageSettings)

    #: ``enrich`` (``POST /v1/documents``): the largest PDF accepted, in bytes and in pages (a 422
    #: naming the limit). Uploads are also bound by ``max_request_bytes``.
    max_pdf_bytes: int = Field(default=50 * 1000 * 1000, ge=1024)
    max_pdf_pages: int = Field(default=500, ge=1)

    #: ``local`` runs a job in the submitting process when no worker answers.
    fallback: Literal["off", "local"] = "off"
    #: Seconds to wait for a worker's answer before the local fallback runs a job.
    fallback_timeout: float = Field(default=1.0, gt=0)

    @field_validator("execs", mode="before")
    @classmethod
    def _exec_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: {"path": spec} if isinstance(spec, str) else spec for name, spec in value.items()}
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _one_key_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {owner: [digests] if isinstance(digests, str) else digests for owner, digests in value.items()}
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_are_hashes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from modelq.access import HASH_PATTERN, OWNER_PATTERN

        for owner, digests in value.items():
            if not OWNER_PATTERN.match(owner):
                raise ValueError(f"owner {owner!r} must be 1-200 letters, digits, '.', '_', '@' or '-'")
            for digest in digests:
                if not HASH_PATTERN.match(digest):
                    raise ValueError(
                        f"the keys of {owner!r} must be hashes ('sha256:' and 64 hex digits, as "
                        "`modelq keys new` prints), never the keys themselves"
                    )
        return value

    @field_validator("imports", "worker_models", "model_roots", "allowed_hosts", mode="before")
    @classmethod
    def _split_imports(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("routes")
    @classmethod
    def _routes_name_known_queues(cls, value: dict[str, str], info: Any) -> dict[str, str]:
        queues = info.data.get("queues") or {}
        for pattern, queue in value.items():
            if queues and queue not in queues:
                raise ValueError(
                    f"route {pattern!r} names queue {queue!r}, which is not in queues ({', '.join(queues)})"
                )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [_Nested(init_settings), env_settings, dotenv_settings]
        config_file = os.environ.get("MODELQ_CONFIG")
        if config_file is None and Path(DEFAULT_CONFIG_FILE).is_file():
            config_file = DEFAULT_CONFIG_FILE
        if config_file is not None:
            if not Path(config_file).is_file():
                raise ConfigError("MODELQ_CONFIG", f"file {config_file!r} does not exist")
            sources.append(_Nested(YamlConfigSettingsSource(settings_cls, yaml_file=config_file)))
        return tuple(sources)

    # Derived values -----------------------------------------------------------------

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def model_root_dirs(self) -> list[Path]:
        """Where requests may load undeclared models from (``model_roots``, else ``MODELQ_HOME/models``)."""
        roots = self.model_roots if self.model_roots is not None else [self.home_dir / "models"]
        return [root.expanduser().resolve() for root in roots]

    @property
    def artifacts_dir(self) -> Path:
        return self.home_dir / "artifacts"

    @property
    def job_database_url(self) -> str:
        """The job store URL: ``MODELQ_DATABASE_URL`` or SQLite under ``MODELQ_HOME``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_dir / 'jobs.db'}"

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.broker_url

    def broker_queue(self, queue: str) -> str:
        """The name a modelq queue has on the broker (with ``queue_prefix``)."""
        return f"{self.queue_prefix}.{queue}" if self.queue_prefix else queue

    def logical_queue(self, broker_queue: str) -> str:
        """The modelq queue name for a broker queue name (without ``queue_prefix``)."""
        prefix = f"{self.queue_prefix}." if self.queue_prefix else ""
        return broker_queue[len(prefix) :] if prefix and broker_queue.startswith(prefix) else broker_queue

    def queue_for(self, task_name: str, declared: str | None = None) -> str:
        """The queue a task goes to: a configured route, else its declared queue, else default."""
        from fnmatch import fnmatchcase

        for pattern, queue in self.routes.items():
            if fnmatchcase(task_name, pattern):
                return queue
        return declared or "default"


class _Nested(PydanticBaseSettingsSource):
    """A source whose flat workload keys (``llm_timeout: 30``: keyword arguments, ``modelq.yml``) are
    nested (``llm: {timeout: 30}``) before the sources merge, so each source keeps its priority."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self.inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = dict(self.inner())
        for key in [k for k in data if k not in Settings.model_fields]:
            group, _, name = key.partition("_")
            if group in WORKLOAD_GROUPS and name in WORKLOAD_GROUPS[group].model_fields:
                nested = data.get(group)
                nested = dict(nested) if isinstance(nested, dict) else {}
                nested.setdefault(name, data.pop(key))
                data[group] = nested
        return data


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, turning validation errors into one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first.get("loc", ())]
        if len(loc) >= 2 and loc[0] in WORKLOAD_GROUPS:  # llm.timeout is MODELQ_LLM_TIMEOUT
            loc = [f"{loc[0]}_{loc[1]}", *loc[2:]]
        key = "MODELQ_" + "__".join(loc).upper() if loc else "MODELQ"
        raise ConfigError(key, first.get("msg", "invalid value")) from None


def safe_url(url: str | None) -> str | None:
    """``url`` with any password replaced by ``**``, for logs, status and error messages."""
    if not url:
        return url
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)
