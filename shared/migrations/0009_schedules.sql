-- Schedules: a cron expression in a time zone that fires an export per
-- slot. `next_slot` is the first slot not yet decided; every slot up to it
-- has exactly one row in `schedule_firings` (primary key), written in the
-- same transaction as the export it started, so a scheduler that dies
-- mid-firing leaves neither.
CREATE TABLE schedules (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    cron text NOT NULL,
    time_zone text NOT NULL,
    spec jsonb NOT NULL,
    overlap text NOT NULL,
    catch_up text NOT NULL,
    catch_up_window_s bigint NOT NULL CHECK (catch_up_window_s > 0),
    pause_after_failures int NOT NULL CHECK (pause_after_failures >= 0),
    paused boolean NOT NULL DEFAULT false,
    paused_reason text,
    consecutive_failures int NOT NULL DEFAULT 0,
    missed_slots bigint NOT NULL DEFAULT 0,
    next_slot timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX schedules_due ON schedules (next_slot) WHERE NOT paused;

-- One row per slot fired: `started` (an export), `queued` (waits for the
-- running one) or `skipped` (overlap). Slots the catch-up policy let go
-- are counted in `schedules.missed_slots`. A run-now is a row keyed by the
-- request time with `manual`. `settled` is set once a started run's
-- outcome has been counted toward pausing.
CREATE TABLE schedule_firings (
    schedule_id uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    slot timestamptz NOT NULL,
    outcome text NOT NULL,
    export_id uuid,
    fired_by text NOT NULL,
    manual boolean NOT NULL DEFAULT false,
    fired_at timestamptz NOT NULL DEFAULT now(),
    settled boolean NOT NULL DEFAULT false,
    PRIMARY KEY (schedule_id, slot)
);
CREATE INDEX schedule_firings_open ON schedule_firings (schedule_id)
    WHERE outcome IN ('started', 'queued') AND NOT settled;
