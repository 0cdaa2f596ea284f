"""The API's settings, read from ``STREAMFORGE_*`` environment variables.

>>> ApiSettings(api_jwt_secret="s3cret").raw_topic
'streamforge.raw'
"""

from __future__ import annotations

from pydantic import Field

from schemas.settings import Settings


class ApiSettings(Settings):
    """Connection :class:`schemas.settings.Settings` plus what only the API needs.

    Every field is read from ``STREAMFORGE_`` + its name in upper case, e.g.
    ``STREAMFORGE_API_JWT_SECRET``.
    """

    api_jwt_secret: str | None = Field(
        None, description="HS256 secret of bearer tokens; unset = only API keys are accepted."
    )
    api_db_role: str = Field(
        "streamforge_api", description="Role every request transaction runs as (RLS applies)."
    )
    api_pool_min: int = Field(2, ge=1, description="Database connections kept open.")
    api_pool_max: int = Field(10, ge=1, description="Most database connections at once.")
    api_key_cache_s: float = Field(
        30.0, ge=0.0, description="How long a checked API key is trusted without the database."
    )
    api_kafka_timeout_s: float = Field(
        10.0, gt=0.0, description="How long start-up and /readyz wait for Kafka metadata."
    )
    api_kafka_linger_ms: int = Field(
        2,
        ge=0,
        le=1000,
        description="How long the producer gathers messages into one request to Kafka; more "
        "means fewer, larger requests (less CPU per reading) and that much more latency.",
    )
    api_migrate: bool = Field(True, description="Apply pending migrations on start.")
    raw_topic: str = Field("streamforge.raw", description="Kafka topic of HTTP-ingested readings.")
    dead_letters_topic: str = Field(
        "streamforge.dead_letters", description="Kafka topic of items POST /ingest rejected."
    )
    alarms_topic: str = Field("streamforge.alarms", description="Kafka topic of alarm transitions.")
    alarm_actions_topic: str = Field(
        "streamforge.alarm_actions",
        description="Kafka topic of operators' acknowledgements and clears, which flows follow "
        "(the pipeline config's operator_actions.topic).",
    )
    api_manual_clear_rules: list[str] = Field(
        default_factory=list,
        description="Threshold rules operators may clear, beyond those with manual_clear: true "
        "in the pipeline config.",
    )
    api_max_shelve_minutes: float = Field(
        480.0, gt=0, description="The longest an operator may shelve an alarm, in minutes."
    )
    api_supervise_flows: bool = Field(
        True, description="Run the flow supervisor in this process (one per database wins)."
    )
    api_flows_outlive_api: bool = Field(
        True,
        description="Flow processes keep running when the API stops; the next supervisor "
        "re-attaches to them (false: they stop with the API and are started again, resuming "
        "from their recovery store).",
    )
    api_flows_dir: str = Field(
        "/tmp/streamforge-flows", description="Where flow configs and recovery stores are written."
    )
