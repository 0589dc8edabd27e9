"""What a timetable job accepts: the instance (``.ctt`` text or JSON) and the run's settings.

Quality modes set the island model's size; any setting can be overridden per job:

========== ======= ========== ======== =========== ========== ============ =========
mode       islands population epochs  generations migrants   local search anneal
========== ======= ========== ======== =========== ========== ============ =========
fast       2       24         3        15          2          3            200000
balanced   4       32         5        30          2          4            1000000
best       4       48         8        60          3          6            3000000
========== ======= ========== ======== =========== ========== ============ =========

``generations`` and ``anneal`` (annealing steps on the island's best timetable, see
:mod:`.anneal`) count per island per epoch. ``time_limit`` (seconds) replaces the step count
by the clock: every island anneals until its epoch's share of the limit is spent (a wall-clock
deadline, so an island that starts late anneals less), and the job ends at about that time.
Pure Python: the API validates input with it before anything is queued.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from modelq.errors import InvalidInput
from modelq.workloads.timetable.problem import Instance, instance_from_dict

QUALITY_MODES: dict[str, dict[str, int]] = {
    "fast": {
        "islands": 2,
        "population": 24,
        "epochs": 3,
        "generations": 15,
        "migrants": 2,
        "local_search": 3,
        "anneal": 200_000,
    },
    "balanced": {
        "islands": 4,
        "population": 32,
        "epochs": 5,
        "generations": 30,
        "migrants": 2,
        "local_search": 4,
        "anneal": 1_000_000,
    },
    "best": {
        "islands": 4,
        "population": 48,
        "epochs": 8,
        "generations": 60,
        "migrants": 3,
        "local_search": 6,
        "anneal": 3_000_000,
    },
}
TOPOLOGIES = ("ring", "full", "none")
FITNESS = ("numpy", "torch", "auto")
#: Upper bounds per setting (inclusive); every setting is at least 1 except migrants (0).
LIMITS = {
    "islands": 64,
    "population": 512,
    "epochs": 200,
    "generations": 5000,
    "migrants": 64,
    "local_search": 64,
    "variants": 20,
    "anneal": 100_000_000,
}
#: Longest ``time_limit`` a job may ask for, in seconds.
MAX_TIME_LIMIT = 86_400


@dataclass(frozen=True)
class RunConfig:
    """The island model's settings for one job (JSON-friendly: it travels in task messages)."""

    quality_mode: str = "balanced"
    seed: int = 0
    islands: int = 4
    population: int = 32
    epochs: int = 5
    generations: int = 30
    migrants: int = 2
    local_search: int = 4
    topology: str = "ring"
    variants: int = 3
    fitness: str = "numpy"
    anneal: int = 1_000_000
    #: seconds for the whole run (islands anneal by the clock), or None (``anneal`` steps)
    time_limit: float | None = None
    #: when the run started (``time.time()``), set by whoever starts it when ``time_limit`` is given
    started_at: float | None = None
    #: one island per free slot, counted when the run starts (a time limit without ``islands``)
    islands_per_slot: bool = False

    def started(self, slots: int) -> RunConfig:
        """This config as its run starts on ``slots`` parallel slots: ``started_at`` set to now, and
        one island per slot when ``islands_per_slot`` (with a time limit, an island without a slot
        would only wait for its epoch's deadline to pass)."""
        import time
        from dataclasses import replace

        if self.time_limit is None:
            return self
        islands = min(max(slots, 1), LIMITS["islands"]) if self.islands_per_slot else self.islands
        return replace(self, started_at=time.time(), islands=islands, islands_per_slot=False)

    def epoch_deadline(self, epoch: int) -> float | None:
        """Wall-clock time (``time.time()``) by which epoch ``epoch``'s islands stop annealing."""
        if self.time_limit is None or self.started_at is None:
            return None
        return self.started_at + self.time_limit * (epoch + 1) / self.epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def ga_params(self):
        from modelq.workloads.timetable.ga import GAParams

        return GAParams(population=self.population, local_search=self.local_search, elite=min(2, self.population - 1))


def _at(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def resolve_config(quality_mode: str = "balanced", *, field: str = "input", **overrides: Any) -> RunConfig:
    """The settings of a quality mode with the given overrides (``None`` keeps the mode's value).

    Raises:
        InvalidInput: an unknown mode, topology or fitness backend, or a value out of range,
            naming the field (``input.islands``, ...).
    """
    if quality_mode not in QUALITY_MODES:
        raise InvalidInput(
            f"quality_mode must be one of {', '.join(QUALITY_MODES)}, got {quality_mode!r}",
            field=_at(field, "quality_mode"),
        )
    values: dict[str, Any] = {"quality_mode": quality_mode, **QUALITY_MODES[quality_mode]}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "time_limit":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= MAX_TIME_LIMIT:
                raise InvalidInput(
                    f"time_limit must be a number of seconds above 0 and at most {MAX_TIME_LIMIT}, got {value!r}",
                    field=_at(field, key),
                )
        elif key in ("topology", "fitness"):
            choices = TOPOLOGIES if key == "topology" else FITNESS
            if value not in choices:
                raise InvalidInput(f"{key} must be one of {', '.join(choices)}, got {value!r}", field=_at(field, key))
        elif key == "seed":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise InvalidInput(f"seed must be a non-negative integer, got {value!r}", field=_at(field, "seed"))
        elif key in LIMITS:
            low = 0 if key in ("migrants", "anneal") else 1
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= LIMITS[key]:
                raise InvalidInput(
                    f"{key} must be an integer from {low} to {LIMITS[key]}, got {value!r}", field=_at(field, key)
                )
        else:
            raise InvalidInput(f"unknown setting {key!r}", field=_at(field, key))
        values[key] = value
    if values.get("time_limit") is not None:
        # by the clock, the annealing is what buys quality: one generation per epoch, one island per slot
        if overrides.get("generations") is None:
            values["generations"] = 1
        values["islands_per_slot"] = overrides.get("islands") is None
    config = RunConfig(**values)
    if config.population < 2:
        raise InvalidInput("population must be at least 2", field=_at(field, "population"))
    if config.migrants >= config.population:
        raise InvalidInput(
            f"migrants ({config.migrants}) must be fewer than the population ({config.population})",
            field=_at(field, "migrants"),
        )
    return config


def load_instance(instance: Any = None, ctt: Any = None, *, field: str = "input") -> Instance:
    """The instance of a job: exactly one of ``instance`` (the JSON form) or ``ctt`` (ITC-2007 text).

    Raises:
        InvalidInput: neither or both given, or the one given is malformed (for ``.ctt`` the
            message starts with the line number).
    """
    prefix = f"{field}." if field else ""
    if (instance is None) == (ctt is None):
        raise InvalidInput(
            "give the problem either as 'instance' (JSON) or as 'ctt' (ITC-2007 text), not "
            f"{'both' if instance is not None else 'neither'}",
            field=f"{prefix}instance",
        )
    if ctt is not None:
        from modelq.workloads.timetable.ctt import parse_ctt

        if not isinstance(ctt, str):
            raise InvalidInput(f"must be the .ctt text as a string, got {type(ctt).__name__}", field=f"{prefix}ctt")
        return parse_ctt(ctt, field=f"{prefix}ctt")
    return instance_from_dict(instance, field=f"{prefix}instance")


def check_input(data: dict[str, Any], field: str = "input") -> tuple[Instance, RunConfig]:
    """Validate a ``timetable`` job's whole input: the instance and every setting."""
    settings = {
        k: data.get(k)
        for k in (
            "seed",
            "islands",
            "population",
            "epochs",
            "generations",
            "migrants",
            "local_search",
            "topology",
            "variants",
            "fitness",
            "anneal",
            "time_limit",
        )
    }
    config = resolve_config(data.get("quality_mode") or "balanced", field=field, **settings)
    meta = data.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidInput(f"must be an object, got {type(meta).__name__}", field=_at(field, "meta"))
    return load_instance(data.get("instance"), data.get("ctt"), field=field), config
