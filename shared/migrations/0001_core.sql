-- The core tables. See DESIGN.md, "The tables".

CREATE TABLE exports (
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    idempotency_key  text,
    name             text NOT NULL,
    -- Holds secret *references* only (env var or file names).
    spec             jsonb NOT NULL,
    spec_hash        text NOT NULL,
    state            text NOT NULL CHECK (state IN
                       ('planning','running','blocked','finalizing','completed','failed','cancelled')),
    partitions       int NOT NULL,
    pages_planned    bigint NOT NULL DEFAULT 0,
    pages_landed     bigint NOT NULL DEFAULT 0,
    rows_staged      bigint NOT NULL DEFAULT 0,
    rows_replaced    bigint NOT NULL DEFAULT 0,
    requests         bigint NOT NULL DEFAULT 0,
    retries          bigint NOT NULL DEFAULT 0,
    rate_limited     bigint NOT NULL DEFAULT 0,
    duplicate_deliveries bigint NOT NULL DEFAULT 0,
    dead_letters     bigint NOT NULL DEFAULT 0,
    output_path      text,
    manifest_path    text,
    csv_rows         bigint,
    csv_bytes        bigint,
    csv_sha256       text,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);

-- A partition's checkpoint: where its chain stands. `planned_all` is true once
-- every page of the partition has a task (fan-out done, or the chain ended).
CREATE TABLE partitions (
    export_id      uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    partition_no   int NOT NULL,
    params         jsonb NOT NULL,
    checkpoint_page bigint NOT NULL DEFAULT -1,
    next_position  jsonb,
    pages_landed   bigint NOT NULL DEFAULT 0,
    planned_all    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (export_id, partition_no)
);

CREATE TABLE page_tasks (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL,
    export_id     uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    partition_no  int NOT NULL,
    page_no       bigint NOT NULL,
    position      jsonb NOT NULL,
    role          text NOT NULL CHECK (role IN ('chain','leaf')),
    state         text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued','in_flight','done','dead')),
    deliveries    int NOT NULL DEFAULT 0,
    not_before    timestamptz,
    lease_until   timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (export_id, partition_no, page_no)
);
CREATE INDEX page_tasks_export_state ON page_tasks (export_id, state);
CREATE INDEX page_tasks_open ON page_tasks (state, updated_at) WHERE state IN ('queued','in_flight');

-- Logged, not unlogged: a crash of the server must not lose fetched rows.
-- `data` is the flattened row as JSON text; text (not jsonb) keeps every
-- number's exact digits.
CREATE TABLE staged_rows (
    export_id  uuid NOT NULL,
    row_key    text COLLATE "C" NOT NULL,
    data       text NOT NULL,
    PRIMARY KEY (export_id, row_key)
);

-- The union of column names seen, for exports whose columns are inferred.
CREATE TABLE export_columns (
    export_id  uuid NOT NULL,
    name       text COLLATE "C" NOT NULL,
    PRIMARY KEY (export_id, name)
);

-- Messages to publish, written in the transaction that caused them.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    queue       text NOT NULL CHECK (queue IN ('pages','finalize','dead')),
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

CREATE TABLE dead_letters (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL,
    export_id     uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    task_id       uuid NOT NULL REFERENCES page_tasks (id) ON DELETE CASCADE,
    class         text NOT NULL,
    reason        text NOT NULL,
    last_status   int,
    body_excerpt  text,
    headers       jsonb NOT NULL DEFAULT '{}',
    attempts      jsonb NOT NULL DEFAULT '[]',
    created_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    resolution    text
);
CREATE INDEX dead_letters_open ON dead_letters (export_id) WHERE resolved_at IS NULL;
