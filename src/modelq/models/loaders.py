"""Built-in model loaders, by name; or any ``module:function`` taking the :class:`ModelSpec`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from modelq.errors import ConfigError, MissingDependency
from modelq.models.registry import ModelSpec


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, extra) from exc


def _torch_dtype(name: str | None) -> Any:
    if name is None:
        return None
    torch = _require("torch", "embed")
    dtype = getattr(torch, name, None)
    if dtype is None:
        raise ConfigError("dtype", f"{name!r} is not a torch dtype (float32, float16, bfloat16 ...)")
    return dtype


def load_sentence_transformer(spec: ModelSpec) -> Any:
    st = _require("sentence_transformers", "embed")
    kwargs: dict[str, Any] = {"device": spec.device, **spec.options}
    if spec.dtype:
        kwargs.setdefault("model_kwargs", {})["torch_dtype"] = _torch_dtype(spec.dtype)
    return st.SentenceTransformer(spec.source or spec.name, **kwargs)


def load_cross_encoder(spec: ModelSpec) -> Any:
    st = _require("sentence_transformers", "embed")
    return st.CrossEncoder(spec.source or spec.name, device=spec.device, **spec.options)


def load_diffusers(spec: ModelSpec) -> Any:
    diffusers = _require("diffusers", "image")
    class_name = spec.options.get("pipeline", "AutoPipelineForText2Image")
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None:
        raise ConfigError("pipeline", f"diffusers has no pipeline class {class_name!r}")
    kwargs = {k: v for k, v in spec.options.items() if k != "pipeline"}
    if spec.dtype:
        kwargs["torch_dtype"] = _torch_dtype(spec.dtype)
    return pipeline_class.from_pretrained(spec.source or spec.name, **kwargs).to(spec.device)


def load_transformers(spec: ModelSpec) -> Any:
    transformers = _require("transformers", "embed")
    class_name = spec.options.get("model_class", "AutoModel")
    model_class = getattr(transformers, class_name)
    kwargs = {k: v for k, v in spec.options.items() if k != "model_class"}
    if spec.dtype:
        kwargs["torch_dtype"] = _torch_dtype(spec.dtype)
    return model_class.from_pretrained(spec.source or spec.name, **kwargs).to(spec.device)


BUILTIN_LOADERS: dict[str, Callable[[ModelSpec], Any]] = {
    "sentence-transformers": load_sentence_transformer,
    "cross-encoder": load_cross_encoder,
    "diffusers": load_diffusers,
    "transformers": load_transformers,
}


def resolve_loader(loader: str | Callable[[ModelSpec], Any]) -> Callable[[ModelSpec], Any]:
    """The function behind a loader name, ``module:function`` path, or the function itself."""
    if callable(loader):
        return loader
    if loader in BUILTIN_LOADERS:
        return BUILTIN_LOADERS[loader]
    module, sep, attr = loader.partition(":")
    if not sep:
        raise ConfigError(
            "loader", f"{loader!r} is neither a built-in loader ({', '.join(BUILTIN_LOADERS)}) nor 'module:function'"
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("loader", f"cannot import {loader!r}: {exc}") from exc
