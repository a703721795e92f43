//! The fleet's ceilings: how big a page, a record and an export's column
//! set may be, whatever a spec says, so no source can take a worker over
//! its memory limit (and, OOM-killed, crash-loop the fleet on one page).
//!
//! The operator sets them (`[limits]` in the config file, or
//! `PAGEFLEET_MAX_*` variables), never the spec: a spec may only lower
//! the body cap (`source.max_body_bytes`; the fleet uses the smaller).
//!
//! What bounds what, on a worker:
//! - the body itself: `max_body_bytes`, checked while it streams in;
//! - the parsed tree (`serde_json::Value` with `arbitrary_precision` costs
//!   about 100 bytes per JSON value however short its text, so a 5.5 MB
//!   body of 400,000 tiny records grew a worker to 833 MB): `max_json_values`
//!   and `max_json_depth`, counted by [`scan`] over the raw bytes, without
//!   allocating, *before* `serde_json` builds anything;
//! - the rows built from the records: `max_records_per_page` and
//!   `max_record_bytes` (a record's staged row, as JSON text);
//! - the export's column set, which every row of the CSV carries:
//!   `max_columns` and `max_column_name_bytes`.
//!
//! A page over any ceiling is dead-lettered at once (class `over_limit`):
//! the same page would break it again, so it is never retried.
//!
//! The defaults, measured with `shared/examples/page_memory.rs` (peak RSS
//! from `/usr/bin/time -v`): pages that pass every ceiling, pre-scanned,
//! parsed, flattened and serialized to staged rows by 8 threads at once (a
//! worker's default concurrency), all held until the last is done.
//! serde_json's allocations are the same in a debug and a release build.
//!
//! | pages at once | page | peak RSS |
//! |---|---|---|
//! | 1 | 2,000 records of small nested objects, 48,001 values, 311 KB | 24 MB |
//! | 8 | the same | 170 MB |
//! | 8 | 500 records, 49,001 values, 336 KB | 166 MB |
//! | 8 | 10,000 records, 40,001 values, 249 KB | 137 MB |
//! | 8 | 63 records of 64 KB strings, 4.1 MB (the body cap) | 107 MB |
//! | 8 | 10,000 records, 98,001 values (twice the value ceiling) | 330 MB |
//!
//! Small objects are the costly shape (~700 bytes each, a B-tree node),
//! which is why values are counted, not only bytes: the 5.5 MB body of
//! 400,000 records above is 1,200,001 values. A worker's Kubernetes limit
//! (deploy/) is 512 MiB: at the defaults a full worker's pages stay near a
//! third of it, leaving room for the landing's copy of the staged rows and
//! the process itself. Raising a ceiling is safe with a lower
//! `--concurrency` in proportion.

use serde::Deserialize;

/// The fleet's ceilings; see the module doc. Every field is a hard
/// maximum, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetLimits {
    /// Bytes of one response body.
    pub max_body_bytes: u64,
    /// JSON values (objects, arrays, strings, numbers, booleans, nulls) in
    /// one body: what the parsed tree costs.
    pub max_json_values: u64,
    /// Nesting of arrays and objects in one body.
    pub max_json_depth: u32,
    /// Records on one page.
    pub max_records_per_page: u64,
    /// Bytes of one record's staged row (its flattened cells as JSON).
    pub max_record_bytes: u64,
    /// Columns of one export (inferred from the records, or listed).
    pub max_columns: u64,
    /// Bytes of one column name.
    pub max_column_name_bytes: u64,
    /// Requests per second a source whose spec states no rate may reach
    /// while the fleet learns its limit (see `adaptive_rate`).
    pub max_unstated_rate: u64,
}

impl FleetLimits {
    /// The defaults (see the module doc for what they cost).
    pub const DEFAULT: FleetLimits = FleetLimits {
        max_body_bytes: 4 * 1024 * 1024,
        max_json_values: 50_000,
        max_json_depth: 64,
        max_records_per_page: 10_000,
        max_record_bytes: 1024 * 1024,
        max_columns: 2_000,
        max_column_name_bytes: 256,
        max_unstated_rate: 100,
    };
}

impl Default for FleetLimits {
    fn default() -> Self {
        FleetLimits::DEFAULT
    }
}

/// The environment variables that override a ceiling, with the field each
/// sets.
pub const ENV: &[(&str, &str)] = &[
    ("PAGEFLEET_MAX_BODY_BYTES", "max_body_bytes"),
    ("PAGEFLEET_MAX_JSON_VALUES", "max_json_values"),
    ("PAGEFLEET_MAX_JSON_DEPTH", "max_json_depth"),
    ("PAGEFLEET_MAX_RECORDS_PER_PAGE", "max_records_per_page"),
    ("PAGEFLEET_MAX_RECORD_BYTES", "max_record_bytes"),
    ("PAGEFLEET_MAX_COLUMNS", "max_columns"),
    ("PAGEFLEET_MAX_COLUMN_NAME_BYTES", "max_column_name_bytes"),
    ("PAGEFLEET_MAX_UNSTATED_RATE", "max_unstated_rate"),
];

/// A ceiling set to something unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("limits.{field} = {value:?} is not a whole number")]
    NotANumber { field: &'static str, value: String },
    #[error("limits.{field} must be at least 1")]
    Zero { field: &'static str },
    #[error("limits.{0} is not a ceiling; the ceilings are {list}", list = names())]
    Unknown(String),
}

fn names() -> String {
    ENV.iter().map(|(_, f)| *f).collect::<Vec<_>>().join(", ")
}

impl FleetLimits {
    /// Sets the ceiling `field` from its text (an environment variable's).
    pub fn set(&mut self, field: &str, value: &str) -> Result<(), LimitsError> {
        let (field, slot): (&'static str, &mut u64) = match field {
            "max_body_bytes" => ("max_body_bytes", &mut self.max_body_bytes),
            "max_json_values" => ("max_json_values", &mut self.max_json_values),
            "max_records_per_page" => ("max_records_per_page", &mut self.max_records_per_page),
            "max_record_bytes" => ("max_record_bytes", &mut self.max_record_bytes),
            "max_columns" => ("max_columns", &mut self.max_columns),
            "max_column_name_bytes" => ("max_column_name_bytes", &mut self.max_column_name_bytes),
            "max_unstated_rate" => ("max_unstated_rate", &mut self.max_unstated_rate),
            "max_json_depth" => {
                let depth = value.trim().parse().map_err(|_| LimitsError::NotANumber {
                    field: "max_json_depth",
                    value: value.to_string(),
                })?;
                self.max_json_depth = depth;
                return Ok(());
            }
            other => return Err(LimitsError::Unknown(other.to_string())),
        };
        *slot = value.trim().parse().map_err(|_| LimitsError::NotANumber {
            field,
            value: value.to_string(),
        })?;
        Ok(())
    }

    /// Every ceiling is at least 1: a zero would refuse every page.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let fields = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_json_values", self.max_json_values),
            ("max_json_depth", u64::from(self.max_json_depth)),
            ("max_records_per_page", self.max_records_per_page),
            ("max_record_bytes", self.max_record_bytes),
            ("max_columns", self.max_columns),
            ("max_column_name_bytes", self.max_column_name_bytes),
            ("max_unstated_rate", self.max_unstated_rate),
        ];
        match fields.iter().find(|(_, v)| *v == 0) {
            Some((field, _)) => Err(LimitsError::Zero { field }),
            None => Ok(()),
        }
    }

    /// The body cap a page is fetched under: the spec's, never more than
    /// the fleet's; and the setting that named it, for the reason.
    pub fn body_cap(&self, spec_max_body_bytes: u64) -> (u64, &'static str) {
        if spec_max_body_bytes < self.max_body_bytes {
            (spec_max_body_bytes, "source.max_body_bytes")
        } else {
            (self.max_body_bytes, "limits.max_body_bytes")
        }
    }

    /// Refuses a body whose parse would cost more than the fleet allows,
    /// from its bytes alone (see [`scan`]).
    pub fn check_body(&self, body: &[u8]) -> Result<(), Breach> {
        let shape = scan(body, self.max_json_depth);
        if shape.depth > self.max_json_depth {
            return Err(Breach::new(
                format!("nests JSON deeper than {}", shape.depth - 1),
                self.max_json_depth.into(),
                "levels",
                "max_json_depth",
            ));
        }
        if shape.values > self.max_json_values {
            return Err(Breach::new(
                format!("holds {} JSON values", shape.values),
                self.max_json_values,
                "values per page",
                "max_json_values",
            ));
        }
        Ok(())
    }

    pub fn check_records(&self, records: usize) -> Result<(), Breach> {
        let records = records as u64;
        if records > self.max_records_per_page {
            return Err(Breach::new(
                format!("holds {records} records"),
                self.max_records_per_page,
                "per page",
                "max_records_per_page",
            ));
        }
        Ok(())
    }

    /// `index` is the record's place on the page, `bytes` its staged row's.
    pub fn check_record(&self, index: usize, bytes: usize) -> Result<(), Breach> {
        let bytes = bytes as u64;
        if bytes > self.max_record_bytes {
            return Err(Breach::new(
                format!("has record {index} of {bytes} bytes"),
                self.max_record_bytes,
                "bytes per record",
                "max_record_bytes",
            ));
        }
        Ok(())
    }

    /// A column the page brings, by the length of its name.
    pub fn check_column_name(&self, name: &str) -> Result<(), Breach> {
        let bytes = name.len() as u64;
        if bytes > self.max_column_name_bytes {
            let shown: String = name.chars().take(40).collect();
            return Err(Breach::new(
                format!("has a column name of {bytes} bytes ({shown:?}…)"),
                self.max_column_name_bytes,
                "bytes per column name",
                "max_column_name_bytes",
            ));
        }
        Ok(())
    }

    /// The export's columns with this page's.
    pub fn check_columns(&self, columns: u64) -> Result<(), Breach> {
        Breach::columns(columns, self.max_columns)
    }
}

/// Why a body over its cap was refused: what it declared (or that it ran
/// past the cap), and whose cap it was (`setting`, from [`FleetLimits::body_cap`]).
pub fn body_over_cap(declared: Option<u64>, cap: u64, setting: &str) -> String {
    let measured = match declared {
        Some(bytes) => format!("has a body of {bytes} bytes"),
        None => format!("has a body that runs past {cap} bytes"),
    };
    let whose = if setting.starts_with("limits.") {
        "the fleet"
    } else {
        "the spec"
    };
    format!("{measured}; {whose} allows {cap} bytes per body ({setting})")
}

/// A page over a ceiling: what it measured, and which ceiling it broke.
/// Displayed after the page it is about: "page 3 of partition 0 holds
/// 400000 records; the fleet allows 10000 per page
/// (limits.max_records_per_page)".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{measured}; the fleet allows {limit} {unit} (limits.{field})")]
pub struct Breach {
    pub measured: String,
    pub limit: u64,
    pub unit: &'static str,
    pub field: &'static str,
}

impl Breach {
    /// `columns` against `max_columns`: for the landing, which knows the
    /// export's columns and only this one ceiling.
    pub fn columns(columns: u64, max_columns: u64) -> Result<(), Breach> {
        if columns > max_columns {
            return Err(Breach::new(
                format!("brings the export to {columns} columns"),
                max_columns,
                "columns per export",
                "max_columns",
            ));
        }
        Ok(())
    }

    fn new(measured: String, limit: u64, unit: &'static str, field: &'static str) -> Breach {
        Breach {
            measured,
            limit,
            unit,
            field,
        }
    }
}

/// What [`scan`] counted in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// JSON values, containers and scalars alike (an object's member
    /// counts once, its key with its value).
    pub values: u64,
    /// The deepest nesting reached, stopping one past `max_depth`.
    pub depth: u32,
}

/// Counts the JSON values and the nesting of a body from its bytes, in one
/// pass, allocating nothing: what `serde_json::from_slice` would build.
///
/// Every element of an array or member of an object either comes first in
/// its container or follows a comma, so the values are the root, the
/// commas, and the containers that are not empty; the bytes inside strings
/// (escapes included) are skipped. For valid JSON the count is exact; for
/// anything else it still bounds what a parser builds before it fails.
pub fn scan(body: &[u8], max_depth: u32) -> Shape {
    let mut values: u64 = 0;
    let mut depth: u32 = 0;
    let mut deepest: u32 = 0;
    // Just after `[` or `{`: the next token says whether it is empty.
    let mut opened = false;
    let mut any = false;
    let mut rest = body;
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        if byte.is_ascii_whitespace() {
            continue;
        }
        if opened && !matches!(byte, b']' | b'}') {
            values += 1;
        }
        opened = false;
        any = true;
        match byte {
            b'"' => rest = after_string(rest),
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if depth > max_depth {
                    // Deep enough to refuse; the rest is not needed.
                    break;
                }
                opened = true;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            _ => {}
        }
    }
    Shape {
        values: values + u64::from(any),
        depth: deepest,
    }
}

/// The bytes after the string whose opening quote is just before `rest`
/// (none when it never closes). Nothing inside a string counts, so it is
/// passed over a quote or backslash at a time, not a byte at a time; a
/// backslash takes the byte after it along.
fn after_string(mut rest: &[u8]) -> &[u8] {
    while let Some(at) = memchr::memchr2(b'"', b'\\', rest) {
        match rest.get(at..).unwrap_or_default().split_first() {
            Some((b'"', after_quote)) => return after_quote,
            // An escape: skip the backslash and the byte it escapes.
            Some((_, escaped)) => rest = escaped.get(1..).unwrap_or_default(),
            None => return &[],
        }
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> u64 {
        scan(text.as_bytes(), 1000).values
    }

    /// The number of values serde_json really builds.
    fn parsed(text: &str) -> u64 {
        fn count(v: &serde_json::Value) -> u64 {
            1 + match v {
                serde_json::Value::Array(a) => a.iter().map(count).sum(),
                serde_json::Value::Object(o) => o.values().map(count).sum(),
                _ => 0,
            }
        }
        count(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn the_scan_counts_what_the_parser_builds() {
        for text in [
            "1",
            "\"x\"",
            "[]",
            "{}",
            "[1]",
            "[1, 2, 3]",
            " { \"a\" : 1 , \"b\": [ ], \"c\": {\"d\": [null, true, \"e\"]} } ",
            r#"{"items": [{"id": 1}, {"id": 2}], "total": 2}"#,
            r#"["a,b", "[{", "\"],", "\\", "\\\"x,"]"#,
            r#"[[[[]]], [[], []], {"k": {}}]"#,
        ] {
            assert_eq!(values(text), parsed(text), "{text}");
        }
        assert_eq!(values(""), 0);
        assert_eq!(values("  \n"), 0);
    }

    #[test]
    fn the_scan_measures_depth_and_stops_past_the_limit() {
        assert_eq!(scan(b"1", 10).depth, 0);
        assert_eq!(scan(b"[[1], {\"a\": [2]}]", 10).depth, 3);
        assert_eq!(scan(b"\"[[[[\"", 10).depth, 0);
        let deep = "[".repeat(100_000);
        let shape = scan(deep.as_bytes(), 64);
        assert_eq!(shape.depth, 65);
    }

    #[test]
    fn tiny_records_are_counted_before_they_are_parsed() {
        let limits = FleetLimits {
            max_json_values: 1000,
            ..FleetLimits::default()
        };
        // 500 records of one field: 1 + 500 * 2 values.
        let body: String = format!(
            "[{}]",
            (0..500)
                .map(|i| format!("{{\"id\":{i}}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let breach = limits.check_body(body.as_bytes()).unwrap_err();
        assert_eq!(breach.field, "max_json_values");
        assert_eq!(
            breach.to_string(),
            "holds 1001 JSON values; the fleet allows 1000 values per page \
             (limits.max_json_values)"
        );
        let at = format!("[{}]", vec!["0"; 999].join(","));
        assert_eq!(limits.check_body(at.as_bytes()), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_by_name() {
        let limits = FleetLimits::default();
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        let breach = limits.check_body(deep.as_bytes()).unwrap_err();
        assert_eq!(breach.field, "max_json_depth");
        assert!(breach.to_string().contains("deeper than 64"), "{breach}");
        let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(limits.check_body(ok.as_bytes()), Ok(()));
    }

    #[test]
    fn records_rows_and_columns_name_their_ceiling() {
        let limits = FleetLimits::default();
        let breach = limits.check_records(400_000).unwrap_err();
        assert_eq!(
            breach.to_string(),
            "holds 400000 records; the fleet allows 10000 per page \
             (limits.max_records_per_page)"
        );
        assert_eq!(limits.check_records(10_000), Ok(()));
        assert!(limits.check_record(3, 2 << 20).is_err());
        assert_eq!(limits.check_record(3, 1 << 20), Ok(()));
        let long = "x".repeat(257);
        let breach = limits.check_column_name(&long).unwrap_err();
        assert!(breach.to_string().contains("257 bytes"), "{breach}");
        assert_eq!(limits.check_column_name(&long[..256]), Ok(()));
        assert!(limits.check_columns(2_001).is_err());
        assert_eq!(limits.check_columns(2_000), Ok(()));
    }

    #[test]
    fn the_body_cap_is_the_smaller_and_says_whose() {
        let limits = FleetLimits::default();
        assert_eq!(
            limits.body_cap(32 << 20),
            (4 << 20, "limits.max_body_bytes")
        );
        assert_eq!(limits.body_cap(1024), (1024, "source.max_body_bytes"));
        assert_eq!(
            limits.body_cap(u64::MAX),
            (4 << 20, "limits.max_body_bytes")
        );
    }

    #[test]
    fn a_body_over_its_cap_says_whose_cap() {
        assert_eq!(
            body_over_cap(Some(9_000_000), 8_388_608, "limits.max_body_bytes"),
            "has a body of 9000000 bytes; the fleet allows 8388608 bytes per body \
             (limits.max_body_bytes)"
        );
        assert_eq!(
            body_over_cap(None, 1024, "source.max_body_bytes"),
            "has a body that runs past 1024 bytes; the spec allows 1024 bytes per body \
             (source.max_body_bytes)"
        );
    }

    #[test]
    fn ceilings_are_set_by_name_and_checked() {
        let mut limits = FleetLimits::default();
        for (_, field) in ENV {
            limits.set(field, " 7 ").unwrap();
        }
        assert_eq!(limits.max_body_bytes, 7);
        assert_eq!(limits.max_json_depth, 7);
        assert_eq!(limits.max_column_name_bytes, 7);
        assert!(matches!(
            limits.set("max_columns", "lots"),
            Err(LimitsError::NotANumber { .. })
        ));
        assert!(matches!(
            limits.set("max_rows", "1"),
            Err(LimitsError::Unknown(_))
        ));
        assert_eq!(limits.validate(), Ok(()));
        limits.max_columns = 0;
        assert_eq!(
            limits.validate(),
            Err(LimitsError::Zero {
                field: "max_columns"
            })
        );
        assert_eq!(FleetLimits::default().validate(), Ok(()));
    }
}
