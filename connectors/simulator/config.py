"""Configuration of the built-in plant simulator source: plant size, pace, replay and anomalies.

>>> config = SimulatorSourceConfig(devices=3, metrics=4, start="2026-01-01T00:00:00Z")
>>> config.replay_start().isoformat(), config.rate, config.limit
('2026-01-01T00:00:00+00:00', 50.0, None)
>>> SimulatorSourceConfig(devices=0)
Traceback (most recent call last):
    ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for SimulatorSourceConfig
devices
  Input should be greater than or equal to 1 ...
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class SimulatorSourceConfig(BaseModel):
    """A seeded, deterministic plant of ``devices`` x ``metrics`` time series.

    ``rate`` is readings per second over the whole plant; ``0`` means as fast
    as possible. With ``start`` set, event timestamps are replayed from that
    instant (``interval_s`` apart per series) instead of following the clock.
    ``limit`` stops the source after that many readings (``None``: forever).
    With ``anomalies`` on, numeric series get rare injected anomalies
    (spikes, level shifts, drifts, stuck values), ``anomaly_rate`` of them
    per reading of a series on average. ``overheats_per_hour`` is how often
    (event time) a device overheats, which drives the default
    ``high_temperature`` alarm rule. See ``connectors/simulator/source.py``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["simulator"] = "simulator"
    name: str = "simulator"
    seed: int = 42
    devices: int = Field(10, ge=1, le=1_000_000)
    metrics: int = Field(5, ge=1, le=100)
    rate: float = Field(50.0, ge=0.0, description="readings/s for the whole plant; 0 = unpaced")
    interval_s: float = Field(1.0, gt=0.0, description="event-time step between a series' values")
    start: AwareDatetime | None = None
    limit: int | None = Field(None, ge=0)
    anomalies: bool = True
    anomaly_rate: float = Field(
        3e-4,
        ge=0.0,
        le=1e-3,
        description="injected anomalies per reading of each numeric series (at most 1 in 1000)",
    )
    overheats_per_hour: float = Field(
        3.0, ge=0.0, le=6.0, description="overheat episodes per device per hour of event time"
    )
    partitions: int = Field(1, ge=1, le=1024, description="Bytewax partitions (split devices)")
    tenant: str = "default"

    def replay_start(self) -> datetime | None:
        """The replay start time, or None for live timestamps."""
        return self.start
