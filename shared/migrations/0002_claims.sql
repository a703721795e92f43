-- Who holds an in-flight task, and since when: lets the reconciler and
-- operators tell a live lease from a dead worker's.
ALTER TABLE page_tasks ADD COLUMN claimed_by text;
ALTER TABLE page_tasks ADD COLUMN claimed_at timestamptz;
CREATE INDEX page_tasks_in_flight ON page_tasks (lease_until) WHERE state = 'in_flight';
CREATE INDEX exports_finalizing ON exports (updated_at) WHERE state = 'finalizing';
