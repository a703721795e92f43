-- Claims that ended without an outcome: the worker holding the task was
-- lost (killed, out of memory) and its lease ran out. Counted when another
-- worker takes the task over or the reconciler re-queues it, so a page that
-- kills every worker that fetches it is dead-lettered after a few, instead
-- of taking the fleet down one worker at a time forever.
ALTER TABLE page_tasks ADD COLUMN lost_claims int NOT NULL DEFAULT 0;
