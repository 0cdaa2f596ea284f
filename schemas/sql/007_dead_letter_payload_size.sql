-- A dead letter keeps at most a configured number of bytes of its payload
-- (decode.dead_letter_payload_bytes): when it was cut, these say how large
-- the original was and its SHA-256, so the original can still be matched.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_size bigint;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_sha256 text;
