//! Property tests in `make test`: the fuzz targets' generators and oracles
//! at small case counts, so they take seconds. The round trips through the
//! CSV writer and the `csv` crate's reader are the properties this file is
//! for; every other target is held to "no input makes it panic".

use pagefleet_fuzz::runner::{Budget, Report};
use pagefleet_fuzz::targets::TARGETS;

/// A fixed seed: a failure here fails every run until it is fixed, and
/// `pagefleet-fuzz` explores other seeds.
const SEED: u64 = 10;

fn run(name: &str, cases: u32) -> Report {
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    (target.run)(&Budget::Cases(cases, SEED))
}

fn assert_no_crash(name: &str, cases: u32) {
    let report = run(name, cases);
    assert!(
        report.executions >= u64::from(cases),
        "{name} ran {} cases",
        report.executions
    );
    if let Some(crash) = report.crashes.first() {
        panic!("{name}: {}\nminimal input: {}", crash.message, crash.input);
    }
}

/// Any record (cells of any text: commas, quotes, CR/LF, NUL, unicode,
/// a leading `=`, `+`, `-`, `@`) that the writer writes, the `csv` crate
/// reads back with identical fields, up to exactly the formula guard's
/// leading `'` (and the strict checker accepts the file, with the
/// writer's digest).
#[test]
fn any_record_round_trips_through_the_writer_and_the_csv_crate() {
    assert_no_crash("csv_writer", 512);
}

/// A JSON record flattened, written and read back: the columns say what
/// the record said (unflattened, it is the record again) and the fields
/// read back are the cells written.
#[test]
fn a_record_flattened_written_and_read_back_is_the_record() {
    assert_no_crash("flatten", 256);
}

#[test]
fn the_strict_checker_reads_alike_however_its_reads_are_cut() {
    assert_no_crash("csv_check", 256);
}

#[test]
fn staging_keys_are_unique_and_sort_as_their_integers() {
    assert_no_crash("row_key", 256);
}

macro_rules! never_panics {
    ($($test:ident => $target:literal),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_no_crash($target, 64);
            }
        )+
    };
}

never_panics! {
    the_toml_spec_parser_never_panics => "spec_toml",
    the_json_spec_parser_never_panics => "spec_json",
    the_offset_style_never_panics => "page_offset",
    the_page_number_style_never_panics => "page_number",
    the_cursor_style_never_panics => "page_cursor",
    the_last_record_style_never_panics => "page_last_record",
    the_next_url_style_never_panics => "page_next_url",
    the_link_header_style_never_panics => "page_link_header",
    body_paths_never_panic => "body_paths",
    the_stated_totals_never_panic => "totals",
    retry_after_and_backoff_never_panic => "retry_after",
    rate_limit_headers_never_panic => "ratelimit_headers",
    redaction_never_panics_nor_keeps_a_known_secret => "redact",
}

#[test]
fn every_target_is_tested_here() {
    let here = include_str!("properties.rs");
    for target in TARGETS {
        assert!(
            here.contains(&format!("\"{}\"", target.name)),
            "{} has no test",
            target.name
        );
    }
}
