"""The committed JSON Schemas match the models."""

from __future__ import annotations

import json

from flows.jsonschema import JSON_DIR, expected_schemas, stale_files


def test_committed_schemas_are_current() -> None:
    assert stale_files() == [], "run `make schemas` and commit schemas/json"


def test_every_record_has_a_schema_with_required_fields() -> None:
    reading = json.loads((JSON_DIR / "reading.json").read_text())
    assert set(reading["required"]) == {"device", "metric", "ts", "value"}
    assert reading["additionalProperties"] is False
    assert {"reading.json", "alarm.json", "dead_letter.json", "rollup.json"} <= set(
        expected_schemas()
    )
