"""Record identities and the bounded de-duplication memory of connectors.kafka.dedupe."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.kafka.dedupe import IDENTITY_FIELDS, Deduplicator, record_identity
from connectors.kafka.producer import KIND_BY_TYPE
from schemas.models import to_dict
from tests.support.kafka_tools import one_of_each


def test_every_output_kind_has_an_identity_made_of_its_fields() -> None:
    assert set(IDENTITY_FIELDS) == set(KIND_BY_TYPE.values())
    for kind, record in one_of_each():
        fields = to_dict(record)
        assert set(IDENTITY_FIELDS[kind]) <= set(fields), kind
        assert record_identity(kind, fields) == record_identity(kind, dict(fields))


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    seen = Deduplicator(capacity=2)
    records = [{"id": "a", "seq": n} for n in range(3)]
    assert [seen.is_new("alarm", r) for r in records] == [True, True, True]
    assert seen.is_new("alarm", records[2]) is False
    assert seen.is_new("alarm", records[0]) is True  # forgotten: beyond the capacity


def test_long_text_is_hashed_and_unknown_kinds_refused() -> None:
    dead = {"origin": "t/0/1", "step": "decode", "reason": "bad", "payload": "x" * 10_000}
    identity = record_identity("dead_letter", dead)
    assert len(identity[-1]) == 64 and identity != record_identity(
        "dead_letter", {**dead, "payload": "y" * 10_000}
    )
    with pytest.raises(ValueError, match="no identity"):
        record_identity("bogus", {"ts": datetime.now(UTC)})
