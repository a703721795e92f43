-- Where an export's time goes, one more share: its pages' time turning
-- answers into rows and storing them (the landing), summed over pages by
-- every landing, in microseconds. The manifest's phases read it.
ALTER TABLE exports ADD COLUMN time_landing_us bigint NOT NULL DEFAULT 0;
