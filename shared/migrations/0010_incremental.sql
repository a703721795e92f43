-- Incremental exports. A landed page records the largest cursor value its
-- records carried; a schedule keeps its watermark (cursor units), moved
-- only when a run is published; each firing keeps the window it pinned.
ALTER TABLE page_tasks ADD COLUMN max_cursor bigint;
ALTER TABLE schedules ADD COLUMN watermark bigint;
ALTER TABLE schedule_firings ADD COLUMN window_from bigint, ADD COLUMN window_to bigint;
-- What an idempotency key is compared with: the spec as submitted, before
-- its window was pinned and its output names filled (a retry minutes
-- later pins another window, and is still the same submission).
ALTER TABLE exports ADD COLUMN request_hash text;
-- Backfills: a window too big for the source is split into two new
-- partitions; the split one is kept (its first page landed, its rows
-- staged nothing) and recorded, and counts toward no reconciliation.
ALTER TABLE partitions ADD COLUMN split boolean NOT NULL DEFAULT false;
CREATE TABLE partition_splits (
    export_id     uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    partition_no  int NOT NULL,
    params        jsonb NOT NULL,
    into_partitions int[] NOT NULL,
    reason        text NOT NULL,
    split_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (export_id, partition_no)
);
