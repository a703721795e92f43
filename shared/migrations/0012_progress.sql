-- Where an export's time goes (see `progress`), in microseconds: its
-- pages' time fetching, waiting for tokens, waiting to retry, waiting for
-- a worker and parked, summed over its pages by every landing, parking and
-- dead letter; and when its latest finalize began.
ALTER TABLE exports ADD COLUMN time_fetching_us bigint NOT NULL DEFAULT 0;
ALTER TABLE exports ADD COLUMN time_tokens_us bigint NOT NULL DEFAULT 0;
ALTER TABLE exports ADD COLUMN time_retrying_us bigint NOT NULL DEFAULT 0;
ALTER TABLE exports ADD COLUMN time_queued_us bigint NOT NULL DEFAULT 0;
ALTER TABLE exports ADD COLUMN time_parked_us bigint NOT NULL DEFAULT 0;
ALTER TABLE exports ADD COLUMN finalizing_since timestamptz;

-- Every statement that moves an export to `finalizing` (a last landing, a
-- replay, a resume, a retry) stamps it, without having to remember to.
CREATE FUNCTION pagefleet_stamp_finalizing() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN NEW.finalizing_since := now(); RETURN NEW; END $$;
CREATE TRIGGER exports_finalizing_since
    BEFORE UPDATE OF state ON exports
    FOR EACH ROW
    WHEN (NEW.state = 'finalizing' AND OLD.state IS DISTINCT FROM 'finalizing')
    EXECUTE FUNCTION pagefleet_stamp_finalizing();
