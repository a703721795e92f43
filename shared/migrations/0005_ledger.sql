-- The ledger: what the source said it holds, next to what its pages
-- delivered, checked before a CSV is published (see DESIGN.md, "Finalize").

-- `unverified`: every page landed, but the counts disagree with what the
-- source stated; the CSV is held beside the final path.
ALTER TABLE exports DROP CONSTRAINT exports_state_check;
ALTER TABLE exports ADD CONSTRAINT exports_state_check CHECK (state IN
    ('planning','running','blocked','finalizing','completed','unverified','failed','cancelled'));
-- What the finalizer checked, as the manifest's `verification`.
ALTER TABLE exports ADD COLUMN verification jsonb;

-- Records each landed page delivered (set when it is marked done), so a
-- partition's deliveries are a sum over its tasks: no shared row to lock.
ALTER TABLE page_tasks ADD COLUMN records int;

-- Every count a page stated: `counts` is 'records' or 'pages', `origin`
-- where it was stated ('header X-Total-Count', 'body meta.total').
CREATE TABLE stated_counts (
    export_id     uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    partition_no  int NOT NULL,
    page_no       bigint NOT NULL,
    counts        text NOT NULL CHECK (counts IN ('records','pages')),
    origin        text NOT NULL,
    value         bigint NOT NULL,
    PRIMARY KEY (export_id, partition_no, counts, origin, page_no)
);

-- What a partition's chain has followed (the next positions) and served
-- (a digest of each page's keys): seeing either again is a loop.
CREATE TABLE chain_marks (
    export_id     uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    partition_no  int NOT NULL,
    mark          text NOT NULL,
    page_no       bigint NOT NULL,
    PRIMARY KEY (export_id, partition_no, mark)
);

-- A sentinel page is the fanned-out page just past the stated end: records
-- there mean the stated count was too low.
-- The backward pass: a partition of a shifting style (offset, page number)
-- whose stated counts moved while it was read is read again, last page
-- first, one page at a time. A record can only move towards the start when
-- others are deleted, so a backward walk cannot miss one that existed
-- throughout. The pass's pages are planned whole, keyed by the page number
-- each will have; a landing of one queues the next.
ALTER TABLE page_tasks DROP CONSTRAINT page_tasks_role_check;
ALTER TABLE page_tasks ADD CONSTRAINT page_tasks_role_check
    CHECK (role IN ('chain','leaf','sentinel','backward'));
ALTER TABLE partitions ADD COLUMN backward_pass boolean NOT NULL DEFAULT false;
CREATE TABLE backward_passes (
    export_id     uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    partition_no  int NOT NULL,
    page_no       bigint NOT NULL,
    position      jsonb NOT NULL,
    PRIMARY KEY (export_id, partition_no, page_no)
);
