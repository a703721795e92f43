-- The bodies of the task messages (`model::TaskMessage` in the shared crate,
-- serde `tag = "type"`, snake_case) in one place: every statement that
-- writes an outbox row builds its body with one of these, so a field or a
-- tag is spelled once in SQL. tests/tests/messages.rs makes the store write
-- every kind of body and reads each one back as a `TaskMessage`; change
-- these (with CREATE OR REPLACE in a new migration) and the enum together.

CREATE FUNCTION pagefleet_page_message(export_id uuid, task_id uuid) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT jsonb_build_object('type', 'page', 'export_id', export_id, 'task_id', task_id) $$;

CREATE FUNCTION pagefleet_finalize_message(export_id uuid) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT jsonb_build_object('type', 'finalize', 'export_id', export_id) $$;

CREATE FUNCTION pagefleet_dead_letter_message(export_id uuid, task_id uuid, dead_letter_id uuid)
    RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT jsonb_build_object('type', 'dead_letter', 'export_id', export_id,
                                    'task_id', task_id, 'dead_letter_id', dead_letter_id) $$;
