-- Time-partitioned tables become TimescaleDB hypertables when the extension
-- is installed in this database (either edition); on plain PostgreSQL they
-- stay ordinary tables and retention deletes by time instead of dropping
-- chunks (connectors/timescale_retention.py).
--
-- The edition seen here decides once: installing the extension later does
-- not convert existing tables (run create_hypertable(..., migrate_data =>
-- true) by hand). alarms (current state) and alarm_transitions (keyed by
-- alarm_id, seq) are small and stay ordinary tables.
-- Our own unique indexes already lead with the keys the API queries, so
-- TimescaleDB's default (ts DESC) index would only slow writes down.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb is not installed: time-partitioned tables stay plain tables';
        RETURN;
    END IF;
    PERFORM create_hypertable('readings', 'ts',
        chunk_time_interval => INTERVAL '1 day',
        create_default_indexes => false, if_not_exists => true);
    PERFORM create_hypertable('anomaly_scores', 'ts',
        chunk_time_interval => INTERVAL '1 day',
        create_default_indexes => false, if_not_exists => true);
    PERFORM create_hypertable('rollups', 'window_start',
        chunk_time_interval => INTERVAL '7 days',
        create_default_indexes => false, if_not_exists => true);
    PERFORM create_hypertable('events', 'ts',
        chunk_time_interval => INTERVAL '7 days',
        create_default_indexes => false, if_not_exists => true);
    PERFORM create_hypertable('logs', 'ts',
        chunk_time_interval => INTERVAL '7 days',
        create_default_indexes => false, if_not_exists => true);
    PERFORM create_hypertable('dead_letters', 'received_at',
        chunk_time_interval => INTERVAL '7 days',
        create_default_indexes => false, if_not_exists => true);
END
$$;
