"""Where a model a request names may come from.

A request (``"model": ...`` in embed, rerank, images, enrich) may name:

1. a declared model (config ``models:`` or ``@modelq.model``): any source, as declared;
2. a directory under one of the ``model_roots`` (default ``MODELQ_HOME/models``), by its path
   or by its path relative to a root: ``/srv/models/bge-small`` or ``bge-small``;
3. a hub id (``BAAI/bge-small-en``) only when ``allow_hub_models`` is on (off by default: many
   clusters are offline, and a hub id makes a worker reach the network).

Anything else is the same :class:`~modelq.errors.ModelNotFound`, whether or not the path exists
and whatever it is, so a request cannot map a worker's file system or make it open any file. A
path is checked after following its links (a link inside a root that points out of it is refused).
The check runs where the name is first seen (the API, or the Python client's submit) and again
in the worker that loads it, each on its own file system.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from modelq.errors import ModelNotFound

#: What a hub id looks like: ``name`` or ``org/name``, no path tricks.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")

HINT = (
    "declare it (models: in the config), put it in a directory under a model root (MODELQ_MODEL_ROOTS), "
    "or, for a hub id, set MODELQ_ALLOW_HUB_MODELS=true"
)


def check(name: str, settings: Any) -> None:
    """Refuse a model name a request may not use (see the module docstring).

    Raises:
        ModelNotFound: not declared, not under a model root, and not an allowed hub id.
    """
    from modelq.models.registry import ModelRegistry

    if name not in ModelRegistry(settings).all():
        resolve(name, settings)


def resolve(name: str, settings: Any) -> str:
    """The source to load an undeclared model ``name`` from: its real path under a model root, or the hub id.

    Raises:
        ModelNotFound: neither (the same message whatever the path is, or whether it exists).
    """
    path = under_a_root(name, settings.model_root_dirs)
    if path is not None:
        return str(path)
    if settings.allow_hub_models and HUB_ID.fullmatch(name):
        return name
    from modelq.models.registry import ModelRegistry

    raise ModelNotFound(name, ModelRegistry(settings).declared_names(), hint=HINT)


def under_a_root(name: str, roots: list[Path]) -> Path | None:
    """The existing directory ``name`` names under one of ``roots`` (absolute, or relative to a root), else None."""
    if not name or "\x00" in name:
        return None
    given = Path(os.path.expanduser(name))
    for root in roots:
        try:
            real_root = root.resolve()
            real = (given if given.is_absolute() else root / given).resolve()
            if real != real_root and real.is_relative_to(real_root) and real.is_dir():
                return real
        except (OSError, RuntimeError):  # a link loop, a name too long, no permission
            continue
    return None
