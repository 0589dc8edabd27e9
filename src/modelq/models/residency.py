"""Residency: which models stay loaded in this process, within a memory budget per device.

Like Ray Serve's model multiplexer, but by bytes: an ordered LRU per process, a
lock per model with a re-check after acquiring it (concurrent first uses load
once), evict-before-load until the estimate fits, eager cleanup, and load/evict
timings. A model in use is never evicted; pinned models stay; idle models expire
after their keep-alive. Hooks (``before_load``, ``after_load``, ``on_evict``) see
every event; a failing hook is logged and never breaks a job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from modelq.errors import MemoryBudgetExceeded, ModelLoadError, ModelqError
from modelq.models import memory
from modelq.models.loaders import resolve_loader
from modelq.models.registry import ModelRegistry, ModelSpec

log = logging.getLogger(__name__)

#: How long a load waits for busy models to be released before giving up.
ROOM_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class Budget:
    """What one device may hold: bytes and/or a number of models (None: no limit)."""

    bytes: int | None = None
    models: int | None = None
    #: A fraction of the device's total memory, resolved on first use (so a worker
    #: that never loads a GPU model never imports torch to ask about GPUs).
    share: float | None = None

    def bytes_for(self, device: str) -> int | None:
        if self.bytes is not None or self.share is None:
            return self.bytes
        total = memory.device_total_bytes(device)
        return int(self.share * total) if total else None


class ResidencyHooks:
    """Override any of these to watch residency; the defaults do nothing."""

    def before_load(self, spec: ModelSpec, device: str) -> None: ...

    def after_load(self, spec: ModelSpec, device: str, nbytes: int, seconds: float) -> None: ...

    def on_evict(self, spec: ModelSpec, device: str, nbytes: int, reason: str) -> None: ...


@dataclass
class _Entry:
    spec: ModelSpec
    device: str
    obj: Any
    nbytes: int
    load_seconds: float
    loaded_at: float
    last_used: float
    in_use: int = 0
    hits: int = 0


@dataclass
class _Counters:
    loads: int = 0
    evictions: int = 0
    hits: int = 0
    load_seconds: float = 0.0


@dataclass
class ModelStats:
    name: str
    device: str
    resident: bool
    bytes: int
    in_use: int
    pinned: bool
    loads: int
    evictions: int
    hits: int
    load_seconds: float
    last_used: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Residency:
    """The models resident in this process.

    Args:
        registry: where model declarations come from.
        budgets: per device kind (``cpu``, ``cuda:0`` ...); a device without one has no limit.
        hooks: observers of loads and evictions.
    """

    registry: ModelRegistry
    budgets: dict[str, Budget] = field(default_factory=dict)
    hooks: list[ResidencyHooks] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._counters: dict[str, _Counters] = {}
        # Re-entrant: hooks run under it and may read the figures (stats()).
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)
        self._load_locks: dict[str, threading.Lock] = {}
        #: Loads in progress: name -> (device, estimated bytes). They hold their room while
        #: loading, so two concurrent loads cannot both squeeze into a budget of one.
        self._loading: dict[str, tuple[str, int]] = {}

    # Using a model ------------------------------------------------------------------

    @contextmanager
    def use(self, name: str) -> Iterator[Any]:
        """Hold a model for the duration of a block: loaded once, never evicted while held."""
        obj = self.acquire(name)
        try:
            yield obj
        finally:
            self.release(name)

    def acquire(self, name: str) -> Any:
        """Return the loaded model and mark it in use (pair with :meth:`release`)."""
        self.expire_idle()
        with self._lock:
            entry = self._hit(name)
            if entry is not None:
                return entry.obj
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:
            with self._lock:  # someone may have loaded it while we waited for the lock
                entry = self._hit(name)
                if entry is not None:
                    return entry.obj
            entry = self._load(self.registry.get(name))
            return entry.obj

    def release(self, name: str) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.in_use > 0:
                entry.in_use -= 1
                entry.last_used = time.monotonic()
            self._released.notify_all()

    def _hit(self, name: str) -> _Entry | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        entry.in_use += 1
        entry.hits += 1
        entry.last_used = time.monotonic()
        self._counter(name).hits += 1
        self._entries.move_to_end(name)
        return entry

    def _counter(self, name: str) -> _Counters:
        return self._counters.setdefault(name, _Counters())

    # Loading and evicting -------------------------------------------------------------

    def _load(self, spec: ModelSpec) -> _Entry:
        device = memory.resolve_device(spec.device)
        budget = self.budgets.get(device) or self.budgets.get(device.split(":")[0]) or Budget()
        budget = Budget(bytes=budget.bytes_for(device), models=budget.models)
        estimate = spec.memory or 0
        if budget.bytes is not None and estimate > budget.bytes:
            raise MemoryBudgetExceeded(spec.name, estimate, budget.bytes, device)
        self._make_room(spec, device, budget, estimate)  # reserves the room it made
        try:
            loader = resolve_loader(spec.loader)
            self._emit("before_load", spec, device)
            before = memory.device_used_bytes(device)
            started = time.monotonic()
            try:
                obj = loader(spec if spec.device == device else _with_device(spec, device))
            except ModelqError:
                raise
            except Exception as exc:
                raise ModelLoadError(spec.name, f"{type(exc).__name__}: {exc}") from exc
            seconds = time.monotonic() - started
            nbytes = _footprint(obj, device, memory.device_used_bytes(device) - before, estimate)
        except BaseException:
            with self._lock:
                self._loading.pop(spec.name, None)
                self._released.notify_all()
            raise
        now = time.monotonic()
        entry = _Entry(
            spec=spec,
            device=device,
            obj=obj,
            nbytes=nbytes,
            load_seconds=seconds,
            loaded_at=now,
            last_used=now,
            in_use=1,
        )
        with self._lock:
            self._loading.pop(spec.name, None)
            self._entries[spec.name] = entry
            self._released.notify_all()
            counter = self._counter(spec.name)
            counter.loads += 1
            counter.load_seconds += seconds
        log.info("loaded model %s on %s: %s in %.2fs", spec.name, device, memory_format(nbytes), seconds)
        self._emit("after_load", spec, device, nbytes, seconds)
        if budget.bytes is not None and nbytes > budget.bytes:
            log.warning("model %s measured %s, over the %s budget", spec.name, memory_format(nbytes), device)
        return entry

    def _make_room(self, spec: ModelSpec, device: str, budget: Budget, estimate: int) -> None:
        """Evict idle, unpinned models of this device (least recently used first) until the new one fits."""
        deadline = time.monotonic() + ROOM_WAIT_SECONDS
        with self._lock:
            while True:
                on_device = [e for e in self._entries.values() if e.device == device]
                loading = [size for d, size in self._loading.values() if d == device]
                used = sum(e.nbytes for e in on_device) + sum(loading)
                fits_bytes = budget.bytes is None or used + estimate <= budget.bytes
                fits_count = budget.models is None or len(on_device) + len(loading) + 1 <= budget.models
                if fits_bytes and fits_count:
                    self._loading[spec.name] = (device, estimate)
                    return
                victim = next((e for e in on_device if e.in_use == 0 and not e.spec.pinned), None)
                if victim is not None:
                    self._evict_locked(victim, "room")
                    continue
                pinned = sum(e.nbytes for e in on_device if e.spec.pinned)
                if budget.bytes is not None and pinned + estimate > budget.bytes:
                    raise MemoryBudgetExceeded(spec.name, estimate + pinned, budget.bytes, device)
                # Everything left is busy: wait for a release (never evict a model in use).
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MemoryBudgetExceeded(spec.name, estimate + used, budget.bytes or used, device)
                self._released.wait(timeout=min(remaining, 1.0))

    def _evict_locked(self, entry: _Entry, reason: str) -> None:
        del self._entries[entry.spec.name]
        self._counter(entry.spec.name).evictions += 1
        obj, entry.obj = entry.obj, None
        del obj
        memory.free_device_memory(entry.device)
        log.info(
            "evicted model %s from %s (%s): %s", entry.spec.name, entry.device, reason, memory_format(entry.nbytes)
        )
        self._emit("on_evict", entry.spec, entry.device, entry.nbytes, reason)

    def expire_idle(self) -> list[str]:
        """Unload idle models whose keep-alive has passed. Returns their names."""
        now = time.monotonic()
        expired = []
        with self._lock:
            for entry in list(self._entries.values()):
                keep = entry.spec.keep_alive
                if entry.in_use or entry.spec.pinned or keep is None or keep < 0:
                    continue
                if now - entry.last_used >= keep:
                    self._evict_locked(entry, "keep-alive expired")
                    expired.append(entry.spec.name)
        return expired

    def evict(self, name: str) -> bool:
        """Unload a model now unless it is in use. Returns True when it was unloaded."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.in_use:
                return False
            self._evict_locked(entry, "requested")
            return True

    def clear(self) -> None:
        with self._lock:
            for entry in list(self._entries.values()):
                self._evict_locked(entry, "shutdown")

    # Visibility ---------------------------------------------------------------------

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def held_or_loading(self) -> set[str]:
        """Models resident or being loaded right now (what affinity sticks to)."""
        with self._lock:
            return set(self._entries) | set(self._loading)

    def stats(self) -> list[ModelStats]:
        with self._lock:
            names = list(dict.fromkeys([*self._counters, *self._entries]))
            rows = []
            for name in names:
                entry = self._entries.get(name)
                counter = self._counter(name)
                rows.append(
                    ModelStats(
                        name=name,
                        device=entry.device if entry else "",
                        resident=entry is not None,
                        bytes=entry.nbytes if entry else 0,
                        in_use=entry.in_use if entry else 0,
                        pinned=bool(entry and entry.spec.pinned),
                        loads=counter.loads,
                        evictions=counter.evictions,
                        hits=counter.hits,
                        load_seconds=round(counter.load_seconds, 4),
                        last_used=_wall(entry.last_used) if entry else None,
                    )
                )
            return rows

    def _emit(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, event)(*args)
            except Exception:  # a broken observer must never break a job
                log.exception("residency hook %r failed in %s", hook, event)


def _footprint(obj: Any, device: str, delta: int, estimate: int) -> int:
    """The bytes a loaded model occupies, measured.

    On a GPU the CUDA allocated delta is exact. On the CPU the RSS delta is not: it
    also counts libraries the loader imported the first time (194 MiB of
    sentence-transformers for an 87 MiB model) and misses memory-mapped weights on
    a reload. The model's own tensors are the better measure there; the delta is
    the fallback for models that are not torch modules.
    """
    if device.startswith("cuda") and delta > 0:
        return delta
    return memory.tensor_bytes(obj) or max(delta, 0) or estimate


def _with_device(spec: ModelSpec, device: str) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, device=device)


def _wall(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)


def memory_format(n: int) -> str:
    from modelq.errors import format_bytes

    return format_bytes(n)


def budgets_from_settings(settings: Any) -> dict[str, Budget]:
    """The per-device budgets the settings describe: ``cpu``, and ``cuda`` for each GPU."""
    return {
        "cpu": _budget(settings.cpu_memory_budget, settings.cpu_max_models, "MODELQ_CPU_MEMORY_BUDGET"),
        "cuda": _budget(settings.gpu_memory_budget, settings.gpu_max_models, "MODELQ_GPU_MEMORY_BUDGET"),
    }


def _budget(size: str | None, models: int | None, key: str) -> Budget:
    if size is None:
        return Budget(models=models)
    try:
        share = float(size)
    except ValueError:
        return Budget(bytes=memory.parse_size(size, key=key), models=models)
    if 0 < share <= 1:
        return Budget(models=models, share=share)
    return Budget(bytes=memory.parse_size(size, key=key), models=models)
