"""Write (or check) the JSON Schema of every record and of the pipeline config.

    python -m flows.jsonschema           # regenerate schemas/json/*.json
    python -m flows.jsonschema --check   # exit 1 when a file is stale

Consumers of the Kafka topics validate against these files; the unit tests
fail when a model changed and the files were not regenerated. One file per
record type, plus the pipeline config, written with sorted keys:

>>> schemas = expected_schemas()
>>> sorted(schemas)[:4], "pipeline_config.json" in schemas
(['alarm.json', 'anomaly_score.json', 'dead_letter.json', 'event.json'], True)
>>> schemas["reading.json"]["required"]
['device', 'metric', 'ts', 'value']
>>> print(render({"b": 1, "a": True}), end="")
{
  "a": true,
  "b": 1
}
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from flows.config import PipelineConfig
from schemas.models import RECORD_TYPES, SCHEMA_VERSION, adapter

JSON_DIR = Path(str(files("schemas").joinpath("json")))  # the JSON Schemas stay with the schemas


def expected_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every record type and the pipeline config."""
    schemas: dict[str, dict[str, Any]] = {}
    for name, record_type in RECORD_TYPES.items():
        schema = adapter(record_type).json_schema()
        schema["$comment"] = f"StreamForge record schema version {SCHEMA_VERSION}"
        schemas[f"{name}.json"] = schema
    schemas["pipeline_config.json"] = PipelineConfig.model_json_schema()
    return schemas


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale_files() -> list[str]:
    """Names of schema files that are missing, outdated or no longer produced."""
    expected = expected_schemas()
    stale = [
        name
        for name, schema in expected.items()
        if not (JSON_DIR / name).exists() or (JSON_DIR / name).read_text() != render(schema)
    ]
    stale += [p.name for p in JSON_DIR.glob("*.json") if p.name not in expected]
    return sorted(stale)


def write_all() -> list[str]:
    """Rewrite every schema file; remove files of models that no longer exist."""
    JSON_DIR.mkdir(exist_ok=True)
    expected = expected_schemas()
    for name, schema in expected.items():
        (JSON_DIR / name).write_text(render(schema))
    for path in JSON_DIR.glob("*.json"):
        if path.name not in expected:
            path.unlink()
    return sorted(expected)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale JSON schemas (run `make schemas`): " + ", ".join(stale), file=sys.stderr)
            return 1
        print("JSON schemas are up to date")
        return 0
    for name in write_all():
        print(f"wrote {JSON_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
