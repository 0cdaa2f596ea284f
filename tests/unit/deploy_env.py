"""Which ``STREAMFORGE_*`` variables a deployment may set (docker-compose.yml, deploy/k8s/).

Two kinds: process settings, the fields of :class:`schemas.settings.Settings`
(:class:`api.settings.ApiSettings` for the API), and pipeline config
overrides, ``STREAMFORGE_PIPELINE__A__B`` (``flows/config.py``), whose path
must name a field of :class:`flows.config.PipelineConfig` through its nested
models. A misspelt name would be ignored at run time, silently: these
helpers make the structure tests say so instead.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from flows.config import ENV_PREFIX, PipelineConfig
from schemas.settings import Settings


def settings_variables(model: type[BaseModel] = Settings) -> set[str]:
    """``STREAMFORGE_`` + every field name of a settings model, upper case."""
    return {f"STREAMFORGE_{name.upper()}" for name in model.model_fields}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation allows (through Optional, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []  # a scalar, a list, a dict: no fields to go into from the environment


def pipeline_path_error(name: str, root: type[BaseModel] = PipelineConfig) -> str | None:
    """Why ``STREAMFORGE_PIPELINE__...`` names no field of the pipeline config; None if it does."""
    if not name.startswith(ENV_PREFIX):
        return f"{name} does not start with {ENV_PREFIX}"
    path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
    if not path:
        return f"{name} names no field"
    models: list[type[BaseModel]] = [root]
    for depth, part in enumerate(path):
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if not fields:
            where = ".".join(path[:depth]) or "the pipeline config"
            known = sorted({f for m in models for f in m.model_fields})
            return f"{name}: {where} has no field {part!r} (fields: {known})"
        if depth < len(path) - 1:
            models = [m for f in fields for m in _models_in(f.annotation)]
            if not models:
                return f"{name}: {'.'.join(path[: depth + 1])} has no fields to set one by one"
    return None


def unknown_variables(names: Iterable[str], model: type[BaseModel] = Settings) -> list[str]:
    """The ``STREAMFORGE_*`` names that are neither settings of ``model`` nor pipeline paths."""
    fields = settings_variables(model)
    unknown = []
    for name in sorted(names):
        if not name.startswith("STREAMFORGE_") or name in fields:
            continue
        error = pipeline_path_error(name) if name.startswith(ENV_PREFIX) else None
        if error or not name.startswith(ENV_PREFIX):
            unknown.append(error or f"{name} is not a field of {model.__name__}")
    return unknown
