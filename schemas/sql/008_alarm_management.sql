-- Alarm management (ISA-18.2): an alarm's priority, until when an operator
-- shelved it, and whether it stands for a chattering stream of raises.
ALTER TABLE alarm_transitions ADD COLUMN IF NOT EXISTS priority text NOT NULL DEFAULT 'medium';
ALTER TABLE alarm_transitions ADD COLUMN IF NOT EXISTS shelved_until timestamptz;
ALTER TABLE alarm_transitions ADD COLUMN IF NOT EXISTS chattering boolean NOT NULL DEFAULT false;
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS priority text NOT NULL DEFAULT 'medium';
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS shelved_until timestamptz;
ALTER TABLE alarms ADD COLUMN IF NOT EXISTS chattering boolean NOT NULL DEFAULT false;
