"""The configuration snippets in the README are valid pipeline configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from flows.config import PipelineConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SNIPPETS = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def test_readme_has_yaml_snippets() -> None:
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_readme_snippet_is_a_valid_pipeline_config(snippet: str) -> None:
    PipelineConfig.model_validate(yaml.safe_load(snippet))
