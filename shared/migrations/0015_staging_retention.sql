-- When an ended export's staged rows were removed, once the fleet's
-- staging retention had passed since it ended; NULL while they are kept.
ALTER TABLE exports ADD COLUMN staging_removed_at timestamptz;
-- The retention pass looks for ended exports whose staging is kept.
CREATE INDEX exports_staging_kept ON exports (finished_at)
    WHERE staging_removed_at IS NULL AND finished_at IS NOT NULL;
