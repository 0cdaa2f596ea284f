"""Configuration of the TimescaleDB / PostgreSQL sink (``connectors/timescale/sink.py``).

A pipeline config's sink entry, with every option at its default::

    sinks:
      - type: timescale
        kinds: [telemetry, event, alarm, log, rollup, anomaly_score, dead_letter]
        database_url: null          # null = STREAMFORGE_DATABASE_URL
        batch_rows: 50000           # rows per transaction (one COPY per table)
        buffer_rows: 100000         # records queued for the writer thread before the flow waits
        direct_copy: true           # COPY straight in; staging only on a known key
        apply_migrations_on_start: true
        retry_initial: 0.5s         # first wait after a failed write ...
        retry_max: 30s              # ... doubling up to this
        give_up_after: null         # null = retry forever (backpressure)
        connect_timeout: 5s
        retention_interval: 1h      # how often the retention job runs
        retention_days:             # null = keep forever
          readings: 30
          anomaly_scores: 30
          rollups: 365
          events: 90
          alarm_transitions: 365
          alarms: 365               # cleared alarms only
          logs: 30
          dead_letters: 30
        compress_after_days: null   # full edition only; needs RLS off (see below)

>>> TimescaleSinkConfig(retry_max="1m").retry_max
60.0
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.durations import parse_duration
from schemas.kinds import ALL_OUTPUT_KINDS, OutputKind


class RetentionDays(BaseModel):
    """Days each table keeps; ``None`` keeps rows forever.

    Rows older than this (by their time column: ``ts``, ``window_start`` for
    rollups, ``received_at`` for dead letters) are removed by whole chunks on
    TimescaleDB, by ``DELETE`` on plain PostgreSQL. For ``alarms`` (current
    state) only cleared alarms are removed.
    """

    model_config = ConfigDict(extra="forbid")

    readings: int | None = Field(30, ge=1)
    anomaly_scores: int | None = Field(30, ge=1)
    rollups: int | None = Field(365, ge=1)
    events: int | None = Field(90, ge=1)
    alarm_transitions: int | None = Field(365, ge=1)
    alarms: int | None = Field(365, ge=1)
    logs: int | None = Field(30, ge=1)
    dead_letters: int | None = Field(30, ge=1)

    def by_table(self) -> dict[str, int | None]:
        """Days per table name."""
        return dict(self.model_dump())


class TimescaleSinkConfig(BaseModel):
    """Writes outputs to TimescaleDB (or plain PostgreSQL) tables, idempotently.

    Each ``write_batch`` is committed before it returns, in transactions of
    at most ``batch_rows`` rows. While the database is unreachable the write
    is retried with exponential backoff from ``retry_initial`` doubling up to
    ``retry_max`` seconds; the flow waits meanwhile (backpressure). With
    ``give_up_after`` set, the sink raises after retrying that long, which
    stops the dataflow (Bytewax recovery then resumes from the last snapshot).
    Durations accept seconds or strings like ``"500ms"``, ``"30s"``, ``"1h"``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["timescale"] = "timescale"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUT_KINDS))
    database_url: str | None = Field(
        None, description="PostgreSQL URL; None uses Settings().database_url"
    )
    batch_rows: int = Field(50_000, ge=1, description="rows per transaction")
    buffer_rows: int = Field(
        100_000,
        ge=1,
        description="records queued for the writer thread; when full, the flow waits",
    )
    direct_copy: bool = Field(
        True,
        description="COPY straight into tables that ignore known keys, staging + ON CONFLICT "
        "only when a key is already stored (twice as fast; same result)",
    )
    apply_migrations_on_start: bool = True
    retry_initial: float = Field(0.5, gt=0.0, description="seconds before the first retry")
    retry_max: float = Field(30.0, gt=0.0, description="cap of the exponential backoff")
    give_up_after: float | None = Field(
        None, gt=0.0, description="raise after retrying this long; None = retry forever"
    )
    connect_timeout: float = Field(5.0, gt=0.0)
    retention_interval: float = Field(3600.0, gt=0.0, description="seconds between runs")
    retention_days: RetentionDays = Field(default_factory=RetentionDays)
    compress_after_days: int | None = Field(
        None,
        ge=1,
        description="compress chunks older than this; full TimescaleDB edition only, and "
        "TimescaleDB refuses compression on tables with row-level security (003_rls.sql)",
    )

    @field_validator(
        "retry_initial",
        "retry_max",
        "give_up_after",
        "connect_timeout",
        "retention_interval",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return value if value is None else parse_duration(value)


class DeviceRegistryConfig(BaseModel):
    """Where a flow reads the device registry (``schemas/devices.py``), and how often.

    ``source: auto`` reads the ``devices`` and ``device_policies`` tables of
    the flow's TimescaleDB sink when it has one, and runs without a registry
    otherwise (every device admitted, rules select by globs only);
    ``timescale`` always reads them (``database_url``, else the sink's, else
    ``STREAMFORGE_DATABASE_URL``); ``none`` never does.

    >>> DeviceRegistryConfig(refresh="2s").refresh
    2.0
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["auto", "timescale", "none"] = "auto"
    database_url: str | None = Field(
        None, description="PostgreSQL URL; None: the TimescaleDB sink's, else the setting"
    )
    refresh: float = Field(
        5.0, gt=0.0, description="seconds between two looks for changed registry rows"
    )
    unregistered: Literal["accept", "reject"] = Field(
        "accept",
        description="readings of unregistered devices, for tenants without a policy of "
        "their own (PUT /device-policy): accept (listed as discovered) or reject "
        "(dead letters)",
    )
    start_timeout: float = Field(
        10.0,
        ge=0.0,
        description="seconds the flow waits for the first load at start; after that it "
        "starts anyway, admitting every device until the registry is read",
    )

    @field_validator("refresh", "start_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)
