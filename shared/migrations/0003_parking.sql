-- Parked tasks wait in Postgres for `not_before` (a delayed requeue that
-- survives restarts); their failure history survives the parking.
ALTER TABLE page_tasks ADD COLUMN failures int NOT NULL DEFAULT 0;
ALTER TABLE page_tasks ADD COLUMN first_failure_at timestamptz;
CREATE INDEX page_tasks_parked ON page_tasks (not_before) WHERE state = 'queued' AND not_before IS NOT NULL;
