-- The anomaly score of each telemetry reading, on the reading's own row.
--
-- The flow scores every numeric telemetry value (flows/series.py) and the
-- score travels with the reading: one Kafka record and one row per value
-- instead of two, which the end-to-end benchmark measured as the largest
-- single cost of a reading. NULL for values that are not scored (text and
-- boolean values, bad quality, detection off). The separate anomaly_scores
-- table stays for flows that set anomaly.emit_scores (detector name and
-- the anomalous flag per value).
ALTER TABLE readings ADD COLUMN IF NOT EXISTS score double precision;
