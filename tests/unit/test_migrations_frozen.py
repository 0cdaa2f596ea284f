"""A migration, once released, never changes: databases that applied it would refuse to start.

``connectors.timescale.migrate`` stops with an error when an applied
migration's checksum differs from the file's, so editing a released file
(even a comment) breaks every existing deployment. A new migration gets a
new file and a new line here.
"""

from __future__ import annotations

from connectors.timescale.migrate import load_migrations

RELEASED = {
    "001_core": "9ce847bd3dcadb752459895cf21b8fbe97681f9332ffde61c2c2265150f87c8f",
    "002_hypertables": "2b4c8511b44bf03b14405e6d3d58ede284577c3cde0321c8294785f3309fce34",
    "003_rls": "03e0936b10d9bd9948bf5f10b69075e946d49c450eddbeab305610aaf8943c2c",
    "004_api": "a76b59a7f91abdf4f3dc1e6fe26b909b8f7d5cf1b373acd1cdba6ccd56362a16",
    "005_api_flows": "a404ef008893055c982f142b3b3df9e8b8524e90826c3f090d6c29f7d3f5e0ca",
    "006_reading_scores": "dc83f687ffb7495bf4144452a9439b19d8b5d7d71afc39d25e059cd54dbcbf91",
    "007_dead_letter_payload_size": (
        "196337e14462b5fea7871637f34580e438df32e39fdd920060914acc1199adce"
    ),
    "008_alarm_management": "d554a9889f4adf24e0d37ced3354b0d98629b72132462e7d85a998517f26903d",
    "009_flow_config_versions": (
        "a5b1e1601d0fa347c0d2f273ac78ee22954826cff136891d125f3bbde4545cc2"
    ),
    "010_device_registry": "87dd1674031a0e8a53840fe6d4588ac5d0ebf518e237caba2bbd2889d8ae298b",
}


def test_released_migrations_are_unchanged() -> None:
    current = {m.name: m.checksum for m in load_migrations()}
    changed = sorted(name for name, checksum in RELEASED.items() if current.get(name) != checksum)
    assert not changed, f"released migrations changed or gone (add a new file instead): {changed}"


def test_every_migration_is_listed_as_released() -> None:
    unlisted = sorted({m.name for m in load_migrations()} - set(RELEASED))
    assert not unlisted, f"add the checksum of {unlisted} to RELEASED once it is released"
