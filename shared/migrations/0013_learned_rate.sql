-- The rate an export's source key ran at, as the fleet learned it (see
-- `adaptive_rate`): written by its latest landing, parking or dead letter,
-- shown by `status` beside the rate the spec states (if any).
ALTER TABLE exports ADD COLUMN learned_rate double precision;
