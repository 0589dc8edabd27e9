"""The model registry: every model is declared once, in config or with ``@modelq.model``.

    @modelq.model("tiny", device="cpu", memory="50MB", keep_alive=600)
    def load_tiny(spec):
        return torch.load(spec.source)

A declaration names a loader (a built-in by name, or a function), a source, a
device, an expected size and how long it may stay idle. Nothing is loaded here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from modelq.errors import ConfigError, ModelNotFound

if TYPE_CHECKING:
    from modelq.config import Settings

Loader = Callable[["ModelSpec"], Any]


@dataclass(frozen=True)
class ModelSpec:
    """A declared model."""

    name: str
    loader: str | Loader
    source: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    #: Expected bytes (None: unknown until loaded).
    memory: int | None = None
    pinned: bool = False
    #: Idle seconds before unloading; None uses MODELQ_MODEL_KEEP_ALIVE; -1 never.
    keep_alive: float | None = None
    preload: bool = False
    options: dict[str, Any] = field(default_factory=dict)


_DECLARED: dict[str, ModelSpec] = {}
#: Names :func:`declare_by_source` added (paths and hub ids a request named), not declared by anyone.
_BY_SOURCE: set[str] = set()


def model(
    name: str,
    *,
    source: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    memory: str | int | None = None,
    pinned: bool = False,
    keep_alive: float | None = None,
    preload: bool = False,
    **options: Any,
) -> Callable[[Loader], Loader]:
    """Declare a model whose loader is the decorated function (it receives the :class:`ModelSpec`).

    Args:
        name: the name tasks and requests use.
        source: a path or hub id for the loader.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        memory: expected size (``"90MB"``), used until a load measures the real footprint.
        pinned: never evicted.
        keep_alive: idle seconds before unloading (-1: never).
        preload: load when a worker process starts.
    """
    from modelq.models.memory import parse_size

    def register(loader: Loader) -> Loader:
        _DECLARED[name] = ModelSpec(
            name=name,
            loader=loader,
            source=source,
            device=device,
            dtype=dtype,
            memory=parse_size(memory, key=f"model {name}: memory"),
            pinned=pinned,
            keep_alive=keep_alive,
            preload=preload,
            options=options,
        )
        return loader

    return register


def declare(spec: ModelSpec) -> None:
    """Declare a model from code without a decorator."""
    _DECLARED[spec.name] = spec


def declare_by_source(name: str, loader: str | Loader, **fields: Any) -> ModelSpec | None:
    """Declare ``name`` as a path or hub id for ``loader``, unless it is declared already.

    Workloads that take "any model by name or path" (embed, rerank, text2img) call
    this, so an undeclared name still goes through the registry and residency. Only a
    directory under a model root, or a hub id where those are allowed, may be declared
    this way (:func:`modelq.models.sources.resolve`). Config entries (``models:``) win.

    Raises:
        ModelNotFound: a name a request may not use.
    """
    from modelq.models import sources
    from modelq.tasks import current_settings

    settings = current_settings()
    if name in settings.models:
        return None
    if name not in _DECLARED:
        _DECLARED[name] = ModelSpec(name=name, loader=loader, source=sources.resolve(name, settings), **fields)
        _BY_SOURCE.add(name)
    return _DECLARED[name]


class ModelRegistry:
    """Declared models for one set of settings: config entries over decorated ones."""

    def __init__(self, settings: Settings) -> None:
        from modelq.models.memory import parse_size

        self._settings = settings
        self._from_config: dict[str, ModelSpec] = {}
        for name, cfg in settings.models.items():
            self._from_config[name] = ModelSpec(
                name=name,
                loader=cfg.loader,
                source=cfg.source,
                device=cfg.device,
                dtype=cfg.dtype,
                memory=parse_size(cfg.memory, key=f"MODELQ_MODELS__{name.upper()}__MEMORY"),
                pinned=cfg.pinned,
                keep_alive=cfg.keep_alive,
                preload=cfg.preload,
                options=dict(cfg.options),
            )

    def all(self) -> dict[str, ModelSpec]:
        return {**_DECLARED, **self._from_config}

    def declared_names(self) -> list[str]:
        """Models declared in config or code (not the paths and hub ids requests named)."""
        return sorted({*(name for name in _DECLARED if name not in _BY_SOURCE), *self._from_config})

    def get(self, name: str) -> ModelSpec:
        specs = self.all()
        if name not in specs:
            raise ModelNotFound(name, list(specs))
        spec = specs[name]
        if spec.keep_alive is None:
            spec = replace(spec, keep_alive=self._settings.model_keep_alive)
        if spec.device not in ("cpu", "auto", "cuda") and not spec.device.startswith("cuda:"):
            raise ConfigError(f"model {name}: device", f"{spec.device!r} is not cpu, cuda, cuda:N or auto")
        return spec
