"""Every connector folder documents its configuration, and its sample is a valid pipeline config.

A folder ``connectors/<name>/`` with config modules (``config.py`` or
``*_config.py``) must have a ``README.md`` naming every field of every
pydantic model defined in those modules as ``field_name`` in backticks.
Folders are discovered, not listed, so a new connector is checked as soon
as it has a config module.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel

from flows.config import load_pipeline_config

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"
CONFIG_MODULES = sorted([*CONNECTORS.glob("*/config.py"), *CONNECTORS.glob("*/*_config.py")])
CONFIG_FOLDERS = sorted({p.parent for p in CONFIG_MODULES})
SAMPLES = sorted(CONNECTORS.glob("*/sample.yaml"))


def config_models(folder: Path) -> list[type[BaseModel]]:
    """The pydantic models defined in the folder's config modules (not imported ones)."""
    models = []
    for path in CONFIG_MODULES:
        if path.parent != folder:
            continue
        module = importlib.import_module(f"connectors.{folder.name}.{path.stem}")
        models += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseModel) and cls.__module__ == module.__name__
        ]
    return models


def test_connector_folders_are_found() -> None:
    assert {"kafka", "mqtt", "timescale"} <= {p.name for p in CONFIG_FOLDERS}


@pytest.mark.parametrize("folder", CONFIG_FOLDERS, ids=lambda p: p.name)
def test_connector_has_a_readme(folder: Path) -> None:
    assert (folder / "README.md").is_file(), f"{folder / 'README.md'} is missing"


@pytest.mark.parametrize("folder", CONFIG_FOLDERS, ids=lambda p: p.name)
def test_readme_names_every_config_field(folder: Path) -> None:
    readme = folder / "README.md"
    if not readme.is_file():
        pytest.fail(f"{readme} is missing")
    text = readme.read_text()
    missing = sorted(
        f"{model.__name__}.{field}"
        for model in config_models(folder)
        for field in model.model_fields
        if not field.startswith("_") and f"`{field}`" not in text
    )
    assert not missing, f"{readme} does not name these config fields in backticks: {missing}"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.parent.name)
def test_sample_is_a_valid_pipeline_config(sample: Path) -> None:
    load_pipeline_config(sample, env={})
