-- The operator's tools (see DESIGN.md, "Operating"): dead letters a
-- console can filter and group, attempts kept across claims, edited
-- replays, discarded pages and accepted gaps, paused exports, and the
-- audit log of every operator action.

-- `paused`: no page is fetched until it is resumed. `completed_with_gaps`:
-- published with pages an operator discarded, listed in the manifest.
ALTER TABLE exports DROP CONSTRAINT exports_state_check;
ALTER TABLE exports ADD CONSTRAINT exports_state_check CHECK (state IN
    ('planning','running','blocked','paused','finalizing','completed',
     'completed_with_gaps','unverified','failed','cancelled'));

-- `discarded`: dead, and given up by an operator (with a reason).
ALTER TABLE page_tasks DROP CONSTRAINT page_tasks_state_check;
ALTER TABLE page_tasks ADD CONSTRAINT page_tasks_state_check
    CHECK (state IN ('queued','in_flight','done','dead','discarded'));
-- An operator accepted that the export publishes without this discarded
-- page (an acceptance covers the pages discarded when it was given, not
-- those discarded later).
ALTER TABLE page_tasks ADD COLUMN gap_accepted boolean NOT NULL DEFAULT false;
-- Every failed attempt, appended as it happens (bounded by
-- pagefleet_append_attempts), so a task's history survives parking,
-- redelivery and a lost worker.
ALTER TABLE page_tasks ADD COLUMN attempt_log jsonb NOT NULL DEFAULT '[]';
-- What an edited replay changed (`page_size`, `secret`), applied on top of
-- the export's spec when the task is fetched.
ALTER TABLE page_tasks ADD COLUMN overrides jsonb;

ALTER TABLE dead_letters ADD COLUMN source_key text;
ALTER TABLE dead_letters ADD COLUMN fingerprint text;
-- The request as sent: URL without secrets, header names (values of
-- secret ones redacted), method.
ALTER TABLE dead_letters ADD COLUMN request jsonb NOT NULL DEFAULT '{}';
ALTER TABLE dead_letters ADD COLUMN resolved_by text;
ALTER TABLE dead_letters ADD COLUMN resolution_reason text;
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_id, id DESC);

CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    dry_run     boolean NOT NULL DEFAULT false,
    -- What the action was aimed at: ids, the filter, the edits.
    target      jsonb NOT NULL DEFAULT '{}',
    -- The dry run this action followed, when it followed one.
    follows     uuid REFERENCES audit_log (id),
    outcome     jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id DESC);

-- A task's attempt history: the first 10 and the latest 40.
CREATE FUNCTION pagefleet_append_attempts(log jsonb, more jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN jsonb_array_length(log || more) <= 50 THEN log || more
           ELSE (SELECT jsonb_agg(e ORDER BY i)
                   FROM jsonb_array_elements(log || more) WITH ORDINALITY AS a(e, i)
                  WHERE i <= 10 OR i > jsonb_array_length(log || more) - 40)
           END $$;

-- An export may finish: every page it discarded is an accepted gap.
CREATE FUNCTION pagefleet_gaps_settled(export uuid) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT NOT EXISTS (SELECT 1 FROM page_tasks t
                        WHERE t.export_id = export AND t.state = 'discarded'
                          AND NOT t.gap_accepted) $$;
